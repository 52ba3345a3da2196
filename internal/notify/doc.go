// Package notify tells humans about keypool events that need one: a key
// revoked or over quota, an upstream with no usable key left (and its
// recovery), an upstream whose attempts keep failing.
//
// A [Notifier] is a keypool.Observer. Give it to the transport with
// keypool.WithObserver, seed it with the pool's keys, and run [Notifier.Run]
// in a goroutine of its own; it posts each event to Matrix, Feishu and/or a
// generic JSON webhook. Events are deduplicated by (kind, upstream, key) and
// rate-limited over all messages, and the observer methods never block: a
// slow or failing notifier costs requests nothing, its messages are dropped
// and counted instead.
//
// Messages name keys by their ID (kp_…). The notifiers' tokens, secrets and
// URLs are secrets too (secret.String values): they never appear in errors,
// logs, [Stats] or the %v output of any type of this package.
package notify
