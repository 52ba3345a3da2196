package redisstore_test

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/redisstore"
)

// budgetName is a budget's name as the pool makes it: upstream, scope and
// model, NUL-joined.
const budgetName = "https://api.openai.com/v1\x00org-test\x00gpt-4o"

// budgetEnv is a Redis for budget tests: a prefix of the test's own, a
// plain client, and the key of budgetName under the prefix.
type budgetEnv struct {
	t      testing.TB
	url    string
	prefix string
	rc     *redis.Client
	key    string
}

func newBudgetEnv(t testing.TB) *budgetEnv {
	addr := testRedis(t)
	p := prefix(t, addr)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rc.Close() })
	return &budgetEnv{t: t, url: "redis://" + addr, prefix: p, rc: rc, key: p + "budget:" + budgetName}
}

// store is a Store of the env's prefix, closed at the end of the test.
func (e *budgetEnv) store(opt redisstore.Options) *redisstore.Store {
	opt.Prefix = e.prefix
	s := newStore(e.t, e.url, opt)
	e.t.Cleanup(func() { s.Close() })
	return s
}

// spend spends from budgetName, failing the test on an error.
func spend(t testing.TB, s *redisstore.Store, want int64, seen *keypool.BudgetSeen) keypool.BudgetGrant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	g, err := s.Spend(ctx, keypool.BudgetRequest{Budget: budgetName, Want: want, Seen: seen})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func wantGrant(t testing.TB, what string, g keypool.BudgetGrant, granted int64) {
	t.Helper()
	if g.Granted != granted {
		t.Errorf("%s: granted %d, want %d", what, g.Granted, granted)
	}
}

// TestSpendConcurrent has 4 Stores (replicas) of 8 goroutines each spend
// one windowed budget whose window does not end during the test: together
// they are granted its requests exactly, never one more.
func TestSpendConcurrent(t *testing.T) {
	const limit = 200
	e := newBudgetEnv(t)
	stores := []*redisstore.Store{e.store(redisstore.Options{}), e.store(redisstore.Options{}),
		e.store(redisstore.Options{}), e.store(redisstore.Options{})}
	var total atomic.Int64
	total.Add(spend(t, stores[0], 1, &keypool.BudgetSeen{Limit: limit, Remaining: limit, Reset: time.Hour, Windowed: true}).Granted)

	var wg sync.WaitGroup
	var retryBad atomic.Int64
	for i, s := range stores {
		for j := range 8 {
			wg.Go(func() {
				want := int64(1 + (i+j)%3)
				for range 1000 {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					g, err := s.Spend(ctx, keypool.BudgetRequest{Budget: budgetName, Want: want})
					cancel()
					if err != nil {
						t.Error(err)
						return
					}
					if g.Granted < 0 || g.Granted > want {
						t.Errorf("granted %d of %d", g.Granted, want)
					}
					if g.Granted == 0 {
						if g.Retry < 59*time.Minute || g.Retry > time.Hour {
							retryBad.Add(1)
						}
						return
					}
					total.Add(g.Granted)
				}
			})
		}
	}
	wg.Wait()
	if n := total.Load(); n != limit {
		t.Errorf("granted %d in all, want the limit %d exactly", n, limit)
	}
	if n := retryBad.Load(); n > 0 {
		t.Errorf("%d spends of a spent window said Retry out of (59m, 1h]", n)
	}
	var spends uint64
	for _, s := range stores {
		st := s.Stats()
		spends += st.Spends
		if st.SpendErrors != 0 || st.Errors != 0 {
			t.Errorf("stats %+v: errors", st)
		}
	}
	if spends < 1+limit/3+32 {
		t.Errorf("Spends = %d in all, want at least %d", spends, 1+limit/3+32)
	}
}

// TestSpendRefill drains a continuous budget that frees a request every
// 50ms, then spends as requests free: it gets them back at that rate, no
// faster.
func TestSpendRefill(t *testing.T) {
	const slot = 50 * time.Millisecond
	e := newBudgetEnv(t)
	s := e.store(redisstore.Options{})
	seen := &keypool.BudgetSeen{Limit: 10, Remaining: 10, Reset: 0, PerSlot: slot}
	drained := time.Now()
	wantGrant(t, "the first spend", spend(t, s, 10, seen), 10)
	g := spend(t, s, 10, nil)
	if early := int64(time.Since(drained)/slot) + 1; g.Granted > early {
		t.Errorf("right after the drain: granted %d, want at most %d", g.Granted, early)
	}
	got := g.Granted
	for got < 5 {
		if time.Since(drained) > 3*time.Second {
			t.Fatalf("only %d requests freed in 3s at one per %v", got, slot)
		}
		g := spend(t, s, 1, nil)
		if g.Granted == 0 {
			if g.Retry <= 0 || g.Retry > slot {
				t.Fatalf("Retry = %v, want in (0, %v]", g.Retry, slot)
			}
			time.Sleep(g.Retry) // a real refill takes real time
			continue
		}
		got += g.Granted
	}
	took := time.Since(drained)
	if most := int64(took/slot) + 1; got > most {
		t.Errorf("%d requests freed in %v, want at most %d at one per %v", got, took, most, slot)
	}
	if took < 4*slot {
		t.Errorf("5 requests freed in %v, want at least %v", took, 4*slot)
	}
}

// TestSpendSeen: an answer lowers what a continuous budget holds but never
// raises it; a window's answer of a later window replaces it, one of an
// earlier window is ignored.
func TestSpendSeen(t *testing.T) {
	t.Run("continuous", func(t *testing.T) {
		e := newBudgetEnv(t)
		s := e.store(redisstore.Options{})
		seen := func(rem int64) *keypool.BudgetSeen {
			return &keypool.BudgetSeen{Limit: 100, Remaining: rem, Reset: time.Hour, PerSlot: time.Hour}
		}
		wantGrant(t, "seen 50, want 10", spend(t, s, 10, seen(50)), 10)
		wantGrant(t, "seen 20, want 1", spend(t, s, 1, seen(20)), 1)
		wantGrant(t, "seen 80, want 100", spend(t, s, 100, seen(80)), 19)
		g := spend(t, s, 1, seen(90))
		wantGrant(t, "seen 90 of a spent budget", g, 0)
		if g.Retry < 59*time.Minute || g.Retry > time.Hour {
			t.Errorf("Retry = %v, want the rest of the slot, about an hour", g.Retry)
		}
	})
	t.Run("window", func(t *testing.T) {
		e := newBudgetEnv(t)
		s := e.store(redisstore.Options{})
		seen := func(rem int64, reset time.Duration) *keypool.BudgetSeen {
			return &keypool.BudgetSeen{Limit: 10, Remaining: rem, Reset: reset, Windowed: true}
		}
		wantGrant(t, "the window's first spend", spend(t, s, 10, seen(10, time.Hour)), 10)
		g := spend(t, s, 1, nil)
		wantGrant(t, "a spent window", g, 0)
		if g.Retry < 59*time.Minute || g.Retry > time.Hour {
			t.Errorf("Retry = %v, want the rest of the window, about an hour", g.Retry)
		}
		wantGrant(t, "an answer of the same window, saying 9 left", spend(t, s, 5, seen(9, time.Hour-time.Second)), 0)
		wantGrant(t, "an answer of the next window, saying 9 left", spend(t, s, 5, seen(9, 2*time.Hour)), 5)
		wantGrant(t, "a late answer of the last window, saying 0 left", spend(t, s, 1, seen(0, time.Hour)), 1)
		wantGrant(t, "the rest", spend(t, s, 10, nil), 3)
		if g := spend(t, s, 1, nil); g.Retry < 119*time.Minute || g.Retry > 2*time.Hour {
			t.Errorf("Retry = %v, want the rest of the next window, about 2h: the late answer moved its end", g.Retry)
		}
	})
	t.Run("no reset", func(t *testing.T) {
		// An answer that states no reset says nothing of when its window
		// ends, or its bucket is full: nothing refills until one does.
		e := newBudgetEnv(t)
		s := e.store(redisstore.Options{})
		for _, win := range []bool{true, false} {
			g := spend(t, s, 1, &keypool.BudgetSeen{Limit: 5, Remaining: 0, Windowed: win})
			if g != (keypool.BudgetGrant{}) {
				t.Errorf("windowed %v: %+v, want nothing granted and Retry 0 (not known)", win, g)
			}
		}
	})
	t.Run("window ends", func(t *testing.T) {
		e := newBudgetEnv(t)
		s := e.store(redisstore.Options{})
		g := spend(t, s, 1, &keypool.BudgetSeen{Limit: 5, Remaining: 0, Reset: 100 * time.Millisecond, Windowed: true})
		wantGrant(t, "a spent window", g, 0)
		if g.Retry <= 0 || g.Retry > 100*time.Millisecond {
			t.Fatalf("Retry = %v, want in (0, 100ms]", g.Retry)
		}
		time.Sleep(g.Retry) // the window's end is real time
		for deadline := time.Now().Add(time.Second); ; {
			if g = spend(t, s, 10, nil); g.Granted > 0 || time.Now().After(deadline) {
				break
			}
		}
		wantGrant(t, "once the window ended", g, 5)
		// The next window's end is not known until an answer states it:
		// it counts down, and never refills by itself.
		g = spend(t, s, 10, nil)
		if g.Granted != 0 || g.Retry != 0 {
			t.Errorf("the next window spent: %+v, want nothing granted and Retry 0 (not known)", g)
		}
		wantGrant(t, "an answer of the window that ended", spend(t, s, 10, &keypool.BudgetSeen{Limit: 5, Remaining: 5, Reset: 10 * time.Millisecond, Windowed: true, Age: 50 * time.Millisecond}), 0)
		wantGrant(t, "an answer of the next window", spend(t, s, 10, &keypool.BudgetSeen{Limit: 5, Remaining: 4, Reset: time.Hour, Windowed: true}), 0)
		if ms, _ := e.rc.HGet(context.Background(), e.key, "end").Int64(); ms == 0 {
			t.Error("the answer of the next window did not set its end")
		}
	})
}

// TestSpendAge: an answer's Age moves its observation earlier, so that its
// slot (or window) ends that much sooner.
func TestSpendAge(t *testing.T) {
	for _, tt := range []struct {
		name     string
		seen     keypool.BudgetSeen
		min, max time.Duration
	}{
		{"continuous, fresh", keypool.BudgetSeen{Limit: 10, PerSlot: time.Second}, 800 * time.Millisecond, time.Second},
		{"continuous, 900ms old", keypool.BudgetSeen{Limit: 10, PerSlot: time.Second, Age: 900 * time.Millisecond}, time.Millisecond, 100 * time.Millisecond},
		{"window, fresh", keypool.BudgetSeen{Limit: 10, Reset: 10 * time.Second, Windowed: true}, 9800 * time.Millisecond, 10 * time.Second},
		{"window, 4s old", keypool.BudgetSeen{Limit: 10, Reset: 10 * time.Second, Windowed: true, Age: 4 * time.Second}, 5800 * time.Millisecond, 6 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBudgetEnv(t)
			g := spend(t, e.store(redisstore.Options{}), 1, &tt.seen)
			if g.Granted != 0 || g.Retry < tt.min || g.Retry > tt.max {
				t.Errorf("got %+v, want nothing granted and Retry in [%v, %v]", g, tt.min, tt.max)
			}
		})
	}
}

// TestSpendExtremes: answers with huge numbers are stored as numbers the
// next Spend reads back, not taken for another program's data.
func TestSpendExtremes(t *testing.T) {
	e := newBudgetEnv(t)
	s := e.store(redisstore.Options{})
	const forever = time.Duration(1<<63 - 1)
	wantGrant(t, "a huge window, old beyond 1970", spend(t, s, 1<<62, &keypool.BudgetSeen{Limit: 1 << 62, Remaining: 1 << 62, Reset: forever, Windowed: true, Age: forever}), 1<<50)
	wantGrant(t, "the next spend", spend(t, s, 1<<62, &keypool.BudgetSeen{Limit: 1 << 62, Remaining: 1 << 62, PerSlot: forever, Reset: forever, Age: forever}), 0)
	if g := spend(t, s, 1, nil); g.Granted != 0 || g.Retry <= 0 {
		t.Errorf("a spent huge budget: %+v, want nothing granted and a Retry", g)
	}
	if n := s.Stats().Skipped; n != 0 {
		t.Errorf("Skipped = %d: the Store took its own data for another program's", n)
	}
}

// TestSpendUnknown: a budget Redis holds nothing of grants what is asked,
// and is not stored; a stated one expires.
func TestSpendUnknown(t *testing.T) {
	e := newBudgetEnv(t)
	s := e.store(redisstore.Options{})
	ctx := context.Background()
	if g := spend(t, s, 7, nil); g != (keypool.BudgetGrant{Granted: 7}) {
		t.Errorf("an unknown budget: %+v, want 7 granted", g)
	}
	if n := e.rc.Exists(ctx, e.key).Val(); n != 0 {
		t.Errorf("an unknown budget left a key behind")
	}
	spend(t, s, 1, &keypool.BudgetSeen{Limit: 10, Remaining: 10, Reset: time.Hour, Windowed: true})
	if ttl := e.rc.PTTL(ctx, e.key).Val(); ttl < 119*time.Minute || ttl > 2*time.Hour {
		t.Errorf("TTL %v of an hour's window, want about 2h", ttl)
	}
	spend(t, s, 1, &keypool.BudgetSeen{Limit: 10, Remaining: 10, PerSlot: 10 * time.Millisecond})
	if ttl := e.rc.PTTL(ctx, e.key).Val(); ttl < 59*time.Second || ttl > time.Minute {
		t.Errorf("TTL %v of a bucket full in 20ms, want a minute", ttl)
	}
}

// TestSpendBadData: a budget key that holds what does not decode is taken
// for no budget, deleted, counted and logged; an answer then states it
// afresh.
func TestSpendBadData(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		put  func(rc *redis.Client, key string)
	}{
		{"a string", func(rc *redis.Client, key string) { rc.Set(ctx, key, "sk-SECRET other data", 0) }},
		{"a list", func(rc *redis.Client, key string) { rc.RPush(ctx, key, "sk-SECRET") }},
		{"words", func(rc *redis.Client, key string) {
			rc.HSet(ctx, key, "limit", "ten", "rem", "5", "at", "0", "slot", "0", "win", "0", "end", "0")
		}},
		{"a field missing", func(rc *redis.Client, key string) {
			rc.HSet(ctx, key, "limit", "10", "rem", "5", "at", "0", "slot", "0", "win", "0")
		}},
		{"negative", func(rc *redis.Client, key string) {
			rc.HSet(ctx, key, "limit", "10", "rem", "-5", "at", "0", "slot", "0", "win", "0", "end", "0")
		}},
		{"above the limit", func(rc *redis.Client, key string) {
			rc.HSet(ctx, key, "limit", "10", "rem", "50", "at", "0", "slot", "0", "win", "0", "end", "0")
		}},
		{"not a number", func(rc *redis.Client, key string) {
			rc.HSet(ctx, key, "limit", "nan", "rem", "inf", "at", "1e400", "slot", "0.5", "win", "2", "end", "0")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newBudgetEnv(t)
			var logs bytes.Buffer
			s := e.store(redisstore.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			tt.put(e.rc, e.key)
			if g := spend(t, s, 3, nil); g != (keypool.BudgetGrant{Granted: 3}) {
				t.Errorf("no answer: %+v, want 3 granted (no budget known)", g)
			}
			if n := e.rc.Exists(ctx, e.key).Val(); n != 0 {
				t.Error("the key that does not decode is still there")
			}
			tt.put(e.rc, e.key)
			wantGrant(t, "with an answer", spend(t, s, 3, &keypool.BudgetSeen{Limit: 10, Remaining: 2, Reset: time.Hour, Windowed: true}), 2)
			h := e.rc.HGetAll(ctx, e.key).Val()
			if len(h) != 6 || h["limit"] != "10" || h["rem"] != "0" || h["win"] != "1" {
				t.Errorf("the budget stored afresh is %q", h)
			}
			for _, f := range []string{"at", "slot", "end"} {
				if _, err := strconv.ParseInt(h[f], 10, 64); err != nil {
					t.Errorf("%s = %q: not a whole number", f, h[f])
				}
			}
			if st := s.Stats(); st.Skipped != 2 || st.SpendErrors != 0 {
				t.Errorf("stats %+v, want 2 skipped and no error", st)
			}
			if n := strings.Count(logs.String(), "budget reset"); n != 2 || strings.Contains(logs.String(), "SECRET") {
				t.Errorf("want 2 resets logged, not what the key held:\n%s", logs.String())
			}
		})
	}
}

// TestSpendBadRequest: requests that make no sense are refused without a
// call to Redis, and are not counted as its failures.
func TestSpendBadRequest(t *testing.T) {
	s := newStore(t, "redis://"+closedPort(t), redisstore.Options{})
	defer s.Close()
	for _, req := range []keypool.BudgetRequest{
		{Want: 1},
		{Budget: budgetName, Want: 0},
		{Budget: budgetName, Want: -3},
		{Budget: budgetName, Want: 1, Seen: &keypool.BudgetSeen{Limit: -1}},
		{Budget: budgetName, Want: 1, Seen: &keypool.BudgetSeen{Limit: 10, Remaining: -1}},
		{Budget: budgetName, Want: 1, Seen: &keypool.BudgetSeen{Limit: 10, Reset: -time.Second}},
		{Budget: budgetName, Want: 1, Seen: &keypool.BudgetSeen{Limit: 10, PerSlot: -time.Second}},
		{Budget: budgetName, Want: 1, Seen: &keypool.BudgetSeen{Limit: 10, Age: -time.Second}},
	} {
		g, err := s.Spend(context.Background(), req)
		if err == nil || !strings.HasPrefix(err.Error(), "redisstore: spend") || g != (keypool.BudgetGrant{}) {
			t.Errorf("Spend(%+v) = %+v, %v: want a redisstore error", req, g, err)
		}
	}
	if st := s.Stats(); st.Errors != 0 || st.SpendErrors != 0 || st.Spends != 0 {
		t.Errorf("stats %+v: bad requests were counted", st)
	}
}

// TestSpendRedisDown: with Redis out of reach Spend fails within its
// context's deadline, counts it, and logs the outage once, never the
// password; with Redis hung too.
func TestSpendRedisDown(t *testing.T) {
	hung := hungRedis(t)
	for _, tt := range []struct{ name, addr string }{{"closed", closedPort(t)}, {"hung", hung.Addr().String()}} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s := newStore(t, "redis://:pw-SECRET-redis@"+tt.addr+"/0", redisstore.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			defer s.Close()
			for range 3 {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				start := time.Now()
				g, err := s.Spend(ctx, keypool.BudgetRequest{Budget: budgetName, Want: 5})
				took := time.Since(start)
				cancel()
				if err == nil || g.Granted != 0 {
					t.Errorf("Spend = %+v, %v: want an error", g, err)
				}
				if took > 400*time.Millisecond {
					t.Errorf("Spend took %v with a deadline of 200ms", took)
				}
				if strings.Contains(err.Error(), "pw-SECRET") {
					t.Errorf("the error shows the password: %v", err)
				}
			}
			if st := s.Stats(); st.SpendErrors != 3 || st.Errors != 3 || st.Outages != 1 {
				t.Errorf("stats %+v, want 3 spend errors, 3 errors, 1 outage", st)
			}
			if n := strings.Count(logs.String(), "out of reach;"); n != 1 || strings.Contains(logs.String(), "pw-SECRET") {
				t.Errorf("want the outage logged once, without the password:\n%s", logs.String())
			}
		})
	}
}

// BenchmarkSpend is one Spend after another on loopback: a script call,
// one round trip, each.
func BenchmarkSpend(b *testing.B) {
	e := newBudgetEnv(b)
	s := e.store(redisstore.Options{})
	spend(b, s, 1, &keypool.BudgetSeen{Limit: 1 << 40, Remaining: 1 << 40, Reset: time.Hour, Windowed: true})
	ctx := context.Background()
	req := keypool.BudgetRequest{Budget: budgetName, Want: 4}
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		if _, err := s.Spend(ctx, req); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}
