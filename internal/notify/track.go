package notify

import (
	"time"

	"github.com/keypool/keypool"
)

// upstream is what the Notifier knows of one upstream: its keys' states, and
// its recent failed attempts.
type upstream struct {
	keys map[keypool.KeyID]keypool.State
	// down is whether every key is unusable; downTold whether a human knows
	// (an upstream_down was queued, or held back as a duplicate of one that
	// was), so that a recovery is worth telling.
	down, downTold bool
	fails          failures
}

// allUnusable reports whether the upstream has keys and none is usable
// (keypool.State.Usable: a cooling key waits only for a rate limit to pass).
func (u *upstream) allUnusable() bool {
	for _, s := range u.keys {
		if s.Usable() {
			return false
		}
	}
	return len(u.keys) > 0
}

// counts counts the upstream's keys by state.
func (u *upstream) counts() keypool.Counts {
	var c keypool.Counts
	for _, s := range u.keys {
		c.Add(s)
	}
	return c
}

// summary counts the keys by state, such as "2 revoked, 1 over_quota", in
// the states' order.
func (u *upstream) summary() string { return u.counts().String() }

// failures holds the times of an upstream's last failed attempts: a ring of
// threshold entries, so memory stays O(threshold) however many fail.
type failures struct {
	at   []time.Time // nil until the first failure
	next int         // where the next failure goes; once full, the oldest
	n    int         // entries used
}

// add records a failure at t and reports whether the last threshold
// failures all fall within window of t.
func (f *failures) add(t time.Time, threshold int, window time.Duration) bool {
	if f.at == nil {
		f.at = make([]time.Time, threshold)
	}
	f.at[f.next] = t
	f.next = (f.next + 1) % len(f.at)
	if f.n < len(f.at) {
		f.n++
	}
	if f.n < len(f.at) {
		return false
	}
	oldest := f.at[f.next]
	return t.Sub(oldest) <= window
}
