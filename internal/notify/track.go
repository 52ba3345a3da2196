package notify

import (
	"strconv"
	"strings"
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

// usable reports whether a key in state s may take requests now or soon: a
// cooling key waits only for a rate limit to pass. A state this package does
// not know counts as usable, so that it raises no false alarm.
func usable(s keypool.State) bool {
	switch s {
	case keypool.StateRevoked, keypool.StateOverQuota, keypool.StateDisabled:
		return false
	}
	return true
}

// allUnusable reports whether the upstream has keys and none is usable.
func (u *upstream) allUnusable() bool {
	for _, s := range u.keys {
		if usable(s) {
			return false
		}
	}
	return len(u.keys) > 0
}

// summary counts the keys by state, such as "2 revoked, 1 over_quota", in
// the states' order.
func (u *upstream) summary() string {
	var counts [keypool.StateDisabled + 1]int
	for _, s := range u.keys {
		if int(s) < len(counts) {
			counts[s]++
		}
	}
	var parts []string
	for s, n := range counts {
		if n > 0 {
			parts = append(parts, strconv.Itoa(n)+" "+keypool.State(s).String())
		}
	}
	return strings.Join(parts, ", ")
}

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
