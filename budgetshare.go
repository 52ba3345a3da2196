package keypool

import (
	"context"
	"time"
)

// Shared budgets: with a BudgetStore (WithStateStore), a budget whose
// answers have stated its limits is spent through leases. A pick spends
// the lease's requests (headroom is the lease); before they run out, a
// goroutine of the pool's asks the store for more, with the latest answer's
// limits; a pick never waits on the store, but a request whose every
// budget has an empty lease waits for a grant, as it waits for a busy key.
// When Spend fails, every budget is spent alone (by its answers, as
// without a store) for budgetStoreRest, and then shared again.

// Bounds on the leases of shared budgets.
const (
	// maxLease is the most requests one Spend asks for: what a replica
	// holds and another cannot use. leaseShare: a lease is at most that
	// part of what the budget has left.
	maxLease   = 16
	leaseShare = 8
	// spendTimeout bounds one Spend; budgetStoreRest is how long the pool
	// spends alone after one failed.
	spendTimeout    = 250 * time.Millisecond
	budgetStoreRest = 5 * time.Second
)

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

// leaseWant is how many requests to ask for: a share of what bud is
// believed to have left, at least one.
func leaseWant(bud *budget, now time.Time) int64 {
	return min(max(bud.estimate(now)/leaseShare, 1), maxLease)
}

// spendLease takes one request of bud's lease, for a pick, and asks for
// more when half of what was asked for is gone. Requires p.mu.
func (p *Pool) spendLease(bud *budget, now time.Time) {
	if bud.lease > 0 {
		bud.lease--
	}
	if !bud.asking && bud.lease <= leaseWant(bud, now)/2 {
		p.ask(bud, now)
	}
}

// ask starts a Spend of bud's budget, with what its answers said since the
// last one. Requires p.mu.
func (p *Pool) ask(bud *budget, now time.Time) {
	bud.asking = true
	if bud.storeName == "" {
		scope := bud.s.name
		if scope == "" && len(bud.s.keys) > 0 {
			scope = "key:" + string(bud.s.keys[0].cred.id)
		}
		bud.storeName = bud.s.up.Name + "\x00" + scope + "\x00" + bud.b.name
	}
	req := BudgetRequest{Budget: bud.storeName, Want: leaseWant(bud, now)}
	if bud.seenSet {
		seen := bud.seen
		seen.Age = max(now.Sub(bud.seenAt), 0)
		req.Seen, bud.seenSet = &seen, false
	}
	go p.spend(bud, req)
}

// spend runs one Spend and takes in its answer: the lease grows, or the
// budget rests until a request frees when none was granted, or, when the
// store failed, every budget is spent alone for a while. The requests
// waiting for bud's bucket look again either way.
func (p *Pool) spend(bud *budget, req BudgetRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), spendTimeout)
	g, err := p.budgets.Spend(ctx, req)
	cancel()
	now := p.cfg.now()
	p.mu.Lock()
	bud.asking = false
	live := bud.live()
	switch {
	case err != nil:
		if req.Seen != nil && !live.seenSet {
			live.seen, live.seenAt, live.seenSet = *req.Seen, now.Add(-req.Seen.Age), true
		}
		if !p.budgetsDown {
			p.budgetsDown, p.budgetsRetry = true, now.Add(budgetStoreRest)
		}
	case g.Granted > 0:
		live.lease += min(g.Granted, req.Want)
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
	bud.seen = BudgetSeen{Limit: bud.limitReq, Remaining: bud.remReq, Reset: l.ResetRequests,
		Windowed: bud.windowed, PerSlot: bud.perSlot}
	bud.seenAt, bud.seenSet = now, true
}
