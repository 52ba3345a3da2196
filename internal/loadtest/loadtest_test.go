package main

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
	"testing"
	"time"
)

// BenchmarkProxy sends JSON chat completions through each proxy in
// parallel, against the same loopback upstream.
func BenchmarkProxy(b *testing.B) {
	r, err := newRig(256)
	if err != nil {
		b.Fatal(err)
	}
	defer r.close()
	for _, tc := range []struct {
		name   string
		url    string
		client *http.Client
	}{
		{"bare", r.bare.url, r.bareClient},
		{"keypool", r.keypool.url, r.kpClient},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 32<<10)
				for pb.Next() {
					if _, _, err := do(context.Background(), tc.client, tc.url, false, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func TestLoadSmoke(t *testing.T) {
	var out bytes.Buffer
	cfg := Config{N: 500, Concurrency: 8, StreamRatio: 0.3, Duration: time.Minute}
	res, err := run(t.Context(), cfg, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	wantStreams := 0
	for i := range cfg.N {
		if isStream(i, cfg.StreamRatio) {
			wantStreams++
		}
	}
	for _, s := range []Side{res.Bare, res.Keypool} {
		if s.Requests != cfg.N || s.Errors != 0 {
			t.Errorf("%s: %d requests, %d errors (first: %v), want %d and none", s.Name, s.Requests, s.Errors, s.FirstError, cfg.N)
		}
		if s.Streams != wantStreams {
			t.Errorf("%s: %d streams, want %d", s.Name, s.Streams, wantStreams)
		}
		if s.Throughput <= 0 || s.P99 <= 0 || s.TTFB99 <= 0 {
			t.Errorf("%s: missing numbers: %+v", s.Name, s)
		}
	}
}

// TestSoak sends many thousand requests through the keypool proxy and checks
// that goroutines and the live heap are where they were before, once the idle
// connections are closed.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped under -short")
	}
	const (
		n                = 5000
		conc             = 16
		goroutineSlack   = 8
		heapSlack        = 4 << 20
		heapSlackPercent = 10
	)
	r, err := newRig(conc * 2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	cfg := Config{Concurrency: conc, StreamRatio: 0.3}

	// Warm up, so that everything allocated once (pool state, sync.Pools,
	// the runtime's own) is there before the first measurement.
	warm := &sample{}
	drive(t.Context(), r.kpClient, r.keypool.url, 0, 500, cfg, warm)
	if s := warm.finish(); s.Errors != 0 {
		t.Fatalf("warm-up: %d errors, first: %v", s.Errors, s.FirstError)
	}
	g0, h0 := settle(t, r)

	s := &sample{}
	drive(t.Context(), r.kpClient, r.keypool.url, 0, n, cfg, s)
	if got := s.finish(); got.Requests != n || got.Errors != 0 {
		t.Fatalf("soak: %d requests, %d errors (first: %v), want %d and none", got.Requests, got.Errors, got.FirstError, n)
	}
	g1, h1 := settle(t, r)
	t.Logf("goroutines %d → %d, heap %d KiB → %d KiB", g0, g1, h0>>10, h1>>10)
	if g1 > g0+goroutineSlack {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines grew from %d to %d over %d requests:\n%s", g0, g1, n, buf[:runtime.Stack(buf, true)])
	}
	if limit := h0 + h0*heapSlackPercent/100 + heapSlack; h1 > limit {
		t.Errorf("live heap grew from %d to %d bytes over %d requests (limit %d)", h0, h1, n, limit)
	}
}

// settle closes every idle connection, waits until the servers saw them
// close, collects garbage and returns the goroutine count and live heap.
func settle(t *testing.T, r *rig) (goroutines int, heap uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := r.closeIdle(ctx); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}
