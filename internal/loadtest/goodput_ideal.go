package main

import "time"

// ideal is how many of the requests sent at arrivals (offsets from the
// run's start, in order) a perfect pool could serve within the plan's
// limits: one that knows every budget's level, lets each request wait the
// client's whole patience, and serves the oldest waiting request the moment
// a budget holds one, from the fullest budget. With every request costing
// one and waiting equally long, serving the oldest as early as possible is
// optimal, so no pool serves more of these arrivals; at 0.8x it is every
// request, at 1.2x about the capacity. Every budget starts full at the
// run's start, as the fake's do (it creates them on the first requests).
func (p limitPlan) ideal(arrivals []time.Duration, patience time.Duration) int {
	if p.fixed {
		return idealWindowed(arrivals, patience, p.budgets*p.limit, p.window)
	}
	return idealContinuous(arrivals, patience, p.budgets, p.limit, p.window)
}

// idealContinuous is ideal for budgets buckets of limit that each refill
// limit per window continuously.
func idealContinuous(arrivals []time.Duration, patience time.Duration, budgets, limit int, window time.Duration) int {
	levels := make([]float64, budgets)
	for j := range levels {
		levels[j] = float64(limit)
	}
	perSecond := float64(limit) / window.Seconds()
	var at time.Duration // the time levels hold for
	advance := func(t time.Duration) {
		for j := range levels {
			levels[j] = min(float64(limit), levels[j]+perSecond*(t-at).Seconds())
		}
		at = t
	}
	fullest := func() int {
		best := 0
		for j := range levels {
			if levels[j] > levels[best] {
				best = j
			}
		}
		return best
	}
	served := 0
	var busyUntil time.Duration // the last service: requests are served oldest first
	for _, a := range arrivals {
		t := max(a, busyUntil)
		advance(t)
		j := fullest()
		if levels[j] < 1 {
			// Every budget is short of a request: the fullest fills first.
			t += time.Duration((1 - levels[j]) / perSecond * float64(time.Second))
			if t > a+patience {
				continue // this client gave up; the budgets stay for the next
			}
			advance(t)
			levels[j] = max(levels[j], 1) // rounding
		}
		levels[j]--
		busyUntil = t
		served++
	}
	return served
}

// idealWindowed is ideal for fixed windows of size requests, all budgets
// together (their windows start together, so a perfect pool can spend them
// as one).
func idealWindowed(arrivals []time.Duration, patience time.Duration, size int, window time.Duration) int {
	served, used := 0, 0
	var current time.Duration // the start of the window used counts in
	var busyUntil time.Duration
	for _, a := range arrivals {
		t := max(a, busyUntil)
		if start := t / window * window; start != current {
			current, used = start, 0
		}
		if used >= size {
			t = current + window // nothing frees before the window ends
			if t > a+patience {
				continue
			}
			current, used = t, 0
		}
		used++
		busyUntil = t
		served++
	}
	return served
}
