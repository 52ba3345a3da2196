package keypool_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// BenchmarkCheck10k checks 10,000 keys against the fake over loopback at a
// pace of 500 checks per second (64 at once). It reports the time taken as a multiple
// of the time the pace implies (x-pace; 1.00 is exact), the pool's memory per
// key after the check, and fails if any check spent quota.
func BenchmarkCheck10k(b *testing.B) {
	const n, pace = 10_000, 500.0
	keys := make([]fakeopenai.Key, n)
	creds := make([]keypool.Key, n)
	for i := range keys {
		keys[i] = fakeopenai.Key{Secret: fmt.Sprintf("sk-bench-%05d", i), Trial: i%10 == 0}
		creds[i] = keypool.NewKey(keys[i].Secret)
	}
	fake, base := fakeopenai.NewTestServer(b, fakeopenai.Config{}, keys...)
	for b.Loop() {
		fake.Reset()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: base, Keys: creds}))
		if err != nil {
			b.Fatal(err)
		}
		c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(pace), keypool.WithCheckConcurrency(64))
		start := time.Now()
		results, err := c.CheckAll(context.Background())
		elapsed := time.Since(start)
		if err != nil || len(results) != n {
			b.Fatalf("%d results, %v", len(results), err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(tr)
		ready := 0
		for _, r := range results {
			if r.State == keypool.StateReady {
				ready++
			}
		}
		if ready != n {
			b.Fatalf("%d of %d keys ready", ready, n)
		}
		for _, rec := range fake.Records() {
			if rec.Spent {
				b.Fatalf("a check spent quota: %+v", rec)
			}
		}
		ideal := time.Duration(float64(n-1) / pace * float64(time.Second))
		b.ReportMetric(elapsed.Seconds()/ideal.Seconds(), "x-pace")
		b.ReportMetric(float64(len(fake.Records()))/n, "requests/key")
		// The pool's own memory: the heap with the transport alive, less the
		// heap once it is gone (the fake's state stays in both).
		tr.CloseIdleConnections()
		tr, c, results = nil, nil, nil
		var gone runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&gone)
		b.ReportMetric(float64(after.HeapAlloc-gone.HeapAlloc)/n, "B/key")
	}
}
