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
// of the time the pace implies (x-pace; 1.00 is exact), the requests a check
// costs per key, the pool's memory per key after the check, and fails if any
// check spent quota. "live" is a pool of live keys (a tenth of them trials);
// "mostly-revoked" is what a pile of leaked keys looks like: 80% revoked,
// 10% over quota, 10% live. A check stops at the first answer that settles
// a key: a revoked key costs one request, an over-quota one two.
func BenchmarkCheck10k(b *testing.B) {
	for _, mix := range []struct {
		name  string
		state func(i int) (fakeopenai.Behavior, keypool.State)
	}{
		{"live", func(int) (fakeopenai.Behavior, keypool.State) { return fakeopenai.OK, keypool.StateReady }},
		{"mostly-revoked", func(i int) (fakeopenai.Behavior, keypool.State) {
			switch i % 10 {
			case 0:
				return fakeopenai.OK, keypool.StateReady
			case 1:
				return fakeopenai.OverQuota, keypool.StateOverQuota
			}
			return fakeopenai.Revoked, keypool.StateRevoked
		}},
	} {
		b.Run(mix.name, func(b *testing.B) { benchCheck(b, mix.state) })
	}
}

func benchCheck(b *testing.B, state func(i int) (fakeopenai.Behavior, keypool.State)) {
	const n, pace = 10_000, 500.0
	keys := make([]fakeopenai.Key, n)
	creds := make([]keypool.Key, n)
	want := map[keypool.KeyID]keypool.State{}
	for i := range keys {
		behavior, st := state(i)
		keys[i] = fakeopenai.Key{Secret: fmt.Sprintf("sk-bench-%05d", i), Trial: i%10 == 0, Behavior: behavior}
		creds[i] = keypool.NewKey(keys[i].Secret)
		want[creds[i].ID()] = st
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
		for _, r := range results {
			if r.State != want[r.Key] {
				b.Fatalf("key %s is %s, want %s", r.Key, r.State, want[r.Key])
			}
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
