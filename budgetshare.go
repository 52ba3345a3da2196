package keypool

import (
	"context"
	"time"
)

// Shared budgets: with a BudgetStore (WithStateStore), a budget whose
// answers have stated its limits is spent a few requests at a time: the
// store grants them, atomically among the replicas, and picks spend them
// here (headroom is what is left of the grants). Before they run out, a
// goroutine of the pool's asks for more, with the latest answer's limits.
// A pick never waits on the store, but a request whose every budget has
// spent its grants waits for the next, as it waits for a busy key. When
// Spend fails, every budget is spent alone (by its answers, as without a
// store) for budgetStoreRest, and then shared again.

// Bounds on the grants of shared budgets.
const (
	// maxGrant is the most requests one Spend asks for: what a replica
	// holds and another cannot use. grantShare: a grant is at most that
	// part of what the budget has left.
	maxGrant   = 16
	grantShare = 8
	// spendTimeout bounds one Spend; budgetStoreRest is how long the pool
	// spends alone after one failed.
	spendTimeout    = 250 * time.Millisecond
	budgetStoreRest = 5 * time.Second
)

// budgetShare is a budget's part of a BudgetStore: the requests granted
// and not yet spent, a Spend under way, the budget's name in the store,
// and what the latest answer said since the last Spend. Guarded by Pool.mu.
type budgetShare struct {
	granted int64
	asking  bool
	name    string
	seenSet bool
	seen    BudgetSeen
	seenAt  time.Time
}

// shared returns bud's share, made on first use.
func (bud *budget) shared() *budgetShare {
	if bud.share == nil {
		bud.share = &budgetShare{}
	}
	return bud.share
}

// granted is what is left of bud's grants.
func (bud *budget) granted() int64 {
	if bud.share == nil {
		return 0
	}
	return bud.share.granted
}

// sharing reports whether bud is spent through the BudgetStore: it has
// one, bud's limits are known, and bud is a model's own bucket's, of an
// upstream whose keys are the pool's. Requires p.mu.
func (p *Pool) sharing(bud *budget) bool {
	return p.budgets != nil && !p.budgetsDown && bud.limitReq >= 0 && bud.b != bud.b.up.shared &&
		bud.s.up.Auth == AuthKeys
}

// budgetsBack ends a rest of the BudgetStore once it is over, at the start
// of a take. Requires p.mu.
func (p *Pool) budgetsBack(now time.Time) {
	if p.budgetsDown && !now.Before(p.budgetsRetry) {
		p.budgetsDown = false
	}
}

// waitsForGrant reports whether bud is shared and has spent its grants,
// and then asks for more unless it is asking already. Requires p.mu.
func (p *Pool) waitsForGrant(bud *budget, now time.Time) bool {
	if !p.sharing(bud) || bud.granted() > 0 {
		return false
	}
	if !bud.shared().asking {
		p.ask(bud, now)
	}
	return true
}

// grantWant is how many requests to ask for: a share of what bud is
// believed to have left, at least one.
func grantWant(bud *budget, now time.Time) int64 {
	return min(max(bud.estimate(now)/grantShare, 1), maxGrant)
}

// spendGrant takes one request of bud's grants, for a pick, and asks for
// more when half of what was asked for is gone. Requires p.mu.
func (p *Pool) spendGrant(bud *budget, now time.Time) {
	sh := bud.shared()
	if sh.granted > 0 {
		sh.granted--
	}
	if !sh.asking && sh.granted <= grantWant(bud, now)/2 {
		p.ask(bud, now)
	}
}

// ask starts a Spend of bud's budget, with what its answers said since the
// last one. Requires p.mu.
func (p *Pool) ask(bud *budget, now time.Time) {
	sh := bud.shared()
	sh.asking = true
	if sh.name == "" {
		scope := bud.s.name
		if scope == "" && len(bud.s.keys) > 0 {
			scope = "key:" + string(bud.s.keys[0].cred.id)
		}
		sh.name = bud.s.up.Name + "\x00" + scope + "\x00" + bud.b.name
	}
	req := BudgetRequest{Budget: sh.name, Want: grantWant(bud, now)}
	if sh.seenSet {
		seen := sh.seen
		seen.Age = max(now.Sub(sh.seenAt), 0)
		req.Seen, sh.seenSet = &seen, false
	}
	go p.spend(bud, req)
}

// spend runs one Spend and takes in its answer: the grants grow, or the
// budget rests until a request frees when none was granted, or, when the
// store failed, every budget is spent alone for a while. The requests
// waiting for bud's bucket look again either way.
func (p *Pool) spend(bud *budget, req BudgetRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), spendTimeout)
	g, err := p.budgets.Spend(ctx, req)
	cancel()
	now := p.cfg.now()
	p.mu.Lock()
	bud.share.asking = false
	live := bud.live()
	switch {
	case err != nil:
		if sh := live.shared(); req.Seen != nil && !sh.seenSet {
			sh.seen, sh.seenAt, sh.seenSet = *req.Seen, now.Add(-req.Seen.Age), true
		}
		if !p.budgetsDown {
			p.budgetsDown, p.budgetsRetry = true, now.Add(budgetStoreRest)
			for _, u := range p.ups {
				p.wakeUpstream(u) // requests waiting for grants take keys alone
			}
		}
	case g.Granted > 0:
		live.shared().granted += min(g.Granted, req.Want)
	default:
		wait := g.Retry
		if wait <= 0 {
			wait = p.spentWait(live, 0)
		}
		if t := now.Add(min(wait, p.cfg.maxRest)); t.After(live.until) {
			live.until = t
		}
	}
	p.place(live, now)
	p.wake(live.b)
	p.unlock()
}

// sawLimits keeps what an answer said of bud's requests for the next
// Spend. Requires p.mu.
func (p *Pool) sawLimits(bud *budget, l *RateLimits, now time.Time) {
	if p.budgets == nil || bud.limitReq < 0 || bud.remReq < 0 || l.ResetRequests < 0 {
		return
	}
	sh := bud.shared()
	sh.seen = BudgetSeen{Limit: bud.limitReq, Remaining: bud.remReq, Reset: l.ResetRequests,
		Windowed: bud.windowed, PerSlot: bud.perSlot}
	sh.seenAt, sh.seenSet = now, true
}
