package keypool

import (
	"context"
	"time"
)

// A BudgetStore is a StateStore that also keeps the rate-limit budgets
// that pools over the same keys (replicas) spend together, so that
// together they send no more than an upstream allows. Given to
// WithStateStore, it is found by a type assertion.
//
// A pool spends a shared budget through small leases: it asks the store
// for a few requests at a time, from a goroutine of its own and never in a
// pick, and spends them locally; it asks again before they run out. Until
// a budget's first answer states its limits, and for an upstream that
// states none, a pool spends alone, as without a store. When Spend fails,
// the pool goes on alone with what it knows for a while (budgetStoreRest),
// and then asks again.
type BudgetStore interface {
	StateStore
	// Spend takes up to req.Want requests from the budget req.Budget names,
	// atomically among all the pools that share the store, after taking in
	// req.Seen. ctx carries a short deadline; Spend must heed it.
	Spend(ctx context.Context, req BudgetRequest) (BudgetGrant, error)
}

// BudgetRequest asks a BudgetStore for requests of one budget.
type BudgetRequest struct {
	// Budget names the budget: its upstream, its scope and its bucket (the
	// model), joined by NUL bytes. It holds no secret; a scope of a key
	// alone is named by the key's ID.
	Budget string
	// Want is how many requests the pool asks for, at least 1.
	Want int64
	// Seen is what the latest answer said of the budget since the pool
	// last asked; nil when none came.
	Seen *BudgetSeen
}

// BudgetSeen is what an answer's rate-limit headers said of a budget's
// requests, and the refill shape its pool has learned.
type BudgetSeen struct {
	Limit     int64 // requests per window, or per reset of a full bucket
	Remaining int64
	// Reset is how long after the answer the bucket is full (continuous)
	// or the window ends (Windowed).
	Reset time.Duration
	// Windowed says the budget counts in fixed windows: nothing frees
	// before the window ends. Otherwise a request frees every PerSlot (0:
	// not known yet).
	Windowed bool
	PerSlot  time.Duration
	// Age is how long before the Spend the answer arrived.
	Age time.Duration
}

// BudgetGrant is a BudgetStore's answer to a BudgetRequest.
type BudgetGrant struct {
	// Granted is how many requests the pool may send: 0 to Want.
	Granted int64
	// Retry, when nothing was granted, is how long until a request frees
	// (0: not known).
	Retry time.Duration
}
