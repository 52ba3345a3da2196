package keypool

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// This file changes a running pool's upstreams and keys (Transport.Update):
// an operator adds a key or drops a revoked one without a restart, and
// without the pool forgetting what it learned of the keys that stay.

// KeyChanges is what Transport.Update did, by key ID, each list in the
// pool's order: keys added, keys removed (their requests in flight finish),
// and keys kept with what the pool knew of them. Organization clones the
// checker found count with their parent: kept with it, removed with it. The
// stand-in of an upstream without keys counts like a key.
type KeyChanges struct {
	Added   []KeyID `json:"added"`
	Removed []KeyID `json:"removed"`
	Kept    []KeyID `json:"kept"`
}

// Changed reports whether a key was added or removed.
func (c KeyChanges) Changed() bool { return len(c.Added) > 0 || len(c.Removed) > 0 }

// errKeyRemoved stops the check of a key Update removed after it was queued.
var errKeyRemoved = errors.New("keypool: key removed")

// Update replaces the transport's upstreams and their keys with ups, taken
// as WithUpstreams takes them, while requests flow, and reports what it did.
// It is what a config reload calls.
//
// An upstream is known by its Name (as New makes it: the base URL's host
// when empty, with #2, #3 … for repeats), and a key by its ID. A key that
// stays in an upstream whose settings (base URL, Allow, Deny, timeouts,
// Auth) stay keeps everything the pool learned: its state, scope, models,
// rate-limit budgets, rests, health and usage. When an upstream's settings
// change, its record is rebuilt; its keys, and a key that moves to another
// upstream, keep what a StateStore keeps of them (state and reason, last
// check, organization, scope, trial tier, model lists, clones, rests) while
// their budgets, health and usage start over.
//
// A key added is unchecked, unless a StateStore (WithStateStore) knows it:
// Update then loads the store's states (waiting at most 5s, as New does)
// and the key starts from its own. A running Checker checks each added key
// when due: one never checked at once. A key removed takes no new request
// from the moment Update returns; the requests it serves finish, but their
// answers no longer teach the pool, and the Checker never checks it again.
//
// An upstream may be left with no key: its requests are then refused
// (*NoKeyError, a 503 at a proxy) until an Update gives it keys again. At
// least one upstream is needed.
//
// Update is atomic: ups is checked as New checks it, and a bad set returns
// an error and changes nothing. Every other setting of New (policy,
// attempts, waits, order, store, observers) stays as it was. Update is safe
// to call while the transport serves; calls made at once apply one after
// the other, and the last one stands.
func (t *Transport) Update(ups ...Upstream) (KeyChanges, error) {
	p := t.pool
	var saved []KeyState
	if p.store != nil && p.addsKeys(ups) {
		// What the store knows of keys this pool does not hold: another
		// replica, or this process before the key was removed, may have
		// learned it is revoked.
		var err error
		if saved, err = fetchStates(p.store); err != nil && t.log != nil {
			t.log.Warn("keypool: loading the states of added keys failed; they start unchecked", "error", err.Error())
		}
	}
	return p.update(ups, t.now(), saved)
}

// addsKeys reports whether ups holds a key the pool does not.
func (p *Pool) addsKeys(ups []Upstream) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range ups {
		for _, c := range u.Keys {
			if p.byID[c.ID()] == nil {
				return true
			}
		}
	}
	return false
}

// update is Update at now; saved are the states of a StateStore (nil:
// none), applied to the keys it adds as New applies them.
func (p *Pool) update(ups []Upstream, now time.Time, saved []KeyState) (KeyChanges, error) {
	plans, err := planUpstreams(ups)
	if err != nil {
		return KeyChanges{}, err
	}
	p.mu.Lock()
	defer p.unlock()
	old := make(map[string]*upstream, len(p.ups))
	for _, u := range p.ups {
		old[u.Name] = u
	}
	if err := p.checkClones(plans); err != nil {
		return KeyChanges{}, err
	}
	before := make([]KeyID, len(p.keys))
	for i, k := range p.keys {
		before[i] = k.cred.id
	}
	bornBefore := p.born

	// Records whose settings stay are kept; the others are rebuilt. A key
	// whose record changes (its upstream is rebuilt, or it moves to
	// another) takes along what a store would keep of it.
	next := make([]*upstream, len(plans))
	for i := range plans {
		if u := old[plans[i].Name]; u != nil && sameSettings(u, &plans[i]) {
			next[i] = u
		}
	}
	carried := p.carry(plans, next, now)
	p.dropLeaving(plans, next, now)
	p.makeUpstreams(plans, next, now)
	keep := p.placeKeys(plans, next, now)
	had := make(map[KeyID]bool, len(before))
	for _, id := range before {
		had[id] = true
	}
	for _, st := range saved {
		if k := p.byID[st.ID]; k != nil && k.born > bornBefore && !had[st.ID] {
			carried = append(carried, st) // a key added: what the store knew of it
		}
	}
	p.restore(carried, now) // clones first, then states
	for _, u := range next {
		for _, k := range u.keys {
			if keep[k] && !k.clone {
				p.keepClones(k, keep)
			}
		}
	}
	for _, u := range next {
		for _, k := range slices.Clone(u.keys) {
			if !keep[k] {
				p.dropKey(k, now)
			}
		}
	}
	p.ups = next
	p.keys = p.keys[:0]
	for _, u := range next {
		u.keys = slices.DeleteFunc(u.keys, func(k *key) bool { return k.gone })
		for i, k := range u.keys {
			k.index = i
			p.keys = append(p.keys, k)
		}
		p.wakeUpstream(u) // new keys may take what waits
	}
	p.addFresh(bornBefore)
	return p.changes(before), nil
}

// dropLeaving drops the keys of the records that are not in next (removed
// or rebuilt upstreams), and the records of keys that move to another
// (with their clones). Requires p.mu.
func (p *Pool) dropLeaving(plans []upstreamPlan, next []*upstream, now time.Time) {
	for _, u := range p.ups {
		if !slices.Contains(next, u) {
			for _, k := range slices.Clone(u.keys) {
				p.dropKey(k, now)
			}
			p.wakeUpstream(u) // its waiters look again, at the new upstreams
		}
	}
	for i := range plans {
		for _, c := range plans[i].keys {
			if k := p.byID[c.id]; k != nil && k.up != next[i] {
				p.dropClones(k, now)
				p.dropKey(k, now) // it moves: placeKeys makes a new record
			}
		}
	}
}

// placeKeys adds the keys of plans the pool does not hold to their records
// (next), and returns the keys that stay: those of plans, and the
// stand-ins of upstreams without keys. Requires p.mu.
func (p *Pool) placeKeys(plans []upstreamPlan, next []*upstream, now time.Time) map[*key]bool {
	keep := map[*key]bool{}
	for i := range plans {
		u := next[i]
		for _, k := range u.keys {
			if k.standIn() {
				keep[k] = true
			}
		}
		for _, c := range plans[i].keys {
			k := p.byID[c.id]
			if k == nil {
				k = p.addKeyLocked(u, c, now)
			}
			k.clone = false // a clone now listed in the config is the config's
			keep[k] = true
		}
	}
	return keep
}

// sameSettings reports whether u is what pl describes, its keys aside.
func sameSettings(u *upstream, pl *upstreamPlan) bool {
	a, b := &u.Upstream, &pl.Upstream
	return a.BaseURL == b.BaseURL && a.Auth == b.Auth && a.Timeout == b.Timeout && a.StreamTimeout == b.StreamTimeout &&
		a.IdleTimeout == b.IdleTimeout && slices.Equal(a.Allow, b.Allow) && slices.Equal(a.Deny, b.Deny) &&
		a.Type == b.Type && a.APIVersion == b.APIVersion && maps.Equal(a.Deployments, b.Deployments)
}

// carry returns what a store would keep of the keys of plans that the
// pool holds in another record than the one they go to (next[i]; nil for a
// record yet to be made), and of their clones, each under the upstream it
// goes to. Requires p.mu.
func (p *Pool) carry(plans []upstreamPlan, next []*upstream, now time.Time) []KeyState {
	var states []KeyState
	for i := range plans {
		add := func(k *key) {
			st := p.keyState(k, now)
			st.Upstream = plans[i].Name
			states = append(states, st)
		}
		for _, c := range plans[i].keys {
			k := p.byID[c.id]
			if k == nil || k.standIn() || next[i] != nil && k.up == next[i] {
				continue
			}
			add(k)
			for _, org := range p.cloneOrgs[k.cred.id] {
				if cl := p.byID[k.cred.WithOrganization(org).id]; cl != nil && cl.up == k.up && cl.clone {
					add(cl)
				}
			}
		}
	}
	return states
}

// dropClones drops the organization clones of k. Requires p.mu.
func (p *Pool) dropClones(k *key, now time.Time) {
	for _, org := range p.cloneOrgs[k.cred.id] {
		if cl := p.byID[k.cred.WithOrganization(org).id]; cl != nil && cl.up == k.up && cl.clone {
			p.dropKey(cl, now)
		}
	}
}

// makeUpstreams fills the gaps of next with new records of their plans,
// giving each the lowest index (a request's avoided-upstream bit) no kept
// record has. Requires p.mu.
func (p *Pool) makeUpstreams(plans []upstreamPlan, next []*upstream, now time.Time) {
	var used uint64
	for _, u := range next {
		if u != nil && u.index < 64 {
			used |= 1 << u.index
		}
	}
	index := 0
	for i := range plans {
		if next[i] != nil {
			continue
		}
		for index < 64 && used&(1<<index) != 0 {
			index++
		}
		next[i] = p.newUpstream(&plans[i], index, now)
		index++
	}
}

// keepClones marks the organization clones of k as kept. Requires p.mu.
func (p *Pool) keepClones(k *key, keep map[*key]bool) {
	for _, org := range p.cloneOrgs[k.cred.id] {
		if cl := p.byID[k.cred.WithOrganization(org).id]; cl != nil && cl.up == k.up && cl.clone {
			keep[cl] = true
		}
	}
}

// checkClones refuses a config key whose ID an organization clone of a key
// that stays holds in another upstream: the pool would hold one ID twice.
// Requires p.mu.
func (p *Pool) checkClones(plans []upstreamPlan) error {
	in := map[KeyID]string{}
	for i := range plans {
		for _, c := range plans[i].keys {
			in[c.id] = plans[i].Name
		}
	}
	for i := range plans {
		for _, c := range plans[i].keys {
			for _, org := range p.cloneOrgs[c.id] {
				id := c.WithOrganization(org).id
				if up, listed := in[id]; listed && up != plans[i].Name {
					return fmt.Errorf("keypool: key %s is listed in upstream %s and is an organization clone of a key of upstream %s", id, up, plans[i].Name)
				}
			}
		}
	}
	return nil
}

// dropKey takes k out of the pool: out of selection, its scope, the counts
// and the schedule of checks. The leases of its requests in flight still
// release their budgets. Requires p.mu.
func (p *Pool) dropKey(k *key, now time.Time) {
	if k.gone {
		return
	}
	p.tally(k, -1)
	k.gone = true
	switch k.where {
	case heapReady:
		k.s.ready.remove(k)
	case heapCooling:
		k.up.cooling.remove(k)
	}
	k.where = heapNone
	s := k.s
	last := s.keys[len(s.keys)-1]
	s.keys[k.sidx] = last
	last.sidx = k.sidx
	s.keys = s.keys[:len(s.keys)-1]
	if len(s.keys) == 0 {
		p.dropScope(s, nil)
	} else {
		p.placeScope(s, now)
	}
	if p.byID[k.cred.id] == k {
		delete(p.byID, k.cred.id)
		delete(p.cloneOrgs, k.cred.id)
	}
	delete(p.updated, k)
}

// addFresh hands the keys added since bornBefore to a running Checker.
// Requires p.mu.
func (p *Pool) addFresh(bornBefore uint32) {
	p.fresh = slices.DeleteFunc(p.fresh, func(k *key) bool { return k.gone })
	n := len(p.fresh)
	for _, k := range p.keys {
		if k.born > bornBefore && !k.standIn() {
			p.fresh = append(p.fresh, k)
		}
	}
	if len(p.fresh) > n {
		select {
		case p.added <- struct{}{}:
		default: // the Checker has yet to take the last signal, which covers these keys too
		}
	}
}

// takeFresh returns the keys Update added since the last call that are
// still in the pool.
func (p *Pool) takeFresh() []*key {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.DeleteFunc(p.fresh, func(k *key) bool { return k.gone })
	p.fresh = nil
	return out
}

// removed reports whether Update took k out of the pool.
func (p *Pool) removed(k *key) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return k.gone
}

// changes compares the pool's keys with those it held before (their IDs, in
// order). Requires p.mu.
func (p *Pool) changes(before []KeyID) KeyChanges {
	ch := KeyChanges{Added: []KeyID{}, Removed: []KeyID{}, Kept: []KeyID{}} // [] in JSON, not null
	had := make(map[KeyID]bool, len(before))
	for _, id := range before {
		had[id] = true
	}
	for _, k := range p.keys {
		if had[k.cred.id] {
			ch.Kept = append(ch.Kept, k.cred.id)
			delete(had, k.cred.id)
		} else {
			ch.Added = append(ch.Added, k.cred.id)
		}
	}
	for _, id := range before {
		if had[id] {
			ch.Removed = append(ch.Removed, id)
		}
	}
	return ch
}
