package keypool

import (
	"testing"
	"time"
)

// limits builds the rate limits of an answer: requests limit, remaining and
// reset; retryAfter Unknown unless given.
func limits(limit, remaining int64, reset time.Duration) RateLimits {
	l := noLimits
	l.LimitRequests, l.RemainingRequests, l.ResetRequests = limit, remaining, reset
	return l
}

func testBudget(t *testing.T) (*Pool, *budget, *key) {
	t.Helper()
	p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("b", 1)})
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.ups[0]
	u.served["m"] = true
	b := p.makeBucket(u, "m", "m", false, t0)
	k := p.keys[0]
	return p, b.budgets[k.s.index], k
}

// TestBudgetShape: a budget tells a continuous refill from a fixed window by
// how the answers' reset moves as requests are spent, and goes back when
// the answers show a refill.
func TestBudgetShape(t *testing.T) {
	type obs struct {
		at        time.Duration // since t0
		remaining int64
		reset     time.Duration
	}
	for _, tc := range []struct {
		name     string
		answers  []obs
		windowed bool
	}{
		// 10 a minute, refilled continuously: each request moves the time
		// until full 6 s later.
		{"continuous", []obs{{0, 9, 6 * time.Second}, {time.Second, 8, 11 * time.Second}, {2 * time.Second, 7, 16 * time.Second},
			{3 * time.Second, 6, 21 * time.Second}}, false},
		// 10 a minute, in windows: the end stays where it is.
		{"windowed", []obs{{0, 9, 60 * time.Second}, {time.Second, 8, 59 * time.Second}, {2 * time.Second, 7, 58 * time.Second},
			{3 * time.Second, 6, 57 * time.Second}}, true},
		// One answer that looks like a window is no proof.
		{"one contradiction", []obs{{0, 9, 6 * time.Second}, {time.Second, 8, 5 * time.Second}, {2 * time.Second, 7, 16 * time.Second}}, false},
		// Windowed, then a refill before the window's end: continuous.
		{"back to continuous", []obs{{0, 9, 60 * time.Second}, {time.Second, 8, 59 * time.Second}, {2 * time.Second, 7, 58 * time.Second},
			{10 * time.Second, 8, 60 * time.Second}, {11 * time.Second, 9, 62 * time.Second}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, bud, k := testBudget(t)
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, a := range tc.answers {
				l := limits(10, a.remaining, a.reset)
				p.learn(bud, k, &l, t0.Add(a.at))
			}
			if bud.windowed != tc.windowed {
				t.Fatalf("windowed = %v, want %v", bud.windowed, tc.windowed)
			}
		})
	}
}

// TestWindowedAnswersOutOfOrder: ten requests go out at once when a window
// opens and their answers come back in any order. The count of a window only
// falls, so a late answer that shows more left neither gives headroom the
// window does not have nor passes for a continuous refill (the goodput
// harness under -race sent 16 requests to a window of 10 before this).
func TestWindowedAnswersOutOfOrder(t *testing.T) {
	p, bud, k := testBudget(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	// Two windows' answers teach the shape: 10 a minute, in windows.
	for i, rem := range []int64{9, 8, 7} {
		l := limits(10, rem, time.Minute-time.Duration(i)*time.Second)
		p.learn(bud, k, &l, t0.Add(time.Duration(i)*time.Second))
	}
	if !bud.windowed {
		t.Fatal("not windowed after a window's answers")
	}
	open := t0.Add(time.Minute)
	if h := p.headroom(bud, open); h != 10 {
		t.Fatalf("headroom at the window's start = %d, want 10", h)
	}
	bud.inflight = 10
	// The upstream served them in order (remaining 9 … 0); the answers
	// arrive shuffled, each released after it is learned.
	for _, rem := range []int64{3, 7, 9, 0, 8, 2, 6, 1, 5, 4} {
		l := limits(10, rem, time.Minute)
		p.learn(bud, k, &l, open)
		bud.inflight--
		if h := p.headroom(bud, open); h > 0 {
			t.Fatalf("after the answer with %d left: headroom %d, but the window is spent once all are in", rem, h)
		}
	}
	if !bud.windowed {
		t.Fatal("answers out of order passed for a continuous refill")
	}
	if want := open.Add(time.Minute); !bud.until.Equal(want) {
		t.Fatalf("rest until %v, want the window's end %v", bud.until, want)
	}
}

// TestBudgetSpent: a budget with no request left rests until a slot frees
// (continuous) or until its window ends (windowed), and is full again after
// the window.
func TestBudgetSpent(t *testing.T) {
	t.Run("continuous", func(t *testing.T) {
		p, bud, k := testBudget(t)
		p.mu.Lock()
		defer p.mu.Unlock()
		l := limits(10, 0, time.Minute)
		p.learn(bud, k, &l, t0)
		if want := t0.Add(6 * time.Second); !bud.until.Equal(want) {
			t.Fatalf("rests until %v, want %v", bud.until, want)
		}
		if got := bud.estimate(t0.Add(13 * time.Second)); got != 2 {
			t.Fatalf("estimate after 13s = %d, want 2", got)
		}
	})
	t.Run("windowed", func(t *testing.T) {
		p, bud, k := testBudget(t)
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, a := range []struct {
			rem   int64
			reset time.Duration
		}{{2, 40 * time.Second}, {1, 39 * time.Second}, {0, 38 * time.Second}} {
			l := limits(10, a.rem, a.reset)
			p.learn(bud, k, &l, t0.Add(time.Duration(i)*time.Second))
		}
		if !bud.windowed {
			t.Fatal("not taken for a window")
		}
		if want := t0.Add(40 * time.Second); !bud.until.Equal(want) {
			t.Fatalf("rests until %v, want the window's end %v", bud.until, want)
		}
		if got := bud.estimate(t0.Add(39 * time.Second)); got != 0 {
			t.Fatalf("estimate before the end = %d, want 0", got)
		}
		if got := bud.estimate(t0.Add(40 * time.Second)); got != 10 {
			t.Fatalf("estimate at the end = %d, want 10", got)
		}
	})
}

// TestRateLimitWait: after a 429 a budget rests as the answer says: its
// Retry-After, else its own reset, never sooner; a 429 while the estimate
// said a slot was free shows a window.
func TestRateLimitWait(t *testing.T) {
	requests429 := func(l RateLimits) *Answer {
		return &Answer{Status: 429, Error: &APIError{Status: 429, Type: "requests", Code: "rate_limit_exceeded"}, Limits: l}
	}
	t.Run("Retry-After wins", func(t *testing.T) {
		p, bud, _ := testBudget(t)
		l := limits(200, 0, 59900*time.Millisecond)
		l.RetryAfter = 3 * time.Second
		if d := p.rateLimitWait(bud, requests429(l)); d != 3*time.Second {
			t.Fatalf("wait %v", d)
		}
	})
	t.Run("the answer's own reset, not a slot's estimate", func(t *testing.T) {
		// A daily limit of 200 that answered 429 with reset 59.9s: not
		// 59.9s ÷ 200 ≈ 300ms.
		p, bud, k := testBudget(t)
		p.mu.Lock()
		l := limits(200, 1, 59900*time.Millisecond)
		p.learn(bud, k, &l, t0)
		p.mu.Unlock()
		if d := p.rateLimitWait(bud, requests429(limits(200, 0, 59900*time.Millisecond))); d != 59900*time.Millisecond {
			t.Fatalf("wait %v", d)
		}
	})
	t.Run("a 429 where a slot should be free shows a window", func(t *testing.T) {
		p, tr := p429(t)
		_ = tr
		h := takeKey(t, p, "m", t0)
		answer(p, h, okAnswer(10, 5, 30*time.Second), t0)
		h = takeKey(t, p, "m", t0.Add(time.Second))
		a := requests429(limits(10, 0, 29*time.Second))
		answer(p, h, a, t0.Add(time.Second))
		p.mu.Lock()
		defer p.mu.Unlock()
		if bud := p.ups[0].buckets["m"].budgets[h.k.s.index]; !bud.windowed || !bud.until.Equal(t0.Add(30*time.Second)) {
			t.Fatalf("windowed %v, rests until %v", bud.windowed, bud.until)
		}
	})
}

// p429 is a pool of one key for the 429 tests.
func p429(t *testing.T) (*Pool, *key) {
	p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("w", 1)})
	return p, p.keys[0]
}

// TestRestsAreCapped: no answer rests a budget or key longer than maxRest,
// whatever its headers say.
func TestRestsAreCapped(t *testing.T) {
	p, bud, k := testBudget(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	huge := time.Duration(1<<62 - 1)
	for _, l := range []RateLimits{
		limits(10, 0, huge),
		func() RateLimits { l := limits(10, 0, Unknown); l.RemainingTokens, l.ResetTokens = 0, huge; return l }(),
	} {
		p.learn(bud, k, &l, t0)
		if bud.until.After(t0.Add(defaultMaxRest)) {
			t.Fatalf("rests until %v, past the cap", bud.until)
		}
	}
	a := &Answer{Status: 429, Error: &APIError{Type: "requests"}, Limits: limits(10, 0, huge)}
	a.Limits.RetryAfter = huge
	if d := p.rateLimitWait(bud, a); d > defaultMaxRest {
		t.Fatalf("429 rest %v, past the cap", d)
	}
}

// FuzzBudgetLearn feeds a budget answers with any rate-limit values, in any
// order: it never panics, never rests past the cap, and its estimate stays
// within what it was told.
func FuzzBudgetLearn(f *testing.F) {
	f.Add(int64(10), int64(3), int64(6e9), int64(-1), int64(5e9), int64(20), int64(0), int64(1e9))
	f.Add(int64(0), int64(0), int64(0), int64(0), int64(-1), int64(-1), int64(-1), int64(-1))
	f.Add(int64(1<<62), int64(1<<62), int64(1<<62), int64(1<<62), int64(1), int64(2), int64(3), int64(4))
	f.Fuzz(func(t *testing.T, limit, rem, reset, retry, limit2, rem2, reset2, gap int64) {
		p, bud, k := testBudget(t)
		p.mu.Lock()
		defer p.mu.Unlock()
		now := t0
		for i, a := range [][3]int64{{limit, rem, reset}, {limit2, rem2, reset2}, {limit, rem2, reset}} {
			l := noLimits
			l.LimitRequests, l.RemainingRequests = max(a[0], Unknown), max(a[1], Unknown)
			if a[2] >= 0 {
				l.ResetRequests = time.Duration(a[2])
			}
			if i == 1 && retry >= 0 {
				l.RetryAfter = time.Duration(retry)
			}
			p.learn(bud, k, &l, now)
			if bud.until.After(now.Add(defaultMaxRest)) {
				t.Fatalf("rests until %v at %v", bud.until, now)
			}
			if e := bud.estimate(now.Add(time.Hour)); e < Unknown || bud.limitReq >= 0 && e > max(bud.limitReq, bud.remReq) {
				t.Fatalf("estimate %d with limit %d, remaining %d", e, bud.limitReq, bud.remReq)
			}
			a429 := &Answer{Status: 429, Error: &APIError{Type: "requests"}, Limits: l}
			if d := p.rateLimitWait(bud, a429); d <= 0 || d > defaultMaxRest {
				t.Fatalf("429 rest %v", d)
			}
			now = now.Add(time.Duration(gap & (1<<40 - 1)))
		}
	})
}
