package keystates

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/keypool/keypool"
)

// A Queue holds the key states a store has still to write: the latest per
// key (by Updated), at most max keys, those being written included. Put
// never blocks; the store's writer waits on Wake, Takes everything, and for
// each batch calls Done once it is stored or PutBack when it is not. Close
// ends it: Put drops from then on. Dropped states are counted, never
// logged: the store logs them. Make one with NewQueue. It is safe for
// simultaneous use by multiple goroutines.
type Queue struct {
	max  int
	wake chan struct{} // a change waits; buffered, one

	mu      sync.Mutex
	pending map[keypool.KeyID]keypool.KeyState // the latest change per key, not yet written
	writing int                                // states taken by the writer, not yet written or put back
	closed  bool                               // Put drops

	written, dropped atomic.Uint64
}

// NewQueue returns an empty Queue of at most max keys (max must be > 0).
func NewQueue(max int) *Queue {
	return &Queue{max: max, wake: make(chan struct{}, 1), pending: map[keypool.KeyID]keypool.KeyState{}}
}

// Wake receives once a state is put, for the writer to Take it: one
// wake-up stands for any number of Puts.
func (q *Queue) Wake() <-chan struct{} { return q.wake }

// Put queues st, replacing a waiting state of its key unless that one is
// newer (a later Updated). Beyond max keys, or once the Queue is closed, st
// is dropped and counted, and Put reports false.
func (q *Queue) Put(st keypool.KeyState) bool {
	q.mu.Lock()
	ok := q.put(st)
	q.mu.Unlock()
	if !ok {
		q.dropped.Add(1)
		return false
	}
	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is waiting already
	}
	return true
}

// put keeps st as its key's waiting state, unless a newer one waits, and
// reports whether st was kept or superseded (false: dropped). It requires
// that q.mu is held.
func (q *Queue) put(st keypool.KeyState) bool {
	if q.closed {
		return false
	}
	if old, ok := q.pending[st.ID]; ok {
		if !st.Updated.Before(old.Updated) {
			q.pending[st.ID] = st
		}
		return true
	}
	if len(q.pending)+q.writing >= q.max {
		return false
	}
	q.pending[st.ID] = st
	return true
}

// Take takes every waiting state out, in ID order, and counts them as being
// written until Done or PutBack.
func (q *Queue) Take() []keypool.KeyState {
	q.mu.Lock()
	taken := q.pending
	if len(taken) == 0 {
		// taken is still q.pending, which Put may write to as soon as the
		// lock is let go: reading it unlocked would race Put.
		q.mu.Unlock()
		return nil
	}
	q.pending = make(map[keypool.KeyID]keypool.KeyState, len(taken))
	q.writing += len(taken)
	q.mu.Unlock()
	out := make([]keypool.KeyState, 0, len(taken))
	for _, st := range taken {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b keypool.KeyState) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// Done counts n taken states as written.
func (q *Queue) Done(n int) {
	q.written.Add(uint64(n))
	q.mu.Lock()
	q.writing -= n
	q.mu.Unlock()
}

// PutBack makes taken states, which a write did not store, wait again,
// unless a newer change of their key came meanwhile. They were counted
// against max already, so they always fit.
func (q *Queue) PutBack(states []keypool.KeyState) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.writing -= len(states)
	for _, st := range states {
		if cur, ok := q.pending[st.ID]; ok && !cur.Updated.Before(st.Updated) {
			continue
		}
		q.pending[st.ID] = st
	}
}

// CloseIfIdle closes the Queue when nothing waits, or when giveUp: what
// waits is then dropped, and counted. It reports how many states it
// dropped and whether it closed. Idle and close are one step, so that a
// Put in between is not lost uncounted.
func (q *Queue) CloseIfIdle(giveUp bool) (dropped int, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) > 0 && !giveUp {
		return 0, false
	}
	dropped = len(q.pending)
	clear(q.pending)
	q.closed = true
	q.dropped.Add(uint64(dropped))
	return dropped, true
}

// Drop counts a state the store dropped before it reached the Queue.
func (q *Queue) Drop() { q.dropped.Add(1) }

// Pending is how many states wait, those being written included.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending) + q.writing
}

// Written is how many states Done counted.
func (q *Queue) Written() uint64 { return q.written.Load() }

// Dropped is how many states were dropped: by Put, Drop and CloseIfIdle.
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }
