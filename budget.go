package keypool

import (
	"time"
)

// budget is one scope's standing for one model (a bucket): the rate limits
// its keys' answers stated, the requests in flight, and a rest once it is
// spent. Every key of the scope spends it. Guarded by Pool.mu.
//
// Two refill shapes exist. OpenAI's buckets refill continuously: reset is
// the time until the bucket is full, and a slot frees every reset ÷ used.
// Many compatible services (and daily limits) count in fixed windows: reset
// counts down to the window's end, spending does not move it, and nothing
// frees before it. A budget starts continuous and turns windowed when the
// answers contradict a continuous refill; it turns back when they show one.
type budget struct {
	heapNode // in its bucket's ready or cooling heap

	s        *scope
	b        *bucket
	answered bool  // an answer arrived, so unknown limits mean "none stated"
	limitReq int64 // Unknown until stated
	remReq   int64 // at obsAt
	obsAt    time.Time
	perSlot  time.Duration // continuous: the time one slot takes to free
	windowed bool
	end      time.Time // when the last answer said the bucket is full (continuous) or the window ends
	lastRem  int64     // remaining requests of the last answer that stated them with a reset
	evidence int       // answers in a row that contradict the current shape
	limitTok int64
	remTok   int64
	inflight int64
	fwd      *budget      // where a gone scope's budget handed over to; releases follow it
	seq      uint64       // last pick
	until    time.Time    // rest for this model
	share    *budgetShare // with a BudgetStore, once shared (budgetshare.go)
}

func (bud *budget) node() *heapNode { return &bud.heapNode }

// handOver moves what bud holds to to: its requests in flight, and what its
// answers taught when to has had no answer yet. Releases of bud's leases go
// to to from now on. Requires p.mu; to is placed by the caller.
func (bud *budget) handOver(to *budget) {
	to.inflight += bud.inflight
	if bud.share != nil && bud.share.granted > 0 {
		to.shared().granted += bud.share.granted
		bud.share.granted = 0
	}
	if sh := bud.b; sh == sh.up.shared {
		for sm, n := range sh.byModel {
			if sm.s == bud.s {
				sh.byModel[scopeModel{to.s, sm.model}] += n
				delete(sh.byModel, sm)
			}
		}
	}
	bud.inflight = 0
	if !to.answered && bud.answered {
		to.answered, to.limitReq, to.remReq, to.obsAt, to.perSlot = true, bud.limitReq, bud.remReq, bud.obsAt, bud.perSlot
		to.windowed, to.end, to.lastRem, to.evidence = bud.windowed, bud.end, bud.lastRem, bud.evidence
		to.limitTok, to.remTok = bud.limitTok, bud.remTok
		if bud.until.After(to.until) {
			to.until = bud.until
		}
	}
	bud.fwd = to
}

// live follows hand-overs to the budget that counts now.
func (bud *budget) live() *budget {
	for bud.fwd != nil {
		bud = bud.fwd
	}
	return bud
}

func newBudget(s *scope, b *bucket) *budget {
	return &budget{s: s, b: b, limitReq: Unknown, remReq: Unknown, limitTok: Unknown, remTok: Unknown, lastRem: Unknown,
		seq: s.rank, heapNode: heapNode{idx: -1}}
}

// Evidence thresholds of the refill shape.
const (
	// shapeEvidence is how many answers in a row must contradict the shape
	// before the budget changes it: a late answer is no proof.
	shapeEvidence = 2
	// shapeMinMove is the least a continuous refill must move the bucket's
	// end for the answers to tell it from a window: network jitter is
	// smaller than that.
	shapeMinMove = 100 * time.Millisecond
)

// headroom is how many more requests bud may take now: the remaining
// requests of its last answer (refilled since, as its shape allows) minus
// those in flight. Before the first answer a scope takes probeLimit
// requests at once, so that none is flooded before it has said what its
// limits are; an upstream that states no limits is not limited. A budget
// shared through a BudgetStore has the requests of its lease.
func (p *Pool) headroom(bud *budget, now time.Time) int64 {
	return p.headroomOf(bud, bud.estimate(now))
}

// headroomOf is headroom with rem as the remaining requests.
func (p *Pool) headroomOf(bud *budget, rem int64) int64 {
	if bud.s.up.Auth == AuthCaller {
		return 1<<20 - bud.inflight // every caller brings a key of its own
	}
	if p.sharing(bud) {
		return bud.granted() // see budgetshare.go
	}
	return p.localHeadroom(bud, rem)
}

// localHeadroom is headroomOf as this pool alone sees it: rem, or what a
// scope may take before its first answer, less what is in flight.
func (p *Pool) localHeadroom(bud *budget, rem int64) int64 {
	if rem < 0 {
		if bud.answered {
			rem = 1 << 20
		} else {
			rem = p.cfg.probeLimit
		}
	}
	return rem - bud.inflight - p.sharedInflight(bud)
}

// sharedInflight is what bud's scope has in flight for bud's model on its
// upstream's shared bucket: a model's bucket is made when the first answer
// shows the model is served, and the scope's requests for it that went out
// before still count against its headroom. Requires p.mu.
func (p *Pool) sharedInflight(bud *budget) int64 {
	sh := bud.b.up.shared
	if bud.b == sh || bud.s.index >= len(sh.budgets) || sh.budgets[bud.s.index] == nil {
		return 0
	}
	if sb := sh.budgets[bud.s.index]; sb.inflight > 0 {
		return sh.byModel[scopeModel{bud.s, bud.b.model}]
	}
	return 0
}

// scopeModel keys a shared bucket's requests in flight per scope and model.
type scopeModel struct {
	s     *scope
	model string
}

// estimate returns bud's remaining requests at now: refilled one per slot
// for a continuous budget, full again after its end for a windowed one.
func (bud *budget) estimate(now time.Time) int64 {
	switch {
	case bud.remReq < 0 || bud.limitReq < 0:
		return bud.remReq
	case bud.windowed:
		if !bud.end.IsZero() && !now.Before(bud.end) {
			return bud.limitReq
		}
		return bud.remReq
	case bud.perSlot <= 0:
		return bud.remReq
	}
	slots := int64(now.Sub(bud.obsAt) / bud.perSlot)
	if slots <= 0 {
		return bud.remReq
	}
	return min(bud.limitReq, bud.remReq+slots)
}

// refill brings remReq up to now, as estimate does, for a budget whose rest
// ended. Requires p.mu.
func (bud *budget) refill(now time.Time) {
	r := bud.estimate(now)
	if r == bud.remReq {
		return
	}
	if !bud.windowed && bud.perSlot > 0 {
		slots := int64(now.Sub(bud.obsAt) / bud.perSlot)
		bud.obsAt = bud.obsAt.Add(time.Duration(slots) * bud.perSlot)
	} else {
		bud.obsAt = now
	}
	bud.remReq = r
}

// learn records the rate limits of k's answer on bud. Requires p.mu.
func (p *Pool) learn(bud *budget, k *key, l *RateLimits, now time.Time) {
	bud.answered = true
	if l.LimitRequests >= 0 {
		bud.limitReq = l.LimitRequests
		if p.learnTrial(bud.s, l, now) {
			p.changed(k, now) // its scope's other keys keep theirs: see keyState
		}
	}
	if r := l.RemainingRequests; r >= 0 {
		prevEnd := bud.end
		if l.ResetRequests >= 0 {
			bud.observeShape(r, now.Add(min(l.ResetRequests, p.cfg.maxRest)), now)
		}
		// An answer that arrives late can show more than is left; the
		// estimate from the previous answer bounds it: a continuous
		// bucket's refilled since, or the same window's count, which only
		// falls until the window ends.
		switch {
		case bud.remReq < 0 || bud.limitReq < 0:
		case !bud.windowed && bud.perSlot > 0:
			r = min(r, bud.estimate(now))
		case bud.windowed && now.Before(prevEnd) && absDuration(bud.end.Sub(prevEnd)) <= shapeMinMove:
			r = min(r, bud.remReq)
		}
		bud.remReq, bud.obsAt = r, now
		if !bud.windowed && l.ResetRequests > 0 && bud.limitReq > l.RemainingRequests {
			bud.perSlot = l.ResetRequests / time.Duration(bud.limitReq-l.RemainingRequests)
		}
		if r == 0 {
			p.restBudget(bud, k, now.Add(p.spentWait(bud, l.ResetRequests)), "requests exhausted", now)
		}
		p.sawLimits(bud, l, now)
	}
	if l.LimitTokens >= 0 {
		bud.limitTok = l.LimitTokens
	}
	if l.RemainingTokens >= 0 {
		bud.remTok = l.RemainingTokens
		if l.RemainingTokens == 0 && l.ResetTokens > 0 {
			p.restBudget(bud, k, now.Add(min(tokenWait(l.ResetTokens), p.cfg.maxRest)), "tokens exhausted", now)
		}
	}
}

// learnTrial takes a low request limit as a trial tier, for a scope whose
// tier a check has not stated. Limits are per model: a paid organization's
// low limit for one model is no sign of a trial, so traffic may clear the
// flag and only sets it before a check. It reports whether the scope's tier
// changed. Requires p.mu.
func (p *Pool) learnTrial(s *scope, l *RateLimits, now time.Time) bool {
	trial := l.Trial()
	if trial == s.trial || s.up.Auth != AuthKeys {
		return false
	}
	if trial {
		for _, k := range s.keys {
			if !k.checked.IsZero() {
				return false
			}
		}
	}
	s.trial = trial
	for _, k := range s.keys {
		k.trial = trial
	}
	p.placeScope(s, now) // trials serve no image model
	return true
}

// spentWait is how long a budget with no request left rests: until its
// window ends, or for a continuous one until a slot frees; never less than
// the answer's own reset says for a window, nor more than maxRest.
func (p *Pool) spentWait(bud *budget, reset time.Duration) time.Duration {
	var d time.Duration
	switch {
	case bud.windowed && reset > 0:
		d = reset
	case bud.perSlot > 0:
		d = bud.perSlot
	case reset > 0:
		d = reset
	default:
		d = time.Second
	}
	return min(max(d, time.Millisecond), p.cfg.maxRest)
}

// observeShape compares an answer's remaining requests and end (now +
// reset) with the last answer's, and changes the budget's shape when the
// answers contradict it shapeEvidence times in a row:
//   - continuous: spending requests moves the end later by a slot each;
//     an end that stays put while requests are spent is a window's;
//   - windowed: nothing refills before the end; remaining requests that
//     rise while no other request is in flight, or an end that moves
//     later, before the window is over show a continuous refill.
func (bud *budget) observeShape(rem int64, end, now time.Time) {
	prevRem, prevEnd := bud.lastRem, bud.end
	bud.lastRem, bud.end = rem, end
	if prevRem < 0 || prevEnd.IsZero() {
		return
	}
	contradicts := false
	if !bud.windowed {
		spent := prevRem - rem
		if spent <= 0 || bud.perSlot <= 0 {
			return // nothing to compare: no spend seen between the answers
		}
		want := time.Duration(spent) * bud.perSlot
		if want < shapeMinMove {
			return
		}
		contradicts = end.Sub(prevEnd) < want/4
	} else {
		if !now.Before(prevEnd) {
			return // a new window: nothing to compare with the old one
		}
		// Remaining requests that rise can be a refill, or answers out of
		// order: only with no other request in flight (the answer's own
		// still counts) do they show a refill.
		contradicts = rem > prevRem && bud.inflight <= 1 || end.Sub(prevEnd) > shapeMinMove
	}
	if !contradicts {
		bud.evidence = 0
		return
	}
	if bud.evidence++; bud.evidence >= shapeEvidence {
		bud.setShape(!bud.windowed)
	}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (bud *budget) setShape(windowed bool) {
	bud.windowed, bud.evidence = windowed, 0
	if windowed {
		bud.perSlot = 0
	}
}

// tokenWait is how long a budget whose token bucket is spent rests: the
// reset header says when the bucket is full, but a request needs only part
// of it.
func tokenWait(reset time.Duration) time.Duration {
	return min(reset, max(reset/10, time.Second))
}

// rateLimitWait is how long a budget rests after a 429 for its model: the
// answer's Retry-After when it gives one; else the answer's own reset for a
// requests limit (never sooner: nothing says a slot frees before it), or for
// a tokens limit until part of the bucket is back; else a slot, else a
// second. At most maxRest.
func (p *Pool) rateLimitWait(bud *budget, a *Answer) time.Duration {
	l := &a.Limits
	d := l.RetryAfter
	tokens := a.Error != nil && a.Error.Type == "tokens"
	switch {
	case d >= 0:
	case tokens && l.ResetTokens >= 0:
		d = tokenWait(l.ResetTokens)
	case l.ResetRequests > 0:
		d = l.ResetRequests
	case bud.perSlot > 0:
		d = bud.perSlot
	}
	if d <= 0 {
		d = time.Second
	}
	return min(d, p.cfg.maxRest)
}

// restBudget makes the scope's keys unusable for one model until t; k is
// the key whose answer said so, which the event names. Requires p.mu.
func (p *Pool) restBudget(bud *budget, k *key, t time.Time, reason string, now time.Time) {
	if !t.After(bud.until) {
		return
	}
	from, _ := p.derivedState(k, now)
	bud.until = t
	p.place(bud, now)
	if k.state.Usable() && from != StateCooling {
		p.events = append(p.events, StateEvent{Key: k.cred.id, Upstream: k.up.Name, From: from, To: StateCooling,
			Reason: reason, Model: bud.b.model, Until: t, At: now})
	}
}
