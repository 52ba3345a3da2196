package keypool

import (
	"net/http"
	"time"
)

// scope is the keys of one upstream that spend one rate-limit budget: an
// organization, or a project of one. What OpenAI knows per organization
// lives here too: its tier (trial), the models it may use, those it lacks,
// and those it may not stream. A key whose organization is not known yet
// is a scope of its own (name ""). Guarded by Pool.mu.
type scope struct {
	up    *upstream
	name  string // "acme" or "acme/proj_…" as answers name it, "id:org-…" as configured; "" alone
	index int    // in up.slots; its budget of a bucket is bucket.budgets[index]
	keys  []*key // members, any state
	ready readyHeap[*key]
	rank  uint64 // its first key's place in the config: budgets never picked go in this order
	trial bool   // its answers or checks showed a trial tier

	models, families map[string]bool // from a check; nil: unknown, any model is tried
	lacks            *lackSet        // models it answered model_not_found for (bounded)
	noStream         map[string]bool // models it may not stream (an unverified organization)
}

// configuredScope names the scope of keys configured with an organization
// (and project) ID, until an answer names the organization's slug.
func configuredScope(org, project string) string {
	if project != "" {
		return "id:" + org + "/" + project
	}
	return "id:" + org
}

// answerScope names the scope an answer's headers say its key spends: the
// organization's slug, and its project when one is named. "" when the
// answer names none. It allocates only when the name differs from had.
func answerScope(h http.Header, had string) string {
	org := headerValue(h, "Openai-Organization")
	if org == "" {
		return ""
	}
	proj := headerValue(h, "Openai-Project")
	if proj == "" {
		if had == org {
			return had
		}
		return clip(org, maxScopeName)
	}
	if len(had) == len(org)+1+len(proj) && had[:len(org)] == org && had[len(org)] == '/' && had[len(org)+1:] == proj {
		return had
	}
	return clip(org+"/"+proj, maxScopeName)
}

// join puts k in the scope called name (a scope of its own for ""), making
// the scope and its budgets when it is new. Requires p.mu.
func (p *Pool) join(k *key, name string, now time.Time) {
	u := k.up
	s := u.scopes[name]
	if name == "" || s == nil {
		s = p.newScope(u, name, k.seq)
	}
	k.s = s
	k.sidx = len(s.keys)
	s.keys = append(s.keys, k)
	p.placeKey(k, now)
}

// newScope makes a scope with a budget in every bucket of u; rank is where
// its first key stands in the config. Requires p.mu.
func (p *Pool) newScope(u *upstream, name string, rank uint64) *scope {
	s := &scope{up: u, name: name, rank: rank}
	if n := len(u.freeSlots); n > 0 {
		s.index = u.freeSlots[n-1]
		u.freeSlots = u.freeSlots[:n-1]
		u.slots[s.index] = s
	} else {
		s.index = len(u.slots)
		u.slots = append(u.slots, s)
	}
	if name != "" {
		u.scopes[name] = s
	}
	u.unlisted++ // no model list yet
	p.eachBucket(u, func(b *bucket) { b.addBudget(s) })
	return s
}

// move puts k in the scope its answers or checks name, leaving its old one:
// the budget it spends is the new scope's from now on. A scope it leaves
// empty (a key alone until its organization was known) hands its budgets
// over: what its requests in flight hold, and what its answers taught, when
// the new scope knows no better. Requires p.mu.
func (p *Pool) move(k *key, name string, now time.Time) {
	old := k.s
	if old.name == name || name == "" {
		return
	}
	s := k.up.scopes[name]
	if s == nil {
		s = p.newScope(k.up, name, old.rank)
		// A new organization starts from what its first key knew.
		s.trial, s.models, s.families = old.trial, old.models, old.families
		if s.families != nil {
			k.up.unlisted--
		}
	}
	if k.node().where == heapReady {
		old.ready.remove(k)
		k.node().where = heapNone
	}
	last := old.keys[len(old.keys)-1]
	old.keys[k.sidx] = last
	last.sidx = k.sidx
	old.keys = old.keys[:len(old.keys)-1]
	k.s = s
	k.sidx = len(s.keys)
	s.keys = append(s.keys, k)
	if len(old.keys) == 0 {
		p.dropScope(old, s)
	} else {
		p.placeScope(old, now)
	}
	p.placeKey(k, now)
	p.placeScope(s, now)
}

// dropScope removes an empty scope and its budgets. With into set, each
// budget hands over to into's in the same bucket (see move); either way its
// in-flight leases release through it. Requires p.mu.
func (p *Pool) dropScope(s *scope, into *scope) {
	u := s.up
	p.eachBucket(u, func(b *bucket) {
		bud := b.budgets[s.index]
		if bud == nil {
			return
		}
		b.unplace(bud)
		b.budgets[s.index] = nil
		if into != nil && into.index < len(b.budgets) && b.budgets[into.index] != nil {
			bud.handOver(b.budgets[into.index])
		}
	})
	if s.name != "" && u.scopes[s.name] == s {
		delete(u.scopes, s.name)
	}
	if s.families == nil {
		u.unlisted--
	}
	u.slots[s.index] = nil
	u.freeSlots = append(u.freeSlots, s.index)
}

// canServe reports whether s may be tried for b's model: not refused for
// it, in a family its model list has (when known), and no image model for
// a trial organization.
func (s *scope) canServe(b *bucket) bool {
	if b == b.up.shared {
		return true // a model no key has shown it serves: any scope may try
	}
	if s.lacks.has(b.model) || s.trial && b.image || b.stream && s.noStream[b.model] {
		return false
	}
	if b.path {
		return true
	}
	return s.families == nil || s.families[b.family] || s.models[b.model]
}

// servesModel is canServe for a request on the shared bucket: the model is
// the request's own.
func (s *scope) servesModel(model string, stream bool) bool {
	if s.lacks.has(model) || stream && s.noStream[model] {
		return false
	}
	return true
}

// placeScope re-places the budgets of s in every bucket, after a change
// that may make them usable or not (its first ready key, its last, a model
// list). Requires p.mu.
func (p *Pool) placeScope(s *scope, now time.Time) {
	p.eachBucket(s.up, func(b *bucket) {
		if bud := b.budgets[s.index]; bud != nil {
			p.place(bud, now)
		}
	})
}

// eachBucket calls f for every bucket of u, the shared one first.
func (p *Pool) eachBucket(u *upstream, f func(*bucket)) {
	if u.shared != nil {
		f(u.shared)
	}
	for _, b := range u.buckets {
		f(b)
	}
}
