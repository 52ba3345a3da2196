package keypool

import "time"

// This file is what a pool hears of other replicas over the same keys
// through a StateSubscriber: the states they save, applied as a restore
// applies them, the later state of a key winning, and never saved again
// (which would echo them back and forth between replicas).
//
// Of two states of one key the one with the later Updated wins. The pool
// remembers, per key, the Updated of the state it last saved or applied, and
// stamps its own next state of that key later still: a change made after
// hearing of a state wins over it on every replica, even when the other
// replica's clock runs a little ahead.

// maxStateSkew bounds how far past the pool's clock a state heard from a
// replica may have been made: a state from further ahead (a clock gone
// wrong, or garbage) would win over every later state of its key, and is
// ignored.
const maxStateSkew = time.Minute

// hear applies a state another replica saved, at the pool's clock. It is
// the func New hands to StateSubscriber.Subscribe: safe from any goroutine.
func (p *Pool) hear(st KeyState) { p.heard(st, p.cfg.now()) }

// heard applies st, a state another replica saved, at now, when it is later
// than the latest state p saved or applied of its key. It validates and
// applies st as a restore does (a state p does not hold the key of, or
// holds in another upstream, is ignored, and so is a field that does not
// decode), but keeps a later check p knows of, and sends a StateEvent for a
// change of the key's state or the start of a rest. It queues nothing to
// save. It reports whether it applied st.
func (p *Pool) heard(st KeyState, now time.Time) bool {
	p.mu.Lock()
	defer p.unlock()
	if !st.ID.valid() || !st.State.lifecycle() || st.Updated.After(now.Add(maxStateSkew)) {
		return false
	}
	k := p.restorable(&st)
	if k == nil {
		return false
	}
	if last, ok := p.updated[k]; ok && !st.Updated.After(last) {
		return false
	}
	if !st.Checked.After(k.checked) {
		st.Checked = time.Time{} // applyState leaves k's own check
	}
	from, _ := p.derivedState(k, now)
	state, reason := k.state, k.reason
	if n := len(p.keys); p.restoreClones(k, st.Clones, now) && len(p.keys) > n && p.grown != nil {
		select {
		case p.grown <- struct{}{}:
		default: // the Checker has yet to take the last signal, which covers these keys too
		}
	}
	p.applyState(k, &st, now)
	if !st.Checked.IsZero() {
		k.heardCheck = true
	}
	p.remember(k, st.Updated)
	to, until := p.derivedState(k, now)
	switch {
	case k.state != state || k.reason != reason:
		p.events = append(p.events, StateEvent{Key: k.cred.id, Upstream: k.up.Name, From: from, To: k.state, Reason: k.reason, At: now, Heard: true})
	case to == StateCooling && from != StateCooling:
		p.events = append(p.events, StateEvent{Key: k.cred.id, Upstream: k.up.Name, From: from, To: StateCooling,
			Reason: "resting on another replica", Until: until, At: now, Heard: true})
	}
	p.wakeUpstream(k.up) // a key it made usable takes the requests that wait
	return true
}

// remember records that the latest state p saved or applied of k was made
// at updated. Requires p.mu.
func (p *Pool) remember(k *key, updated time.Time) {
	if p.updated == nil {
		p.updated = make(map[*key]time.Time, len(p.keys))
	}
	p.updated[k] = updated
}

// stamp returns the Updated of a state of k made at now, and remembers it:
// now, or just after the latest state p saved or applied of k when now is
// not later than that. Requires p.mu.
func (p *Pool) stamp(k *key, now time.Time) time.Time {
	now = now.Round(0) // the wall clock, which other replicas compare
	if last, ok := p.updated[k]; ok && !now.After(last) {
		now = last.Add(time.Nanosecond)
	}
	p.remember(k, now)
	return now
}
