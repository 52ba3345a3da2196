package keypool

import (
	"fmt"
	"strings"
	"time"
)

// This file is the seam through which every change to key and budget state
// goes: an answer (answered, finished), a check (checked, orgsFound), and an
// operator's action (Disable, Enable). Each takes the pool's lock itself,
// applies the change, and once the lock is released sends the state events
// and hands the changed keys' states to the StateStore (see remember.go),
// the seam where a store shared by several processes plugs in.

// answered applies one attempt's answer to its key and budget and, unless
// the answer goes back to the caller to be read, ends the attempt's hold.
// model is the request's bucket name (its model, or a path's route).
func (p *Pool) answered(l lease, a *Answer, out Outcome, model string, now time.Time) {
	p.mu.Lock()
	if !l.k.gone { // a removed key's answer only ends its hold
		p.observe(l, a, out, model, now)
	}
	if out != OutcomeSuccess {
		p.release(l, now)
	}
	p.unlock()
}

// finished ends an answer handed to the caller once its body is read or
// closed: its usage is counted, and failed, when not nil, is why it was cut
// off (the key counts a failure).
func (p *Pool) finished(l lease, usage Usage, failed error, model string, now time.Time) {
	p.mu.Lock()
	p.addUsage(l.k, model, usage)
	if failed != nil && !l.k.gone {
		a := Answer{Err: failed, Limits: noLimits}
		p.observe(l, &a, OutcomeServerError, model, now)
	}
	p.release(l, now)
	p.unlock()
}

// observe applies one attempt's outcome to its key, its scope and the
// budget it spent. Requires p.mu.
func (p *Pool) observe(l lease, a *Answer, out Outcome, model string, now time.Time) {
	k := l.k
	switch k.up.Auth {
	case AuthCaller:
		return // the answer is about the caller's key, not the pool's
	case AuthNone:
		// Always present: a refusal of the missing key rests the upstream
		// like a failure, as a key cannot be revoked that was never sent.
		if out == OutcomeRevoked || out == OutcomeOverQuota {
			out = OutcomeServerError
		}
	}
	answered := !a.Cancelled && a.Status != 0
	if answered {
		if name := answerScope(a.Header, k.s.name); name != "" && name != k.s.name {
			p.move(k, name, now)
			p.changed(k, now)
		}
	}
	// The budget that learns: the key's scope's in the lease's bucket (the
	// key may just have moved), or, once a model of the shared bucket is
	// served, the model's own bucket.
	target := l.bud
	if b := target.b; k.s.index < len(b.budgets) && b.budgets[k.s.index] != nil && b.budgets[k.s.index].s == k.s {
		target = b.budgets[k.s.index]
	}
	u := k.up
	if target.b == u.shared && model != "" && (out == OutcomeSuccess || out == OutcomeRateLimited || out == OutcomeTooLarge) {
		// The model is served: it gets a bucket of its own, which learns
		// this answer's limits.
		u.served[model] = true
		u.missing.forget(model)
		if b := p.makeBucket(u, model, model, false, now); b != u.shared {
			target = b.budgets[k.s.index]
		}
	}
	if answered && !target.answered {
		target.answered = true
		p.place(target, now)
	}
	if a.Limits.Known() && !a.Cancelled {
		if out == OutcomeRateLimited && a.Error != nil && a.Error.Type == "requests" && a.Limits.RetryAfter < 0 &&
			target.answered && target.remReq >= 0 && target.limitReq >= 0 && !target.windowed &&
			target.estimate(now) >= target.inflight {
			// A 429 while the estimate said a slot was free: the
			// bucket does not refill the way a continuous one does.
			target.setShape(true)
		}
		p.learn(target, k, &a.Limits, now)
		p.place(target, now) // headroom changed: re-score
		p.wake(target.b)
	}
	switch out {
	case OutcomeSuccess:
		k.health.succeeded(now)
		if k.state == StateUnchecked {
			p.setState(k, StateReady, "answered", now)
		}
	case OutcomeRevoked:
		p.setState(k, StateRevoked, answerReason(a), now)
	case OutcomeOverQuota:
		p.setState(k, StateOverQuota, answerReason(a), now)
	case OutcomeRateLimited:
		k.health.succeeded(now)
		p.restBudget(target, k, now.Add(p.rateLimitWait(target, a)), answerReason(a), now)
	case OutcomeModelNotFound:
		k.health.succeeded(now)
		p.lacks(k.s, target.b, model, now)
	case OutcomeNotPermitted:
		if a.Error != nil && a.Error.Param == "stream" && target.b != u.shared {
			if k.s.noStream == nil {
				k.s.noStream = map[string]bool{}
			}
			if !k.s.noStream[target.b.model] {
				k.s.noStream[target.b.model] = true
				p.changed(k, now)
			}
			p.noStream[target.b.model] = true
			p.placeScope(k.s, now)
		} else {
			p.lacks(k.s, target.b, model, now)
		}
	case OutcomeServerError:
		wait := k.health.failed(now, p.cfg.failures, p.cfg.failCooldown, p.cfg.maxCooldown, a.Limits.RetryAfter)
		if wait > 0 {
			p.restKey(k, now.Add(min(wait, p.cfg.maxRest)), answerReason(a), now)
		}
	case OutcomeClientError, OutcomeTooLarge, OutcomeKeyRejected:
		if answered {
			k.health.succeeded(now)
		}
	}
	p.placeKey(k, now) // health and load changed: re-score
}

// lacks records that scope s cannot serve model: out of the model's bucket,
// and for a model no key has shown it serves, a vote towards holding it
// missing upstream. Requires p.mu.
func (p *Pool) lacks(s *scope, b *bucket, model string, now time.Time) {
	if b != b.up.shared {
		model = b.model
	}
	if s.lacks == nil {
		s.lacks = newLackSet(maxScopeLacks)
	}
	s.lacks.add(model)
	u := s.up
	if b == u.shared {
		if !u.served[model] {
			u.missing.vote(model, s, u.unlisted, now)
		}
		// The model's own buckets may exist beside the shared one (this
		// request found no room for its own): the scope leaves them.
		for _, name := range [...]string{model, model + "\x00stream"} {
			if mb := u.buckets[name]; mb != nil && s.index < len(mb.budgets) && mb.budgets[s.index] != nil {
				p.place(mb.budgets[s.index], now)
			}
		}
		return
	}
	// Out of the model's heaps, its streams' bucket included; in-flight
	// leases still release their budgets.
	p.placeScope(s, now)
}

func answerReason(a *Answer) string {
	switch {
	case a.Error != nil:
		return fmt.Sprintf("%d %s/%s", a.Status, orDash(a.Error.Type), orDash(a.Error.Code))
	case a.Err != nil:
		return "transport: " + a.Err.Error()
	}
	return fmt.Sprintf("status %d", a.Status)
}

// addUsage counts one served request of model on k. Requires p.mu.
func (p *Pool) addUsage(k *key, model string, u Usage) {
	fam := ModelFamily(model)
	if k.usage == nil {
		k.usage = map[string]*FamilyUsage{}
	}
	f := k.usage[fam]
	if f == nil {
		f = &FamilyUsage{Family: fam}
		k.usage[fam] = f
		k.usageOrder = append(k.usageOrder, fam)
	}
	f.Requests++
	f.InputTokens += u.InputTokens
	f.OutputTokens += u.OutputTokens
	f.CachedTokens += u.CachedTokens
	f.ReasoningTokens += u.ReasoningTokens
}

// live returns the keys a periodic recheck looks at: those that may take
// requests (stand-ins aside). Over-quota and revoked keys wait for Recheck
// (the seed's rule).
func (p *Pool) live() []*key {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*key, 0, len(p.keys))
	for _, k := range p.keys {
		if k.state.Usable() && !k.standIn() {
			out = append(out, k)
		}
	}
	return out
}

// checkable returns the keys a pass checks: all but disabled ones and the
// stand-ins of upstreams without keys.
func (p *Pool) checkable() []*key {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*key, 0, len(p.keys))
	for _, k := range p.keys {
		if k.state != StateDisabled && !k.standIn() {
			out = append(out, k)
		}
	}
	return out
}

func (p *Pool) orgsKnown(k *key) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return k.orgsKnown
}

// orgsFound records k's organizations: the default one (or the first)
// becomes k's organization and scope, every other one a clone in k's
// upstream, in that organization's scope. It returns the clones it created
// (none for organizations already cloned).
func (p *Pool) orgsFound(k *key, orgs []organization, now time.Time) []*key {
	p.mu.Lock()
	defer p.unlock()
	if k.gone {
		return nil // removed by Update while its check ran
	}
	k.orgsKnown = true
	p.changed(k, now)
	if len(orgs) == 0 {
		return nil
	}
	def := 0
	for i, o := range orgs {
		if o.IsDefault {
			def = i
			break
		}
	}
	k.org = orgs[def].ID
	p.move(k, orgs[def].scope(), now)
	var orgIDs []string
	var clones []*key
	for i, o := range orgs {
		if i == def {
			continue
		}
		orgIDs = append(orgIDs, o.ID)
		cred := k.cred.WithOrganization(o.ID)
		if _, exists := p.byID[cred.id]; exists {
			continue
		}
		cl := p.addKeyLocked(k.up, cred, now)
		cl.clone, cl.orgsKnown = true, true
		p.move(cl, o.scope(), now)
		p.changed(cl, now)
		clones = append(clones, cl)
	}
	p.setCloneOrgs(k, orgIDs)
	return clones
}

// checked records what a check found of k.
func (p *Pool) checked(k *key, state State, reason string, models []string, limits RateLimits, now time.Time) {
	p.mu.Lock()
	defer p.unlock()
	if k.gone {
		return // removed by Update while its check ran
	}
	s, u := k.s, k.up
	if k.checked.IsZero() {
		p.tally(k, -1) // under WithCheckedKeysOnly, its first check makes it usable
		k.checked = now
		p.tally(k, 1)
	}
	k.checked = now
	k.restored, k.heardCheck = false, false
	k.probe = limits
	p.changed(k, now)
	if limits.LimitRequests >= 0 {
		k.trial = limits.Trial()
		s.trial = k.trial // a check is the organization's tier
	}
	if models != nil {
		p.listModels(s, p.internModels(models))
		s.lacks = nil // a new list overrules what answers taught
	}
	// An organization may have been verified since: a recheck gives streaming
	// a new try (at worst one failover per scope per recheck interval).
	s.noStream = nil
	switch {
	case k.state == StateDisabled:
	case k.state == state || k.state == StateReady && state == StateUnchecked:
		k.reason = reason // no change of state, no event
	default:
		p.setState(k, state, reason, now)
	}
	p.placeKey(k, now)
	p.placeScope(s, now)
	p.wakeUpstream(u)
}

// listModels makes set the model list of s: requests for other models skip
// its keys. Requires p.mu.
func (p *Pool) listModels(s *scope, set *modelSet) {
	u := s.up
	if s.families == nil {
		u.unlisted--
	}
	s.models, s.families = set.models, set.families
	for m := range set.models {
		u.served[m] = true
	}
	for f := range set.families {
		u.served[f] = true
	}
}

// Disable takes a key out of selection until Enable, at the pool's clock.
// A key the pool does not hold is an error that matches ErrUnknownKey.
func (p *Pool) Disable(id KeyID, reason string) error {
	return p.operate(id, func(k *key, now time.Time) { p.setState(k, StateDisabled, "disabled: "+reason, now) })
}

// Enable returns a disabled, revoked or over-quota key to selection, unchecked,
// so that its next answer says what it is now. A key the pool does not hold
// is an error that matches ErrUnknownKey.
func (p *Pool) Enable(id KeyID) error {
	return p.operate(id, func(k *key, now time.Time) {
		if !k.state.Usable() {
			p.setState(k, StateUnchecked, "enabled", now)
		}
	})
}

func (p *Pool) operate(id KeyID, f func(k *key, now time.Time)) error {
	now := p.cfg.now()
	p.mu.Lock()
	defer p.unlock()
	k := p.byID[id]
	if k == nil {
		return &unknownKeyError{id}
	}
	f(k, now)
	return nil
}

// scope is the scope an organization's keys spend: its slug (name), as
// answers name it, else its ID.
func (o organization) scope() string {
	if o.Name != "" && !strings.HasPrefix(o.Name, "id:") {
		return clip(o.Name, maxScopeName)
	}
	return configuredScope(o.ID, "")
}
