package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkProxy sends JSON chat completions through each proxy in
// parallel, against the same loopback upstream: the bare ReverseProxy;
// keypool's transport and server alone; keypool as serve wires it
// (app.New) with the memory store; and, when KEYPOOL_TEST_REDIS names a
// Redis, the same with its store there. Each reports its latency p50 and
// p99; the Redis side also its time per request, p50 and p99 over the
// memory side's (…-vs-mem), and the p50 it adds.
func BenchmarkProxy(b *testing.B) {
	r, err := newRig(256)
	if err != nil {
		b.Fatal(err)
	}
	defer r.close()
	mem, err := startServed(r.upstream.url+"/v1", "", 256)
	if err != nil {
		b.Fatal(err)
	}
	defer mem.stop()
	type side struct {
		name     string
		url      string
		client   *http.Client
		baseline string // the side this one is compared with; "" for none
	}
	sides := []side{
		{"bare", r.bare.url, r.bareClient, ""},
		{"keypool", r.keypool.url, r.kpClient, ""},
		{"keypool+memory", mem.srv.url, mem.client, ""},
	}
	store := scratchRedis(b, benchRedisDB)
	if store != "" {
		red, err := startServed(r.upstream.url+"/v1", store, 256)
		if err != nil {
			b.Fatal(err)
		}
		defer red.stop()
		sides = append(sides, side{"keypool+redis", red.srv.url, red.client, "keypool+memory"})
	}
	measured := map[string]benchSide{}
	for _, tc := range sides {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var mu sync.Mutex
			var all []time.Duration
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 32<<10)
				var lat []time.Duration
				for pb.Next() {
					d, _, err := do(context.Background(), tc.client, tc.url, false, buf)
					if err != nil {
						b.Error(err)
						return
					}
					lat = append(lat, d)
				}
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			})
			// The last call of this function is the measured one: b.N
			// grows from 1.
			m := benchSide{perOp: b.Elapsed() / time.Duration(b.N)}
			m.p50, m.p99 = percentiles(all)
			measured[tc.name] = m
			b.ReportMetric(float64(m.p50)/1e3, "p50-µs")
			b.ReportMetric(float64(m.p99)/1e3, "p99-µs")
			if base, ok := measured[tc.baseline]; ok {
				b.ReportMetric(ratio(float64(m.perOp), float64(base.perOp)), "ns/op-vs-mem")
				b.ReportMetric(ratio(float64(m.p50), float64(base.p50)), "p50-vs-mem")
				b.ReportMetric(ratio(float64(m.p99), float64(base.p99)), "p99-vs-mem")
				b.ReportMetric(float64(m.p50-base.p50)/1e3, "p50-added-µs")
			}
		})
	}
	if store == "" {
		b.Run("keypool+redis", func(b *testing.B) {
			b.Skip("no Redis: set KEYPOOL_TEST_REDIS=HOST:PORT (.ci/run starts one)")
		})
	}
}

// benchSide is what one side of BenchmarkProxy measured.
type benchSide struct {
	perOp, p50, p99 time.Duration
}

// benchRedisDB is the database of the throwaway Redis (KEYPOOL_TEST_REDIS)
// this package's Redis sides use: not one internal/app's tests use, as
// go test runs the packages at once.
const benchRedisDB = 14

// scratchRedis returns the URL of database db of the throwaway Redis
// KEYPOOL_TEST_REDIS names, emptied now and again at the end; "" when the
// variable is not set.
func scratchRedis(tb testing.TB, db int) string {
	tb.Helper()
	addr := os.Getenv("KEYPOOL_TEST_REDIS")
	if addr == "" {
		return ""
	}
	rc := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	if err := rc.FlushDB(context.Background()).Err(); err != nil {
		rc.Close()
		tb.Fatalf("emptying Redis database %d at %s: %v", db, addr, err)
	}
	tb.Cleanup(func() {
		rc.FlushDB(context.Background())
		rc.Close()
	})
	return fmt.Sprintf("redis://%s/%d", addr, db)
}

// TestLoadRedisSmoke runs the harness's Redis comparison (keypool serve
// with its store in Redis against the memory store) on a small load: no
// error on either side.
func TestLoadRedisSmoke(t *testing.T) {
	store := scratchRedis(t, benchRedisDB)
	if store == "" {
		t.Skip("no Redis: set KEYPOOL_TEST_REDIS=HOST:PORT (.ci/run starts one)")
	}
	var out bytes.Buffer
	cfg := Config{N: 300, Concurrency: 8, StreamRatio: 0.3, Duration: time.Minute, Redis: store}
	res, err := run(t.Context(), cfg, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Side{res.Bare, res.Keypool} {
		if s.Requests != cfg.N || s.Errors != 0 {
			t.Errorf("%s: %d requests, %d errors (first: %v), want %d and none", s.Name, s.Requests, s.Errors, s.FirstError, cfg.N)
		}
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
