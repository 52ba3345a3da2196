package keypool

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"testing/synctest"
	"time"
)

// BenchmarkFreshModelName picks a key for a model name the pool has never
// seen, every time: it goes to the upstream's shared bucket, so it costs
// what a known model costs, however many keys the pool has (it built an
// entry for every key before: 76 ms at 100k keys).
func BenchmarkFreshModelName(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			p := testPool(b, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("fresh", n)})
			buf := []byte("model-")
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				i++
				r := &pick{model: string(strconv.AppendInt(buf[:6], int64(i), 10))}
				p.mu.Lock()
				l, _ := p.take(r, t0)
				p.release(l, t0)
				p.mu.Unlock()
			}
		})
	}
}

// TestManyUnknownModelsBounded sends 10,000 names no upstream serves to a
// pool of 100,000 keys, each answered model_not_found: the pool stays the
// size it was (no bucket, no per-key entry), and what it remembers of
// missing models is bounded.
func TestManyUnknownModelsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a pool of 100,000 keys")
	}
	p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("many", 100_000)})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	notFound := &Answer{Status: 404, Error: &APIError{Status: 404, Type: "invalid_request_error", Code: "model_not_found"}, Limits: noLimits}
	for i := range 10_000 {
		model := "no-such-model-" + strconv.Itoa(i)
		for range 2 { // two scopes say so: the model is held missing
			h := takeKey(t, p, model, t0)
			answer(p, h, notFound, t0)
		}
		if l, ref := tryTake(p, &pick{model: model}, t0); l.k != nil || !ref.notFound {
			t.Fatalf("model %d: still offered after model_not_found (%s)", i, ref.reason)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	u := p.ups[0]
	if len(u.buckets) != 0 || len(u.missing.m) > maxMissing {
		t.Fatalf("%d buckets, %d models held missing", len(u.buckets), len(u.missing.m))
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Fatalf("the heap grew by %d MB for 10,000 unknown models", grew>>20)
	}
}

// TestWakeOnlyTheBucket: a key freed for one model wakes the requests
// waiting for that model, not those waiting for the 99 others.
func TestWakeOnlyTheBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := testPool(t, func(c *poolConfig) { c.probeLimit, c.maxBuckets = 1, 128 }, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("w", 1)})
		const models = 100
		leases := make([]held, models)
		for m := range models {
			leases[m] = serveModel(t, p, "model-"+strconv.Itoa(m))
		}
		// 10 waiters per model, all busy.
		ctx, cancel := context.WithCancel(context.Background())
		defer func() { cancel(); synctest.Wait() }()
		woke := make(chan string, 1000)
		for m := range models {
			for range 10 {
				model := "model-" + strconv.Itoa(m)
				go func() {
					l, err := p.acquireWait(ctx, &pick{model: model}, time.Now().Add(time.Hour), time.Now)
					if err == nil {
						woke <- model
						drop(p, held{l, model}, time.Now())
					}
				}()
			}
		}
		synctest.Wait()
		p.mu.Lock()
		waiting := 0
		for _, b := range p.ups[0].buckets {
			waiting += len(b.waiters)
		}
		p.mu.Unlock()
		if waiting != 1000 {
			t.Fatalf("%d waiters registered, want 1000", waiting)
		}
		drop(p, leases[7], time.Now()) // model-7's key frees up
		synctest.Wait()
		p.mu.Lock()
		defer p.mu.Unlock() // runs before the cancel: defers run last first
		for name, b := range p.ups[0].buckets {
			live := 0
			for _, w := range b.waiters {
				if !w.done {
					live++
				}
			}
			if name == "model-7" && live != 0 || name != "model-7" && live != 10 {
				t.Fatalf("bucket %s has %d waiters after model-7's release", name, live)
			}
		}
		if len(woke) != 10 {
			t.Fatalf("%d requests got a key, want the 10 of model-7 (one at a time)", len(woke))
		}
	})
}

// serveModel gives model a bucket of its own (an answer shows it is served)
// and holds a lease on it.
func serveModel(t *testing.T, p *Pool, model string) held {
	t.Helper()
	h := takeKey(t, p, model, time.Now())
	answer(p, h, okAnswer(1000, 1, time.Hour), time.Now()) // one request left: the held one takes it
	return takeKey(t, p, model, time.Now())
}

// BenchmarkWakeWaiters: 1,000 requests wait over 100 models; a release
// wakes the waiters of its own model only.
func BenchmarkWakeWaiters(b *testing.B) {
	p := testPool(b, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("wb", 1)})
	p.mu.Lock()
	u := p.ups[0]
	var buckets []*bucket
	for m := range 100 {
		name := "model-" + strconv.Itoa(m)
		u.served[name] = true
		buckets = append(buckets, p.makeBucket(u, name, name, false, t0))
	}
	p.mu.Unlock()
	register := func() {
		for _, bk := range buckets {
			r := &pick{looked: []*bucket{bk}}
			for range 10 {
				p.wait(r)
			}
		}
	}
	register()
	l := lease{k: p.keys[0], bud: buckets[0].budgets[p.keys[0].s.index], model: "model-0"}
	b.ReportAllocs()
	for b.Loop() {
		p.mu.Lock()
		p.acquire(l, t0)
		p.release(l, t0) // wakes model-0's 10 waiters
		// Model-0's waiters come back, as woken waiters do.
		r := &pick{looked: buckets[:1]}
		for range 10 {
			p.wait(r)
		}
		p.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, bk := range buckets[1:] {
		if len(bk.waiters) != 10 {
			b.Fatalf("a release woke another model's waiters")
		}
	}
}
