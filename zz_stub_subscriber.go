package keypool

// Delete at merge: the root helper of issue 15 declares StateSubscriber in
// the root package; this copy lets the Redis store build until then.

// A StateSubscriber is a StateStore that also hears of the states other
// pools over the same keys save (other replicas). New calls Subscribe once,
// after Load, with apply; the store calls apply from its own goroutines for
// each state it hears of, in any order, possibly more than once, and for every
// state again after it reconnects.
type StateSubscriber interface {
	StateStore
	Subscribe(apply func(KeyState))
}
