package main

import (
	"fmt"
	"testing"
	"time"
)

// TestGoodput runs the goodput harness (every kind at 1.2x and 0.8x of the
// capacity, in fake time) and logs its table:
//
//	go test -run TestGoodput -v ./internal/loadtest
//
// It checks that the numbers add up, and the goals the pool meets: at 1.2x
// at least 95% of the capacity served with upstream 429s at most 1% of the
// attempts plus one per budget (the one that teaches a fixed window); at
// 0.8x no client sees an error; and every refusal says when to come back
// (Retry-After).
func TestGoodput(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a load run per limit kind")
	}
	start := time.Now()
	table := Goodput(t, GoodputConfig{})
	t.Logf("\n%s(%v of real time)", table, time.Since(start).Round(time.Millisecond))

	ran := 0
	for _, r := range table.Rows {
		name := fmt.Sprintf("%s %.1fx", r.Kind, r.Load)
		if r.NA != "" {
			if r.Kind == kindContinuous || r.Kind == kindDaily {
				t.Errorf("%s: n/a (%s): the fake has had what this kind needs all along", name, r.NA)
			}
			continue
		}
		ran++
		switch {
		case r.Sent == 0 || r.Capacity <= 0 || r.Span <= 0 || r.Ideal <= 0 || r.Ideal > r.Sent:
			t.Errorf("%s: nothing ran: %+v", name, r)
		case r.Served+r.Refused+r.GaveUp != r.Sent:
			t.Errorf("%s: served %d + refused %d + gave up %d != sent %d", name, r.Served, r.Refused, r.GaveUp, r.Sent)
		case r.Served == 0:
			t.Errorf("%s: nothing served", name)
		case float64(r.Served) > r.Capacity:
			// The fake enforces the limits: more served than the capacity
			// means the capacity is computed wrong for this kind.
			t.Errorf("%s: served %d, more than the capacity %.0f", name, r.Served, r.Capacity)
		case r.Spent != r.Served:
			t.Errorf("%s: the upstream served %d in full, the clients got %d", name, r.Spent, r.Served)
		case r.Upstream429 > r.Attempts || r.Spent > r.Attempts:
			t.Errorf("%s: %d upstream 429s and %d served of %d attempts", name, r.Upstream429, r.Spent, r.Attempts)
		case r.RetryAfter > r.Refused:
			t.Errorf("%s: %d refusals with Retry-After, of %d", name, r.RetryAfter, r.Refused)
		case r.P50 > r.P99 || r.P99 > time.Duration(table.Config.Retries+1)*(table.Config.Patience+time.Minute):
			t.Errorf("%s: waits p50 %v, p99 %v, patience %v", name, r.P50, r.P99, table.Config.Patience)
		}
		if r.RetryAfter != r.Refused {
			t.Errorf("%s: %d of %d refusals said when to come back", name, r.RetryAfter, r.Refused)
		}
		switch {
		case r.Load > 1 && float64(r.Served) < 0.95*r.Capacity:
			t.Errorf("%s: served %d, under 95%% of the capacity %.0f", name, r.Served, r.Capacity)
		case r.Load > 1 && float64(r.Upstream429) > 0.01*float64(r.Attempts)+float64(r.Budgets):
			t.Errorf("%s: %d upstream 429s of %d attempts, over 1%% plus one per budget (%d)", name, r.Upstream429, r.Attempts, r.Budgets)
		case r.Load < 1 && (r.Refused > 0 || r.GaveUp > 0):
			t.Errorf("%s: %d refused and %d gave up below capacity", name, r.Refused, r.GaveUp)
		}
	}
	if ran == 0 {
		t.Error("no kind ran")
	}
}

func TestCapacity(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"continuous: full bucket only", continuousCapacity(10, time.Minute, 0), 10},
		{"continuous: full bucket and 5 refills", continuousCapacity(10, time.Minute, 5*time.Minute), 60},
		{"continuous: whole requests", continuousCapacity(10, time.Minute, 5*time.Minute+5*time.Second), 60},
		{"continuous: day", continuousCapacity(10, 24*time.Hour, 36*time.Hour), 25},
		{"windowed: one window begun", windowedCapacity(10, time.Minute, time.Second), 10},
		{"windowed: 5 windows", windowedCapacity(10, time.Minute, 5*time.Minute), 50},
		{"windowed: a 6th window begun", windowedCapacity(10, time.Minute, 5*time.Minute+time.Millisecond), 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}

func TestArrivalTimes(t *testing.T) {
	const sending = 5 * time.Minute
	even := arrivalTimes(sending, 300, false, 0)
	if len(even) != 300 || even[0] != 0 || even[1] != time.Second || even[299] != 299*time.Second {
		t.Errorf("evenly spaced: %d arrivals, first %v, %v, last %v", len(even), even[0], even[1], even[len(even)-1])
	}
	p1, p2 := arrivalTimes(sending, 300, true, 7), arrivalTimes(sending, 300, true, 7)
	if len(p1) < 240 || len(p1) > 360 || len(p1) != len(p2) || p1[len(p1)-1] >= sending {
		t.Errorf("Poisson: %d and %d arrivals, last at %v", len(p1), len(p2), p1[len(p1)-1])
	}
	for i := range p1 {
		if p1[i] != p2[i] || i > 0 && p1[i] < p1[i-1] {
			t.Fatalf("Poisson: arrival %d at %v and %v", i, p1[i], p2[i])
		}
	}
}

func TestIdeal(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name     string
		plan     limitPlan
		arrivals []time.Duration
		patience time.Duration
		want     int
	}{
		{"continuous: a slot frees within patience",
			limitPlan{budgets: 1, limit: 2, window: time.Minute}, []time.Duration{0, 0, 0}, 30 * s, 3},
		{"continuous: a slot frees too late",
			limitPlan{budgets: 1, limit: 2, window: time.Minute}, []time.Duration{0, 0, 0}, 29 * s, 2},
		{"continuous: budgets refill each on its own",
			limitPlan{budgets: 2, limit: 1, window: time.Minute}, []time.Duration{0, 0, 0, 50 * s}, 30 * s, 3},
		{"continuous: a given-up request leaves its slot to the next",
			limitPlan{budgets: 1, limit: 1, window: time.Minute}, []time.Duration{0, 1 * s, 40 * s}, 30 * s, 2},
		{"windowed: nothing frees before the window ends",
			limitPlan{budgets: 2, limit: 1, window: time.Minute, fixed: true},
			[]time.Duration{0, 1 * s, 2 * s, 59 * s, 61 * s}, 30 * s, 4},
		{"windowed: spread under the limit",
			limitPlan{budgets: 1, limit: 3, window: time.Minute, fixed: true},
			[]time.Duration{0, 25 * s, 50 * s, 75 * s, 100 * s}, 0, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.plan.ideal(tc.arrivals, tc.patience); got != tc.want {
				t.Errorf("ideal = %d, want %d", got, tc.want)
			}
		})
	}
}
