package keypool

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// This file is what a pool remembers beyond its process through a
// StateStore (WithStateStore): each key's KeyState, handed to the store
// whenever it changes, and the states New loads back at start.
//
// What OpenAI knows per organization (trial tier, model list, models it may
// not stream) is kept per scope but saved with the key whose answer or
// check changed it, not with every key of the organization: a check of one
// key of a thousand-key organization saves one state. Every state carries
// its scope's facts as they stood when it was made, so a restore applies
// states in the order they were made and the scope ends with its latest.

// stateLoadTimeout bounds StateStore.Load in New: a store that does not
// answer delays the start by this much, and the pool starts without it.
const stateLoadTimeout = 5 * time.Second

// Bounds on what a restore takes from a store, which may hold another
// program's data or an older format: a field past them is left out whole
// (a model list cut short would make its keys refuse models they serve).
const (
	maxSavedReason = 512
	maxSavedModels = 4096 // models, or models it may not stream, of one state
	maxSavedModel  = 256  // bytes of a model name, as parseModels takes them
	maxSavedClones = 256
	maxSavedOrg    = 128 // bytes of an organization ID, as validOrgs takes them
)

// changed queues k's KeyState for the store: the transitions call it for
// every change of what a KeyState holds, and unlock hands the queue over.
// Without a store it does nothing, and so for the stand-in of an upstream
// without keys, which has nothing to remember but a short rest. Requires
// p.mu.
func (p *Pool) changed(k *key, now time.Time) {
	if p.store == nil || k.standIn() {
		return
	}
	if k.saveAt > 0 {
		p.saves[k.saveAt-1].at = now
		return
	}
	p.saves = append(p.saves, pendingSave{k, now})
	k.saveAt = int32(len(p.saves))
}

// pendingSave is a key whose state changed at at, to be saved.
type pendingSave struct {
	k  *key
	at time.Time
}

// takeSaves returns the states of the keys changed since the last call, one
// each however often it changed. Requires p.mu.
func (p *Pool) takeSaves() []KeyState {
	out := make([]KeyState, len(p.saves))
	for i, e := range p.saves {
		out[i] = p.keyState(e.k, e.at)
		out[i].Updated = p.stamp(e.k, e.at)
		e.k.saveAt = 0
	}
	clear(p.saves)
	p.saves = p.saves[:0]
	return out
}

// keyState is what a store keeps of k, as of its last change at updated:
// none of its slices is the pool's. Requires p.mu.
func (p *Pool) keyState(k *key, updated time.Time) KeyState {
	s := k.s
	st := KeyState{
		ID: k.cred.id, Upstream: k.up.Name, State: k.state, Reason: k.reason, Since: k.since, Checked: k.checked,
		Trial: k.trial || s.trial, Organization: k.org, Scope: s.name, OrgsKnown: k.orgsKnown, Updated: updated,
	}
	st.ProbeRequests, st.ProbeTokens = max(k.probe.LimitRequests, 0), max(k.probe.LimitTokens, 0)
	if s.models != nil {
		st.Models = sortedKeys(s.models)
	}
	if len(s.noStream) > 0 {
		st.NoStream = sortedKeys(s.noStream)
	}
	if k.coolUntil.After(updated) {
		st.Cooldown = k.coolUntil
	}
	if orgs := p.cloneOrgs[k.cred.id]; len(orgs) > 0 {
		st.Clones = slices.Clone(orgs)
	}
	return st
}

// loadStates loads s's states, waiting at most stateLoadTimeout even for a
// store that does not heed its context, and restores them into p at the
// pool's clock. Failing that, p stays as built, and log (nil: none) says
// why once.
func (p *Pool) loadStates(s StateStore, log *slog.Logger) {
	logAt := func(level slog.Level, msg string, args ...any) {
		if log != nil {
			log.Log(context.Background(), level, msg, args...)
		}
	}
	states, err := fetchStates(s)
	switch {
	case errors.Is(err, errLoadTimeout):
		logAt(slog.LevelWarn, "keypool: loading key states timed out; starting without them", "timeout", stateLoadTimeout.String())
		return
	case err != nil:
		logAt(slog.LevelWarn, "keypool: loading key states failed; starting without them", "error", err.Error())
		return
	}
	now := p.cfg.now()
	p.mu.Lock()
	n := p.restore(states, now)
	p.mu.Unlock()
	logAt(slog.LevelInfo, "keypool: key states restored", "restored", n.restored, "ignored", n.ignored)
	if n.malformed > 0 {
		logAt(slog.LevelWarn, "keypool: saved key states that do not decode were left out", "states", n.malformed)
	}
}

// errLoadTimeout is fetchStates' error for a store that took too long.
var errLoadTimeout = errors.New("keypool: loading key states timed out")

// fetchStates loads s's states, waiting at most stateLoadTimeout even for a
// store that does not heed its context.
func fetchStates(s StateStore) ([]KeyState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stateLoadTimeout)
	defer cancel()
	type loaded struct {
		states []KeyState
		err    error
	}
	done := make(chan loaded, 1) // a Load that returns late ends without a reader
	go func() {
		states, err := s.Load(ctx)
		done <- loaded{states, err}
	}()
	select {
	case r := <-done:
		return r.states, r.err
	case <-ctx.Done():
		return nil, errLoadTimeout
	}
}

// restoreCount is what a restore did with the states it was given:
// restored (a part may have been left out as malformed), ignored (a key
// the pool does not hold, or holds in another upstream; an older state of
// a key), or malformed (a state, or a field of one, that no pool saves).
type restoreCount struct{ restored, ignored, malformed int }

// restore applies states to the keys they name, in the order they were
// made, the latest state of each key only. Organization clones come back
// first, so that their own states apply. It saves nothing and sends no
// StateEvent: the pool learns nothing new. Requires p.mu (or a pool not yet
// shared).
func (p *Pool) restore(states []KeyState, now time.Time) restoreCount {
	var n restoreCount
	latest := make(map[KeyID]int, len(states))
	for i := range states {
		st := &states[i]
		if !st.ID.valid() || !st.State.lifecycle() {
			n.malformed++
			continue
		}
		if j, dup := latest[st.ID]; dup {
			n.ignored++
			if st.Updated.Before(states[j].Updated) {
				continue
			}
		}
		latest[st.ID] = i
	}
	order := make([]int, 0, len(latest))
	for _, i := range latest {
		order = append(order, i)
	}
	slices.SortFunc(order, func(i, j int) int {
		return cmp.Or(states[i].Updated.Compare(states[j].Updated), cmp.Compare(i, j))
	})
	for _, i := range order {
		if k := p.restorable(&states[i]); k != nil && !p.restoreClones(k, states[i].Clones, now) {
			n.malformed++
		}
	}
	for _, i := range order {
		k := p.restorable(&states[i])
		if k == nil {
			n.ignored++
			continue
		}
		n.restored++
		if !p.applyState(k, &states[i], now) {
			n.malformed++
		}
		p.remember(k, notAfter(states[i].Updated, now.Add(maxStateSkew)))
	}
	return n
}

// restorable returns the key st is the state of, or nil when the pool does
// not hold it in st's upstream. Requires p.mu.
func (p *Pool) restorable(st *KeyState) *key {
	k := p.byID[st.ID]
	if k == nil || k.standIn() || k.up.Name != st.Upstream {
		return nil
	}
	return k
}

// lifecycle reports whether s is a state a KeyState holds: one this package
// defines, and not cooling, which is derived from cooldowns.
func (s State) lifecycle() bool { return s <= StateDisabled && s != StateCooling }

// restoreClones makes k's organization clones again, one per organization
// in orgs, as the checker's orgsFound made them, so that a restart does not
// discover them again. It reports false, and makes none, for a list no
// check makes. Requires p.mu.
func (p *Pool) restoreClones(k *key, orgs []string, now time.Time) bool {
	if len(orgs) == 0 {
		return true
	}
	if k.clone || k.cred.org != "" || k.cred.ServiceAccount() || len(orgs) > maxSavedClones {
		return false // the checker lists the organizations of none of these
	}
	for i, o := range orgs {
		if !validOrgID(o) || slices.Contains(orgs[:i], o) {
			return false
		}
	}
	p.setCloneOrgs(k, slices.Clone(orgs))
	for _, o := range orgs {
		cred := k.cred.WithOrganization(o)
		if _, exists := p.byID[cred.id]; exists {
			continue
		}
		cl := p.addKeyLocked(k.up, cred, now)
		cl.clone, cl.orgsKnown = true, true
	}
	return true
}

// setCloneOrgs records the organizations k was cloned into. Requires p.mu.
func (p *Pool) setCloneOrgs(k *key, orgs []string) {
	switch {
	case len(orgs) == 0:
		delete(p.cloneOrgs, k.cred.id)
	case p.cloneOrgs == nil:
		p.cloneOrgs = map[KeyID][]string{k.cred.id: orgs}
	default:
		p.cloneOrgs[k.cred.id] = orgs
	}
}

// applyState sets k to what st says, as of now: its state, reason, check,
// organization and scope, tier, models, and a rest that has not ended. A
// field that does not hold what a pool saves is left out, and applyState
// reports false. Requires p.mu.
func (p *Pool) applyState(k *key, st *KeyState, now time.Time) bool {
	ok := true
	p.tally(k, -1)
	k.state, k.reason = st.State, clip(st.Reason, maxSavedReason)
	if !st.Since.IsZero() {
		k.since = notAfter(st.Since, now)
	}
	if !st.Checked.IsZero() {
		k.checked, k.probe, k.restored = notAfter(st.Checked, now), noLimits, true
		if st.ProbeRequests > 0 {
			k.probe.LimitRequests = st.ProbeRequests
		}
		if st.ProbeTokens > 0 {
			k.probe.LimitTokens = st.ProbeTokens
		}
	}
	p.tally(k, 1)
	k.orgsKnown = st.OrgsKnown
	switch {
	case st.Organization == "":
	case !validOrgID(st.Organization):
		ok = false
	case k.cred.org == "" && !k.cred.ServiceAccount():
		k.org = st.Organization // a configured organization stays as configured
	}
	switch {
	case st.Scope == "" || st.Scope == k.s.name:
	case !validScope(st.Scope):
		ok = false
	default:
		p.move(k, st.Scope, now)
	}
	s := k.s
	k.trial, s.trial = st.Trial, st.Trial
	if len(st.Models) > 0 {
		if models, valid := savedModels(st.Models); valid {
			p.listModels(s, p.internModels(models))
		} else {
			ok = false
		}
	}
	// The scope's latest state says which models it may not stream, none
	// included: a check clears them.
	s.noStream = nil
	if len(st.NoStream) > 0 {
		if models, valid := savedModels(st.NoStream); valid {
			s.noStream = make(map[string]bool, len(models))
			for _, m := range models {
				s.noStream[m] = true
				p.noStream[m] = true
			}
		} else {
			ok = false
		}
	}
	if st.Cooldown.After(now) {
		k.coolUntil = notAfter(st.Cooldown, now.Add(p.cfg.maxRest))
	}
	p.placeKey(k, now)
	p.placeScope(s, now)
	return ok
}

// notAfter returns t, or limit if t is later: a time from a store cannot lie
// in the future of the pool's clock.
func notAfter(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}

// validOrgID reports whether id is an organization ID as the checker takes
// them (validOrgs).
func validOrgID(id string) bool {
	return strings.HasPrefix(id, "org-") && len(id) <= maxSavedOrg && utf8.ValidString(id)
}

// validScope reports whether name is a scope's name as a pool makes them:
// clipped to maxScopeName (and an ellipsis), valid UTF-8.
func validScope(name string) bool {
	return len(name) <= maxScopeName+len("…") && utf8.ValidString(name)
}

// savedModels returns a saved list of model names sorted and without
// duplicates, as internModels takes them; ok is false for a list no check
// makes.
func savedModels(names []string) (models []string, ok bool) {
	if len(names) > maxSavedModels {
		return nil, false
	}
	for _, m := range names {
		if m == "" || len(m) > maxSavedModel || !utf8.ValidString(m) {
			return nil, false
		}
	}
	models = slices.Clone(names)
	slices.Sort(models)
	return slices.Compact(models), true
}
