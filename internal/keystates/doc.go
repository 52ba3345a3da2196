// Package keystates holds what the key-state stores (the records database's
// and Redis's) share: the queue of states waiting to be written, and the
// decoding and checks of a state read back. Each store keeps its own
// transport, retries, logs and error texts.
package keystates
