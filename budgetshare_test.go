package keypool_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// memBudgets is a BudgetStore in memory, as replicas in one process would
// share a Redis: one budget per name, spent atomically, refilled as the
// answers Seen describe (a continuous bucket a request per slot, a window
// full at its end), lowered but never raised by an answer in the same
// window. fail makes Spend fail.
type memBudgets struct {
	mu      sync.Mutex
	budgets map[string]*memBudget
	spends  atomic.Int64
	fail    atomic.Bool
}

type memBudget struct {
	limit, rem int64
	at, end    time.Time
	slot       time.Duration
	windowed   bool
}

func (m *memBudgets) Load(context.Context) ([]keypool.KeyState, error) { return nil, nil }
func (m *memBudgets) Save(keypool.KeyState)                            {}

func (b *memBudget) estimate(now time.Time) int64 {
	switch {
	case b.windowed:
		if !now.Before(b.end) {
			b.rem, b.at = b.limit, now
		}
	case b.slot > 0:
		if n := int64(now.Sub(b.at) / b.slot); n > 0 {
			b.rem, b.at = min(b.limit, b.rem+n), b.at.Add(time.Duration(n)*b.slot)
		}
	}
	return b.rem
}

func (m *memBudgets) Spend(ctx context.Context, req keypool.BudgetRequest) (keypool.BudgetGrant, error) {
	m.spends.Add(1)
	if m.fail.Load() {
		return keypool.BudgetGrant{}, errors.New("budget store down")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	b := m.budgets[req.Budget]
	if s := req.Seen; s != nil {
		seenAt := now.Add(-s.Age)
		end := seenAt.Add(s.Reset)
		switch {
		case b == nil:
			b = &memBudget{rem: s.Remaining, at: seenAt}
			m.budgets[req.Budget] = b
		case s.Windowed && end.Sub(b.end) > time.Second:
			b.rem, b.at = s.Remaining, seenAt // a new window
		default:
			b.rem = min(b.estimate(now), s.Remaining)
		}
		b.limit, b.end, b.slot, b.windowed = s.Limit, end, s.PerSlot, s.Windowed
	}
	if b == nil {
		return keypool.BudgetGrant{Granted: req.Want}, nil
	}
	g := min(req.Want, b.estimate(now))
	b.rem -= g
	if g > 0 {
		return keypool.BudgetGrant{Granted: g}, nil
	}
	if b.windowed {
		return keypool.BudgetGrant{Retry: b.end.Sub(now)}, nil
	}
	return keypool.BudgetGrant{Retry: max(b.slot-now.Sub(b.at), time.Millisecond)}, nil
}

// loadResult is what a replicaLoad saw: the upstream's attempts and 429s
// among them, and the requests that failed in a transport (no key within
// the wait, or an error).
type loadResult struct{ attempts, n429, failed int }

// replicaLoad offers three transports over one fake, round-robin, rate
// times what the keys' organizations allow in all, for d. store, when not
// nil, is shared by the three.
func replicaLoad(t *testing.T, store keypool.StateStore, rate float64, d time.Duration) (res loadResult) {
	orgs := []fakeopenai.Org{
		{ID: "org-aaaaaaaaaaaaaaaaaaaaaaaa", Slug: "acme", RPM: 60},
		{ID: "org-bbbbbbbbbbbbbbbbbbbbbbbb", Slug: "bolt", RPM: 60},
	}
	var keys []fakeopenai.Key
	for i := range 4 {
		keys = append(keys, fakeopenai.Key{Secret: fmt.Sprintf("sk-replica-%d", i), Orgs: orgs[i%2 : i%2+1]})
	}
	fake := fakeopenai.New(fakeopenai.Config{}, keys...)
	pipe, closePipe := fakeopenai.ServePipe(fake)
	defer func() {
		closePipe()
		fake.Close()
	}()
	var creds []keypool.Key
	for _, k := range keys {
		creds = append(creds, keypool.NewKey(k.Secret))
	}
	var replicas []*keypool.Transport
	for range 3 {
		opts := []keypool.Option{keypool.WithBase(pipe), keypool.WithMaxWait(5 * time.Second),
			keypool.WithUpstreams(keypool.Upstream{BaseURL: fakeopenai.PipeBaseURL, Keys: creds})}
		if store != nil {
			opts = append(opts, keypool.WithStateStore(store))
		}
		tr, err := keypool.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, tr)
	}
	capacity := float64(len(orgs)) * 60 / 60 // requests a second
	every := time.Duration(float64(time.Second) / (capacity * rate))
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; time.Duration(i)*every < d; i++ {
		tr := replicas[i%len(replicas)]
		wg.Go(func() {
			req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				failed.Add(1)
				return
			}
			if resp.StatusCode != http.StatusOK {
				failed.Add(1)
			}
			resp.Body.Close()
		})
		time.Sleep(every)
	}
	wg.Wait()
	for _, r := range fake.Records() {
		if r.Path != "/v1/chat/completions" {
			continue
		}
		res.attempts++
		if r.Status == http.StatusTooManyRequests {
			res.n429++
		}
	}
	res.failed = int(failed.Load())
	return res
}

// TestReplicasShareBudgets: three replicas offered 1.2x of what two
// organizations allow (the buckets start full, so over 10 minutes), round-
// robin. Alone, each believes it has the whole budget, and the upstream
// refuses many attempts; sharing budgets through a store, at most 1% of
// attempts plus one per scope (each key is a scope of its own until its
// first answer names its organization).
func TestReplicasShareBudgets(t *testing.T) {
	const rate, d, scopes = 1.2, 10 * time.Minute, 4 + 2
	var alone, shared loadResult
	synctest.Test(t, func(t *testing.T) {
		alone = replicaLoad(t, nil, rate, d)
	})
	store := &memBudgets{budgets: map[string]*memBudget{}}
	synctest.Test(t, func(t *testing.T) {
		shared = replicaLoad(t, store, rate, d)
	})
	t.Logf("alone: %d 429s of %d attempts; shared: %d of %d, %d Spends", alone.n429, alone.attempts, shared.n429, shared.attempts, store.spends.Load())
	if allowed := shared.attempts/100 + scopes; shared.n429 > allowed {
		t.Errorf("shared budgets: %d 429s of %d attempts, want at most %d", shared.n429, shared.attempts, allowed)
	}
	if alone.n429 < shared.attempts/10 {
		t.Errorf("alone: %d 429s of %d attempts: the load does not exceed what the organizations allow", alone.n429, alone.attempts)
	}
}

// TestSharedBudgetLeases: below capacity, a lease serves several requests:
// replicas ask the store less than once per two requests, and every
// request is served.
func TestSharedBudgetLeases(t *testing.T) {
	store := &memBudgets{budgets: map[string]*memBudget{}}
	synctest.Test(t, func(t *testing.T) {
		res := replicaLoad(t, store, 0.5, 10*time.Minute)
		if res.failed > 0 || res.n429 > 0 {
			t.Errorf("%d requests failed, %d 429s; want none below capacity", res.failed, res.n429)
		}
		if n := store.spends.Load(); n > int64(res.attempts/2) {
			t.Errorf("%d Spends for %d attempts: leases do not serve several requests", n, res.attempts)
		}
	})
}

// TestBudgetStoreDown: a store whose Spend fails never fails a request:
// the replicas spend alone, as without one, and ask it again only now and
// then.
func TestBudgetStoreDown(t *testing.T) {
	store := &memBudgets{budgets: map[string]*memBudget{}}
	store.fail.Store(true)
	synctest.Test(t, func(t *testing.T) {
		res := replicaLoad(t, store, 0.5, 2*time.Minute)
		if res.attempts < 100 {
			t.Fatalf("%d attempts: the load did not run", res.attempts)
		}
		if res.failed > 0 {
			t.Errorf("%d requests failed with the budget store down", res.failed)
		}
		// Each replica asks again once per rest of the store (5s), for
		// each organization's budget at most.
		if n, most := store.spends.Load(), int64(3*2*(2*time.Minute/(5*time.Second)+1)); n > most {
			t.Errorf("%d Spends in 2 minutes with the store down, want at most %d", n, most)
		}
	})
}
