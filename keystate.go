package keypool

import (
	"math"
	"time"
)

// key is the pool's record of one credential. Guarded by Pool.mu.
type key struct {
	heapNode // in its scope's ready heap, or its upstream's cooling heap

	cred       Key
	up         *upstream
	s          *scope
	index      int   // in up.keys
	sidx       int   // in s.keys
	state      State // lifecycle: never StateCooling, which is derived from cooldowns
	saveAt     int32 // 1 + its place in Pool.saves; 0 when its state is not queued to be saved
	reason     string
	since      time.Time
	trial      bool
	clone      bool       // an organization clone found by the checker
	gone       bool       // Update removed it: it takes no request, and its answers teach nothing
	born       uint32     // its number among the keys the pool ever added (here, it fills the bools' word)
	org        string     // the organization it is sent with, or its default one
	checked    time.Time  // last check
	orgsKnown  bool       // organizations listed (or found unlistable)
	restored   bool       // its last check came from a StateStore, and this process has not checked it since
	heardCheck bool       // that check was heard from another replica (StateSubscriber): see checkDue
	probe      RateLimits // what the checker's probe answer said
	coolUntil  time.Time  // rest after failures
	health     health
	inflight   int
	seq        uint64 // last pick: least recently used first among equals
	lastUsed   time.Time
	usage      map[string]*FamilyUsage
	usageOrder []string
	authz      func() []string // the Authorization header value (see bearer)
}

func (k *key) node() *heapNode { return &k.heapNode }

// standIn reports whether k stands in for an upstream without keys.
func (k *key) standIn() bool { return k.up.Auth != AuthKeys }

// selectable reports whether k may take requests, cooldowns aside.
// Requires p.mu.
func (p *Pool) selectable(k *key) bool {
	return !k.gone && k.state.Usable() && !(p.cfg.checkedOnly && k.checked.IsZero() && !k.standIn())
}

// keyScore orders the ready keys of a scope at now, lowest first: healthy
// ones, then those with the fewest requests in flight, then the least
// recently used.
func keyScore(k *key, now time.Time) uint64 {
	const inflightBits, seqBits = 20, 40
	s := uint64(k.health.class(now)) << (inflightBits + seqBits)
	s |= uint64(min(k.inflight, 1<<inflightBits-1)) << seqBits
	return s | k.seq&(1<<seqBits-1)
}

// placeKey puts k in the heap its state calls for at now: its scope's ready
// heap, its upstream's cooling heap, or none. When that makes its scope gain
// its first ready key or lose its last, the scope's budgets are re-placed.
// Requires p.mu.
func (p *Pool) placeKey(k *key, now time.Time) {
	want := heapNone
	if p.selectable(k) {
		want = heapReady
		if k.coolUntil.After(now) {
			want = heapCooling
		}
	}
	s := k.s
	before := len(s.ready)
	switch {
	case k.where == want && want == heapReady:
		s.ready.fix(k, keyScore(k, now))
		return
	case k.where == want && want == heapCooling:
		k.wakeAt = p.offset(k.coolUntil)
		k.up.cooling.fix(k)
		return
	case k.where == heapReady:
		s.ready.remove(k)
	case k.where == heapCooling:
		k.up.cooling.remove(k)
	}
	k.where = want
	switch want {
	case heapReady:
		s.ready.push(k, keyScore(k, now))
	case heapCooling:
		k.wakeAt = p.offset(k.coolUntil)
		k.up.cooling.push(k)
	}
	if (before == 0) != (len(s.ready) == 0) {
		p.placeScope(s, now)
	}
}

// reviveKeys puts the keys of u whose rest has ended back in their scopes.
// Requires p.mu.
func (p *Pool) reviveKeys(u *upstream, now time.Time) {
	t := p.offset(now)
	for {
		k, wake, ok := u.cooling.next()
		if !ok || wake > t {
			return
		}
		p.placeKey(k, now)
		if k.where == heapCooling {
			return // cannot happen while wakeAt is kept in step
		}
	}
}

// setState moves k to a lifecycle state and records the event. Requires p.mu.
func (p *Pool) setState(k *key, to State, reason string, now time.Time) {
	from, _ := p.derivedState(k, now)
	if k.state == to && k.reason == reason {
		return
	}
	p.tally(k, -1)
	k.state, k.reason, k.since = to, reason, now
	p.tally(k, 1)
	if to.Usable() {
		k.coolUntil = time.Time{}
		k.health = health{}
	}
	p.changed(k, now)
	p.placeKey(k, now)
	p.wakeUpstream(k.up)
	p.events = append(p.events, StateEvent{Key: k.cred.id, Upstream: k.up.Name, From: from, To: to, Reason: reason, At: now})
}

// restKey makes the whole key unusable until t. A key already cooling (for
// any model) sends no new event: attempts show each failure. Requires p.mu.
func (p *Pool) restKey(k *key, t time.Time, reason string, now time.Time) {
	if !t.After(k.coolUntil) {
		return
	}
	from, _ := p.derivedState(k, now)
	k.coolUntil = t
	p.changed(k, now)
	p.placeKey(k, now)
	if k.state.Usable() && from != StateCooling {
		p.events = append(p.events, StateEvent{Key: k.cred.id, Upstream: k.up.Name, From: from, To: StateCooling, Reason: reason, Until: t, At: now})
	}
}

// derivedState is what a snapshot shows: a selectable key with an active
// rest, its own or its scope's for some model, is cooling.
func (p *Pool) derivedState(k *key, now time.Time) (State, time.Time) {
	until := k.coolUntil
	p.eachBucket(k.up, func(b *bucket) {
		if bud := b.budgets[k.s.index]; bud != nil && bud.until.After(until) {
			until = bud.until
		}
	})
	if !until.After(now) {
		until = time.Time{}
	}
	if k.state.Usable() && !until.IsZero() {
		return StateCooling, until
	}
	return k.state, until
}

// health is what recent outcomes say of a key: an exponentially weighted
// rate of failures (server errors, network errors, timeouts) that fades
// with time, and how many times it has been rested for them. A key that
// fails often rests, with a rest that grows each time, even when successes
// come between; once its rest is over it is tried again (a probe), and
// answers that go well, or time, bring its rate down until it counts as
// healthy.
type health struct {
	failRate float64   // 0…1 as of at, weighted towards recent outcomes
	at       time.Time // when failRate was last updated
	answers  int       // outcomes seen, up to healthWarmup
	inARow   int       // failures since the last success
	strikes  int       // rests since it last counted as healthy
}

const (
	healthWeight   = 0.25        // of the newest outcome
	healthWarmup   = 4           // outcomes before the rate alone may rest a key
	healthRest     = 0.3         // a failure rate that rests the key
	healthGood     = 0.05        // a failure rate that counts as healthy again
	healthHalfLife = time.Minute // a failure counts half as much a minute later
)

// rate is the failure rate at now, faded since the last outcome.
func (h *health) rate(now time.Time) float64 {
	if h.failRate == 0 || h.at.IsZero() || !now.After(h.at) {
		return h.failRate
	}
	return h.failRate * math.Exp2(-float64(now.Sub(h.at))/float64(healthHalfLife))
}

// class sorts keys by health at now: 0 healthy … 3 failing most.
func (h *health) class(now time.Time) int {
	switch r := h.rate(now); {
	case r < healthGood:
		return 0
	case r < 0.3:
		return 1
	case r < 0.6:
		return 2
	}
	return 3
}

// succeeded counts a good answer at now.
func (h *health) succeeded(now time.Time) {
	h.failRate, h.at = h.rate(now)*(1-healthWeight), now
	h.answers = min(h.answers+1, healthWarmup)
	h.inARow = 0
	if h.failRate < healthGood {
		h.strikes = 0
	}
}

// failed counts a failure at now and reports whether the key should rest,
// and for how long: base doubling with each rest since it last counted as
// healthy, up to most; retryAfter, when the answer said so, is a floor.
func (h *health) failed(now time.Time, threshold int, base, most, retryAfter time.Duration) time.Duration {
	h.failRate, h.at = h.rate(now)*(1-healthWeight)+healthWeight, now
	h.answers = min(h.answers+1, healthWarmup)
	h.inARow++
	wait := retryAfter
	if h.inARow >= threshold || h.answers >= healthWarmup && h.failRate >= healthRest {
		wait = max(wait, min(base<<min(h.strikes, 16), most))
		h.strikes++
	}
	return wait
}
