package keypool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func testKeys(prefix string, n int) []Key {
	ks := make([]Key, n)
	for i := range ks {
		ks[i] = NewKey(fmt.Sprintf("sk-%s-%06d", prefix, i))
	}
	return ks
}

func testPool(t testing.TB, mutate func(*poolConfig), ups ...Upstream) *Pool {
	t.Helper()
	cfg := defaultConfig().pool
	cfg.now = func() time.Time { return t0 } // operator actions happen at t0
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := newPool(ups, cfg, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// held is a test's lease, with the model it was taken for.
type held struct {
	lease
	model string
}

// takeKey picks a key for model at now, failing the test if none.
func takeKey(t testing.TB, p *Pool, model string, now time.Time, tried ...*key) held {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ref := p.take(&pick{model: model, tried: tried}, now)
	if l.k == nil {
		t.Fatalf("no key for %s: %s", model, ref.reason)
	}
	return held{l, model}
}

// tryTake is take under the lock: a lease with a nil key when none is free.
func tryTake(p *Pool, r *pick, now time.Time) (lease, refusal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.take(r, now)
}

// answer feeds a synthetic answer to h, as the transport does.
func answer(p *Pool, h held, a *Answer, now time.Time) {
	p.answered(h.lease, a, DefaultPolicy().Classify(a), h.model, now)
	if DefaultPolicy().Classify(a) == OutcomeSuccess {
		p.mu.Lock()
		p.release(h.lease, now)
		p.mu.Unlock()
	}
}

// drop ends a hold without an answer.
func drop(p *Pool, h held, now time.Time) {
	p.mu.Lock()
	p.release(h.lease, now)
	p.mu.Unlock()
}

func okAnswer(limit, remaining int64, reset time.Duration) *Answer {
	l := noLimits
	l.LimitRequests, l.RemainingRequests, l.ResetRequests = limit, remaining, reset
	return &Answer{Status: 200, Limits: l}
}

func TestSelectOrder(t *testing.T) {
	t.Run("upstream priority", func(t *testing.T) {
		p := testPool(t, nil,
			Upstream{Name: "first", BaseURL: "https://a.test/v1", Keys: testKeys("a", 2)},
			Upstream{Name: "second", BaseURL: "https://b.test/v1", Keys: testKeys("b", 2)})
		for i := 0; i < 4; i++ {
			if e := takeKey(t, p, "gpt-4o", t0); e.k.up.Name != "first" {
				t.Fatalf("pick %d went to %s", i, e.k.up.Name)
			}
		}
	})
	t.Run("trial keys first, never for embeddings", func(t *testing.T) {
		for _, trialsFirst := range []bool{true, false} {
			p := testPool(t, func(c *poolConfig) { c.trialsFirst = trialsFirst },
				Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 2)})
			trial := p.keys[1]
			reply := func(e held) {
				if e.k == trial {
					answer(p, e, okAnswer(200, 150, time.Hour), t0) // trial, less headroom
				} else {
					answer(p, e, okAnswer(3000, 2990, time.Second), t0) // paid, lots of headroom
				}
			}
			for _, model := range []string{"gpt-4o", "text-embedding-3-small"} {
				e := takeKey(t, p, model, t0)
				reply(e)
				reply(takeKey(t, p, model, t0, e.k))
			}
			if !trial.trial && !p.keys[0].trial {
				t.Fatal("no key learned it is a trial")
			}
			for _, model := range []string{"gpt-4o", "text-embedding-3-small"} {
				e := takeKey(t, p, model, t0)
				wantTrial := trialsFirst && model == "gpt-4o"
				if e.k.trial != wantTrial {
					t.Errorf("trialsFirst=%v model %s: picked trial=%v", trialsFirst, model, e.k.trial)
				}
			}
		}
	})
	t.Run("most headroom, then least recently used", func(t *testing.T) {
		p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 3)})
		rem := map[*key]int64{p.keys[0]: 10, p.keys[1]: 500, p.keys[2]: 50}
		var tried []*key
		for range 3 {
			e := takeKey(t, p, "m", t0, tried...)
			tried = append(tried, e.k)
			answer(p, e, okAnswer(1000, rem[e.k], time.Minute), t0)
		}
		if e := takeKey(t, p, "m", t0); e.k != p.keys[1] {
			t.Fatalf("picked %s, want the key with most headroom", e.k.cred.id)
		}
		// Equal headroom: least recently used goes first, so picks rotate.
		q := testPool(t, func(c *poolConfig) { c.probeLimit = 100 }, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 3)})
		seen := map[*key]int{}
		for range 6 {
			e := takeKey(t, q, "m", t0)
			seen[e.k]++
			drop(q, e, t0)
		}
		for _, k := range q.keys {
			if seen[k] != 2 {
				t.Fatalf("LRU rotation uneven: %v", seen)
			}
		}
	})
	t.Run("tried keys are skipped", func(t *testing.T) {
		p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 3)})
		a := takeKey(t, p, "m", t0)
		b := takeKey(t, p, "m", t0, a.k)
		c := takeKey(t, p, "m", t0, a.k, b.k)
		if a.k == b.k || b.k == c.k || a.k == c.k {
			t.Fatal("a tried key was picked again")
		}
		if l, _ := tryTake(p, &pick{model: "m", tried: []*key{a.k, b.k, c.k}}, t0); l.k != nil {
			t.Fatal("picked a key although all were tried")
		}
	})
}

func TestAllowDeny(t *testing.T) {
	tests := []struct {
		allow, deny []string
		model       string
		want        bool
	}{
		{nil, nil, "gpt-4o", true},
		{[]string{"gpt-4o"}, nil, "gpt-4o", true},
		{[]string{"gpt-4o"}, nil, "gpt-4o-mini", false},
		{[]string{"gpt-4*"}, nil, "gpt-4o-mini", true},
		{[]string{"gpt-4*"}, []string{"*mini*"}, "gpt-4o-mini", false}, // allow first, then deny
		{nil, []string{"o1*"}, "o1-pro", false},
		{nil, []string{"o1*"}, "gpt-4o", true},
		{[]string{"*/audio/*"}, nil, "/v1/audio/transcriptions", true}, // a path stands in for the model
		{[]string{"a*b*c"}, nil, "axxbyyc", true},
		{[]string{"a*b*c"}, nil, "axxbyy", false},
		{[]string{"*"}, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v-%v-%s", tt.allow, tt.deny, tt.model), func(t *testing.T) {
			u := &upstream{Upstream: Upstream{Allow: tt.allow, Deny: tt.deny}}
			if got := u.allows(tt.model); got != tt.want {
				t.Fatalf("allows(%q) = %v, want %v", tt.model, got, tt.want)
			}
		})
	}
	t.Run("denied everywhere is a NoKeyError for a model not found", func(t *testing.T) {
		p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1), Deny: []string{"gpt-*"}})
		_, err := p.acquireWait(context.Background(), &pick{model: "gpt-5"}, t0.Add(time.Minute), func() time.Time { return t0 })
		var nk *NoKeyError
		if !errors.As(err, &nk) || !errors.Is(err, ErrNoKey) || !errors.Is(err, ErrModelNotFound) || nk.Reason != "no upstream serves this model" {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestNewPoolRejects(t *testing.T) {
	k := NewKey("sk-one")
	tests := []struct {
		name string
		ups  []Upstream
	}{
		{"no upstream", nil},
		{"empty base", []Upstream{{Keys: []Key{k}}}},
		{"bad scheme", []Upstream{{BaseURL: "ftp://x/v1", Keys: []Key{k}}}},
		{"credentials in URL", []Upstream{{BaseURL: "https://user:sk-one@x/v1", Keys: []Key{k}}}},
		{"no keys", []Upstream{{BaseURL: "https://x/v1"}}},
		{"zero key", []Upstream{{BaseURL: "https://x/v1", Keys: []Key{{}}}}},
		{"same key in two upstreams", []Upstream{{BaseURL: "https://x/v1", Keys: []Key{k}}, {BaseURL: "https://y/v1", Keys: []Key{k}}}},
		{"empty pattern", []Upstream{{BaseURL: "https://x/v1", Keys: []Key{k}, Allow: []string{""}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newPool(tt.ups, defaultConfig().pool, nil, t0)
			if err == nil {
				t.Fatal("accepted")
			}
			if containsSecret(err.Error()) {
				t.Fatalf("error shows a secret: %v", err)
			}
		})
	}
	t.Run("the same key twice in one upstream is one key", func(t *testing.T) {
		p := testPool(t, nil, Upstream{BaseURL: "https://x/v1", Keys: []Key{k, k}})
		if len(p.keys) != 1 {
			t.Fatalf("%d keys", len(p.keys))
		}
	})
}

func containsSecret(s string) bool {
	for _, w := range []string{"sk-one", "sk-k-", "sk-a-", "sk-b-"} {
		if len(s) > 0 && contains(s, w) {
			return true
		}
	}
	return false
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestNoFloodBeforeFirstAnswer(t *testing.T) {
	p := testPool(t, func(c *poolConfig) { c.probeLimit = 2 }, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 3)})
	var hold []held
	for range 6 {
		hold = append(hold, takeKey(t, p, "m", t0))
	}
	if l, ref := tryTake(p, &pick{model: "m"}, t0); l.k != nil || !ref.busy {
		t.Fatalf("a 7th request went out before any answer (busy=%v)", ref.busy)
	}
	// One answer says 10 remain: that key's scope may now take 10 less the
	// one still in flight on the model's own bucket (made by this answer),
	// while the keys that have not answered still hold their probe limit:
	// what went out on the shared bucket counts.
	answer(p, hold[0], okAnswer(100, 10, time.Minute), t0)
	k := hold[0].k
	n := 0
	for {
		l, _ := tryTake(p, &pick{model: "m"}, t0)
		if l.k == nil {
			break
		}
		if l.k != k {
			t.Fatalf("a key still unanswered took more than its probe limit")
		}
		n++
	}
	if n != 10-1 { // one of the key's first two requests is still in flight
		t.Fatalf("key took %d more, want 9", n)
	}
}

func TestCooldownAndRefill(t *testing.T) {
	p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
	e := takeKey(t, p, "gpt-4o", t0)
	// 3000 RPM: empty now, one slot back every 20ms.
	answer(p, e, okAnswer(3000, 0, time.Minute), t0)
	got, ref := tryTake(p, &pick{model: "gpt-4o"}, t0)
	if got.k != nil || !ref.freeAt.Equal(t0.Add(20*time.Millisecond)) {
		t.Fatalf("exhausted key picked or wrong free time %v", ref.freeAt)
	}
	// Another model is not affected: limits are per model.
	takeKey(t, p, "gpt-4o-mini", t0)
	e = takeKey(t, p, "gpt-4o", t0.Add(20*time.Millisecond))
	if e.bud.remReq != 1 {
		t.Fatalf("after one slot refilled, remaining = %d", e.bud.remReq)
	}
	if est := e.bud.estimate(t0.Add(time.Second)); est != 50 {
		t.Fatalf("estimate after 1s = %d, want 50", est)
	}
	info := p.snapshot(t0.Add(20 * time.Millisecond))[0]
	if info.State != StateReady || info.InFlight != 2 {
		t.Fatalf("snapshot %+v", info)
	}
}

func TestRateLimitedCoolsOneModel(t *testing.T) {
	var events []StateEvent
	p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
	p.observer = ObserverFuncs{OnStateChange: func(e StateEvent) { events = append(events, e) }}
	e := takeKey(t, p, "gpt-4o", t0)
	a := okAnswer(500, 0, 2*time.Minute)
	a.Status = 429
	// The 429 shows the model is served: it gets a bucket of its own, and
	// only it rests.
	a.Error = &APIError{Status: 429, Type: "requests", Code: "rate_limit_exceeded"}
	a.Limits.RetryAfter = 7 * time.Second
	answer(p, e, a, t0)
	info := p.snapshot(t0)[0]
	if info.State != StateCooling || !info.CoolingUntil.Equal(t0.Add(7*time.Second)) {
		t.Fatalf("state %v until %v", info.State, info.CoolingUntil)
	}
	if len(events) == 0 || events[len(events)-1].To != StateCooling || events[len(events)-1].Model != "gpt-4o" {
		t.Fatalf("events %+v", events)
	}
	takeKey(t, p, "gpt-4o-mini", t0) // other models still served
	takeKey(t, p, "gpt-4o", t0.Add(7*time.Second))
}

func TestStateTransitions(t *testing.T) {
	tests := []struct {
		name string
		a    *Answer
		want State
	}{
		{"revoked", &Answer{Status: 401, Error: &APIError{Type: "invalid_request_error", Code: "invalid_api_key"}}, StateRevoked},
		{"over quota", &Answer{Status: 429, Error: &APIError{Type: "insufficient_quota", Code: "insufficient_quota"}}, StateOverQuota},
		{"terminated", &Answer{Status: 429, Error: &APIError{Type: "access_terminated"}}, StateRevoked},
		{"ok", &Answer{Status: 200}, StateReady},
		{"client error leaves it unchecked", &Answer{Status: 400, Error: &APIError{Type: "invalid_request_error"}}, StateUnchecked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 2)})
			e := takeKey(t, p, "m", t0)
			tt.a.Limits = noLimits
			answer(p, e, tt.a, t0)
			info, _ := p.keyAt(e.k.cred.id, t0)
			if info.State != tt.want {
				t.Fatalf("state %v, want %v", info.State, tt.want)
			}
			if !tt.want.Usable() {
				for range 5 {
					got := takeKey(t, p, "m", t0)
					if got.k == e.k {
						t.Fatal("an unusable key was picked")
					}
					drop(p, got, t0)
				}
				if err := p.Enable(e.k.cred.id); err != nil {
					t.Fatal(err)
				}
				if info, _ := p.keyAt(e.k.cred.id, t0); info.State != StateUnchecked {
					t.Fatalf("after Enable: %v", info.State)
				}
			}
		})
	}
	t.Run("disable and enable", func(t *testing.T) {
		p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
		id := p.keys[0].cred.id
		if err := p.Disable(id, "maintenance"); err != nil {
			t.Fatal(err)
		}
		if l, _ := tryTake(p, &pick{model: "m"}, t0); l.k != nil {
			t.Fatal("disabled key picked")
		}
		if err := p.Enable(id); err != nil {
			t.Fatal(err)
		}
		takeKey(t, p, "m", t0)
		if err := p.Disable("kp_nope", "x"); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown ID: %v; want ErrUnknownKey", err)
		}
		// The error names an ID, and only what has an ID's form: an
		// operator may paste a secret where an ID belongs.
		const unknown KeyID = "kp_0123456789abcdef"
		if err := p.Enable(unknown); !errors.Is(err, ErrUnknownKey) || err.Error() != "keypool: unknown key "+string(unknown) {
			t.Errorf("Enable(%s) = %v", unknown, err)
		}
		if err := p.Disable(KeyID(keyTestSecret), "x"); !errors.Is(err, ErrUnknownKey) || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("Disable(a secret) = %v", err)
		}
	})
	t.Run("model not found removes the model only", func(t *testing.T) {
		p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
		e := takeKey(t, p, "gpt-5", t0)
		answer(p, e, &Answer{Status: 404, Error: &APIError{Code: "model_not_found"}, Limits: noLimits}, t0)
		got, ref := tryTake(p, &pick{model: "gpt-5"}, t0)
		if got.k != nil || ref.busy || !ref.freeAt.IsZero() || !ref.notFound {
			t.Fatalf("key still offered for a model it lacks: %+v", ref)
		}
		takeKey(t, p, "gpt-4o", t0)
		if info := p.snapshot(t0)[0]; len(info.Lacks) != 1 || info.Lacks[0] != "gpt-5" {
			t.Fatalf("lacks %v", info.Lacks)
		}
	})
	t.Run("repeated server errors cool the key, success resets", func(t *testing.T) {
		p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
		fail := &Answer{Status: 500, Limits: noLimits}
		e := takeKey(t, p, "m", t0)
		answer(p, e, fail, t0)
		e = takeKey(t, p, "m", t0) // one failure: still usable
		answer(p, e, fail, t0)
		got, ref := tryTake(p, &pick{model: "m"}, t0)
		if got.k != nil || !ref.freeAt.Equal(t0.Add(2*time.Second)) {
			t.Fatalf("after two failures: picked=%v freeAt=%v", got.k != nil, ref.freeAt)
		}
		e = takeKey(t, p, "m", t0.Add(2*time.Second))
		answer(p, e, okAnswer(100, 99, time.Second), t0.Add(2*time.Second))
		if p.keys[0].health.inARow != 0 {
			t.Fatal("success did not reset the failures in a row")
		}
	})
}

func TestWaitForKey(t *testing.T) {
	t.Run("waits for a cooldown within the budget", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
			start := time.Now()
			e := takeKey(t, p, "m", start)
			answer(p, e, okAnswer(60, 0, time.Minute), start) // a slot back in 1s
			got, err := p.acquireWait(context.Background(), &pick{model: "m"}, start.Add(5*time.Second), time.Now)
			if err != nil || got.k == nil {
				t.Fatal(err)
			}
			if waited := time.Since(start); waited != time.Second {
				t.Fatalf("waited %v, want 1s", waited)
			}
		})
	})
	t.Run("fails at once when the first key frees up after the budget", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
			start := time.Now()
			e := takeKey(t, p, "m", start)
			answer(p, e, okAnswer(200, 0, 24*time.Hour), start) // trial, per day: a slot in 7m12s
			_, err := p.acquireWait(context.Background(), &pick{model: "m"}, start.Add(20*time.Second), time.Now)
			var nk *NoKeyError
			if !errors.As(err, &nk) || !nk.FreeAt.Equal(start.Add(432*time.Second)) {
				t.Fatalf("err = %v", err)
			}
			if time.Since(start) != 0 {
				t.Fatal("waited although the key frees up too late")
			}
		})
	})
	t.Run("waits for a busy key to answer; cancel stops the wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := testPool(t, func(c *poolConfig) { c.probeLimit = 1 }, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
			start := time.Now()
			e := takeKey(t, p, "m", start)
			go func() {
				time.Sleep(3 * time.Second) // the upstream takes 3s to answer
				answer(p, e, okAnswer(100, 50, time.Minute), time.Now())
			}()
			got, err := p.acquireWait(context.Background(), &pick{model: "m"}, start.Add(10*time.Second), time.Now)
			if err != nil || got.k != e.k || time.Since(start) != 3*time.Second {
				t.Fatalf("got %v err %v after %v", got, err, time.Since(start))
			}
			// Now busy again (probe limit 1 does not apply after an answer, but
			// hold every slot): a cancelled caller stops waiting at once.
			ctx, cancel := context.WithCancel(context.Background())
			for {
				if x, _ := tryTake(p, &pick{model: "m"}, time.Now()); x.k == nil {
					break
				}
			}
			go func() { time.Sleep(time.Second); cancel() }()
			_, err = p.acquireWait(ctx, &pick{model: "m"}, time.Now().Add(10*time.Second), time.Now)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v", err)
			}
		})
	})
}

func TestPoolConcurrent(t *testing.T) {
	p := testPool(t, func(c *poolConfig) { c.probeLimit = 3 }, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 10)})
	var mu sync.Mutex
	inflight := map[*key]int{}
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				e, err := p.acquireWait(context.Background(), &pick{model: "m"}, time.Now().Add(time.Minute), time.Now)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				inflight[e.k]++
				if inflight[e.k] > 3 {
					t.Errorf("key %s has %d in flight before any answer", e.k.cred.id, inflight[e.k])
				}
				mu.Unlock()
				mu.Lock()
				inflight[e.k]--
				mu.Unlock()
				p.mu.Lock()
				p.release(e, time.Now())
				p.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, info := range p.snapshot(time.Now()) {
		if info.InFlight != 0 {
			t.Fatalf("%s left %d in flight", info.ID, info.InFlight)
		}
	}
}

func TestBucketEviction(t *testing.T) {
	p := testPool(t, func(c *poolConfig) { c.maxBuckets = 2 }, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 1)})
	// A model gets a bucket once an answer shows it is served.
	serve := func(model string) held {
		h := takeKey(t, p, model, t0)
		answer(p, h, okAnswer(100, 90, time.Minute), t0)
		return takeKey(t, p, model, t0)
	}
	a := serve("a") // held: bucket a busy
	drop(p, serve("b"), t0)
	drop(p, serve("c"), t0) // evicts b, the idle one
	if u := p.ups[0]; len(u.buckets) != 2 || u.buckets["a"] == nil || u.buckets["c"] == nil {
		t.Fatalf("buckets after eviction: %v", len(u.buckets))
	}
	d := serve("d") // evicts c; a is still busy
	// a and d busy: no room for e, which is served from the shared bucket.
	e := takeKey(t, p, "e", t0)
	answer(p, e, okAnswer(100, 90, time.Minute), t0)
	if u := p.ups[0]; len(u.buckets) != 2 || u.buckets["e"] != nil {
		t.Fatalf("buckets %d, e has one: %v", len(u.buckets), u.buckets["e"] != nil)
	}
	takeKey(t, p, "e", t0)
	_, _ = a, d
}

// benchPool builds a pool of n keys for one model with half of them cooling
// and the rest with varied headroom.
func benchPool(b *testing.B, n int) *Pool {
	p := testPool(b, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("bench", n)})
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.ups[0]
	u.served["gpt-4o"] = true
	bk := p.makeBucket(u, "gpt-4o", "gpt-4o", false, t0)
	for i, k := range p.keys {
		bud := bk.budgets[k.s.index]
		l := noLimits
		l.LimitRequests, l.RemainingRequests, l.ResetRequests = 10000, int64(5000+i%997), time.Minute
		p.learn(bud, k, &l, t0)
		p.place(bud, t0)
		if i%2 == 0 {
			p.restBudget(bud, k, t0.Add(time.Hour), "bench", t0)
		}
	}
	p.events = nil
	return p
}

func BenchmarkSelect(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			p := benchPool(b, n)
			r := &pick{model: "gpt-4o"}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				p.mu.Lock()
				l, _ := p.take(r, t0)
				p.release(l, t0)
				p.mu.Unlock()
			}
		})
	}
}

// BenchmarkStreamPickManyUnverified: 10,000 keys, 90% of them in unverified
// organizations that may not stream gpt-5. Streams of gpt-5 use a bucket of
// their own without those keys, so a pick stays O(log n).
func BenchmarkStreamPickManyUnverified(b *testing.B) {
	p := testPool(b, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("unv", 10_000)})
	p.mu.Lock()
	u := p.ups[0]
	u.served["gpt-5"] = true
	p.noStream["gpt-5"] = true
	for i, k := range p.keys {
		if i%10 != 0 {
			k.s.noStream = map[string]bool{"gpt-5": true}
		}
	}
	p.makeBucket(u, "gpt-5", "gpt-5", false, t0)
	p.makeBucket(u, "gpt-5\x00stream", "gpt-5", true, t0) // the streams' bucket, made at the first stream otherwise
	p.mu.Unlock()
	r := &pick{model: "gpt-5", stream: true}
	b.ReportAllocs()
	for b.Loop() {
		p.mu.Lock()
		l, _ := p.take(r, t0)
		if l.k == nil || l.k.s.noStream["gpt-5"] {
			b.Fatal("picked a key that may not stream gpt-5")
		}
		p.release(l, t0)
		p.mu.Unlock()
	}
}

func TestUpstreamNamesAreUnique(t *testing.T) {
	p := testPool(t, nil,
		Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("x", 1)},
		Upstream{BaseURL: "https://a.test/v2", Keys: testKeys("y", 1)},
		Upstream{Name: "a.test", BaseURL: "https://b.test/v1", Keys: testKeys("z", 1)})
	var names []string
	for _, u := range p.ups {
		names = append(names, u.Name)
	}
	if want := []string{"a.test", "a.test#2", "a.test#3"}; !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
}
