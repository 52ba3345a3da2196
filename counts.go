package keypool

import (
	"strconv"
	"strings"
)

// stateCount is the number of States.
const stateCount = int(StateDisabled) + 1

// Counts is how many keys stand in each state, and how many of them may
// take requests. Pool.Counts returns a pool's; a caller that follows keys
// from StateEvents counts them with Add. The zero Counts counts no key.
type Counts struct {
	// Usable is how many keys may take requests, now or once a cooldown
	// ends (State.Usable). Pool.Counts leaves out, under
	// WithCheckedKeysOnly(true), the keys waiting for their first check.
	Usable  int
	byState [stateCount]int
}

// Add counts one key in state s. A state this package does not define is
// left out.
func (c *Counts) Add(s State) {
	if int(s) >= stateCount {
		return
	}
	c.byState[s]++
	if s.Usable() {
		c.Usable++
	}
}

// In returns how many keys stand in state s.
func (c Counts) In(s State) int {
	if int(s) >= stateCount {
		return 0
	}
	return c.byState[s]
}

// String lists the states that have keys, in the order of State, as in
// "2 revoked, 1 disabled"; "" when no key was counted.
func (c Counts) String() string {
	var b strings.Builder
	for s, n := range c.byState {
		if n == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(n) + " " + State(s).String())
	}
	return b.String()
}

// Counts returns how many of the pool's keys stand in each state, and how
// many it may select: the stand-ins of upstreams without keys count as
// ready, and under WithCheckedKeysOnly(true) a key waiting for its first
// check is unchecked and not usable. A key resting for a rate limit or after
// failures counts in the state it returns to (ready or unchecked): its rest
// is for one model or for a while, and ends by itself; Snapshot shows it as
// cooling. The pool keeps the counts as states change, so a call costs the
// same however many keys there are: a readiness probe may call it freely.
func (p *Pool) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// tally adds k to the counts (n = 1) or takes it out (n = -1), as it stands
// now; a change of its state or first check takes it out before and adds
// it after. A removed key counts no more. Requires p.mu.
func (p *Pool) tally(k *key, n int) {
	if k.gone {
		return // taken out when it was removed
	}
	p.counts.byState[k.state] += n
	if p.selectable(k) {
		p.counts.Usable += n
	}
}
