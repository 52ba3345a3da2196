package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
)

// BenchmarkProxyWithStatusPages measures the proxy's throughput with open
// status pages against none (issue 18: "a hundred open pages do not slow
// the proxy's requests"). Each variant serves one App on 127.0.0.1 in
// front of a fake OpenAI with 20 keys (some revoked, one over quota, one
// that fails its first requests, in five organizations, so that a
// snapshot lists states, budgets, limits and events), opens its pages'
// event streams, which read every byte, and then sends small non-stream
// chat completions through the proxy from parallel clients.
//
// It reports req/s (the proxy's throughput), cpu-us/op (the process's
// CPU time per request: on a busy machine it shows the pages' cost when
// the throughput is too noisy to), page-B/s and page-snaps/s (what all
// the pages received together while the requests ran), and heap-MB
// (HeapInuse after a GC at the end). Client, proxy and fake upstream
// share this process, so the CPU and the heap include both ends of every
// connection.
//
// The interval=100ms variants push a snapshot 20 times as often as the
// default 2 s, so that the pages' cost shows on a small machine.
func BenchmarkProxyWithStatusPages(b *testing.B) {
	for _, interval := range []time.Duration{0, 100 * time.Millisecond} {
		for _, pages := range []int{0, 100} {
			name := fmt.Sprintf("pages=%d", pages)
			if interval > 0 {
				name += "/interval=" + interval.String()
			}
			benchStatusPages(b, name, pages, interval)
		}
	}
}

const (
	benchToken = "tok-bench-status-pages-0000"
	benchKeys  = 20
	benchChat  = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`
	// benchWait bounds every wait of the setup and the teardown.
	benchWait = 30 * time.Second
)

// benchStatusPages runs one variant: it sets up an App with pages open
// streams, runs the sub-benchmark name against it, and tears it down.
func benchStatusPages(b *testing.B, name string, pages int, interval time.Duration) {
	env := startStatusBench(b, pages, interval)
	defer env.stop(b)
	b.Run(name, func(b *testing.B) {
		b.SetParallelism(4) // 4×GOMAXPROCS clients: enough to keep the proxy busy
		env.fake.Reset()
		bytes0, snaps0, changes0 := env.received.Load(), env.snapshots.Load(), env.changes.Load()
		var failed atomic.Int64
		cpu0 := cpuTime()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if code := env.chat(); code != http.StatusOK {
					failed.Add(1)
				}
			}
		})
		b.StopTimer()
		cpu := cpuTime() - cpu0
		secs := b.Elapsed().Seconds()
		received, snaps := env.received.Load()-bytes0, env.snapshots.Load()-snaps0
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d of %d requests were not answered 200", n, b.N)
		}
		if err := env.streamErr(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.N)/secs, "req/s")
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
		b.ReportMetric(float64(received)/secs, "page-B/s")
		b.ReportMetric(float64(snaps)/secs, "page-snaps/s")
		b.ReportMetric(float64(env.changes.Load()-changes0), "state-changes")
		env.fake.Reset() // the fake's records grow with b.N; they are not the proxy's
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
	})
}

// statusBench is one running App with its upstream and its pages.
type statusBench struct {
	fake     *fakeopenai.Server
	upstream *httptest.Server
	base     string // the proxy, "http://127.0.0.1:…"
	client   *http.Client
	stopApp  context.CancelFunc
	served   chan error

	stopPages context.CancelFunc
	pages     sync.WaitGroup
	pageErrs  chan error

	received  atomic.Int64 // bytes all pages read
	snapshots atomic.Int64 // events all pages read
	changes   atomic.Int64 // key state changes the transport reported
}

func startStatusBench(b *testing.B, pages int, interval time.Duration) *statusBench {
	b.Helper()
	var fakeKeys []fakeopenai.Key
	var keys []keypool.Key
	for i := range benchKeys {
		k := fakeopenai.Key{Secret: fmt.Sprintf("sk-bench-status-%04d-aaaaaaaaaaaa", i), RPM: 1_000_000, TPM: 1_000_000_000,
			Orgs: []fakeopenai.Org{{ID: fmt.Sprintf("org-bench%d", i%5), Title: fmt.Sprintf("Bench %d", i%5), RPM: 1_000_000, TPM: 1_000_000_000}}}
		switch i {
		case 3, 11:
			k.Behavior = fakeopenai.Revoked
		case 7:
			k.Behavior = fakeopenai.OverQuota
		case 15:
			k.Behavior, k.FailFirst = fakeopenai.Flaky, 3
		}
		fakeKeys = append(fakeKeys, k)
		keys = append(keys, keypool.NewKey(k.Secret))
	}
	env := &statusBench{fake: fakeopenai.New(fakeopenai.Config{}, fakeKeys...), served: make(chan error, 1),
		pageErrs: make(chan error, pages)}
	env.upstream = httptest.NewServer(env.fake)
	cfg := &config.Config{
		Authorization: []secret.String{secret.New(benchToken)},
		Upstream:      []config.Upstream{{Endpoint: env.upstream.URL + "/v1", Keys: keys}},
		DBType:        "none",
		Checker:       config.Checker{NoRecheck: true},
	}
	checked := make(chan struct{}, benchKeys)
	watch := keypool.ObserverFuncs{
		OnChecked:     func(keypool.CheckResult) { checked <- struct{}{} },
		OnStateChange: func(keypool.StateEvent) { env.changes.Add(1) },
	}
	a, err := app.New(cfg, app.Options{ShutdownTimeout: 5 * time.Second, StatusInterval: interval,
		Transport: []keypool.Option{keypool.WithObserver(watch)}})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		env.upstream.Close()
		b.Fatal(err)
	}
	env.base = "http://" + ln.Addr().String()
	appCtx, stopApp := context.WithCancel(context.Background())
	env.stopApp = stopApp
	go func() { env.served <- a.Run(appCtx, ln) }()
	env.client = &http.Client{Timeout: benchWait, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	// Every key checked, then traffic, so that the keys have limits and
	// the page has failovers and state changes to list.
	deadline := time.After(benchWait)
	for range benchKeys {
		select {
		case <-checked:
		case <-deadline:
			env.stop(b)
			b.Fatal("the keys' first checks did not end in time")
		}
	}
	for range 200 {
		if code := env.chat(); code != http.StatusOK {
			env.stop(b)
			b.Fatalf("a warm-up request was answered %d", code)
		}
	}

	pagesCtx, stopPages := context.WithCancel(context.Background())
	env.stopPages = stopPages
	pageClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: pages, ResponseHeaderTimeout: benchWait}}
	first := make(chan struct{}, pages)
	for range pages {
		env.pages.Add(1)
		go func() {
			defer env.pages.Done()
			env.pageErrs <- env.readPage(pagesCtx, pageClient, first)
		}()
	}
	for range pages {
		select {
		case <-first:
		case <-deadline:
			env.stop(b)
			b.Fatal("the pages did not all get their first snapshot in time")
		}
	}
	return env
}

// readPage holds one page's event stream open until ctx ends, reading
// every byte, and tells first once its first snapshot arrived. It returns
// why the stream ended early (nil when ctx ended it).
func (env *statusBench) readPage(ctx context.Context, c *http.Client, first chan<- struct{}) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.base+"/status/events", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /status/events: %s", resp.Status)
	}
	_, err = io.Copy(&eventCounter{env: env, first: first}, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("a page's stream ended early: %v", err)
}

// streamErr is the first error of a page whose stream ended early.
func (env *statusBench) streamErr() error {
	select {
	case err := <-env.pageErrs:
		return err
	default:
		return nil
	}
}

// chat sends one small chat completion through the proxy and returns its
// status, after reading the whole answer.
func (env *statusBench) chat() int {
	req, err := http.NewRequest(http.MethodPost, env.base+"/v1/chat/completions", strings.NewReader(benchChat))
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+benchToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := env.client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0
	}
	return resp.StatusCode
}

// stop closes the pages, stops the App (bounded) and the upstream.
func (env *statusBench) stop(b *testing.B) {
	b.Helper()
	if env.stopPages != nil {
		env.stopPages()
		env.pages.Wait()
	}
	env.stopApp()
	select {
	case err := <-env.served:
		if err != nil {
			b.Errorf("App.Run: %v", err)
		}
	case <-time.After(benchWait):
		b.Error("the App did not stop in time")
	}
	env.client.CloseIdleConnections()
	env.fake.Close()
	env.upstream.Close()
}

// eventCounter counts what a page reads: bytes, and events (each ends
// with a blank line).
type eventCounter struct {
	env   *statusBench
	first chan<- struct{}
	told  bool
	last  byte // the byte before this Write's, to find "\n\n" across Writes
}

func (c *eventCounter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.env.received.Add(int64(len(p)))
	n := int64(bytes.Count(p, []byte("\n\n")))
	if c.last == '\n' && p[0] == '\n' {
		n++
	}
	c.last = p[len(p)-1]
	if n > 0 {
		c.env.snapshots.Add(n)
		if !c.told {
			c.told = true
			c.first <- struct{}{}
		}
	}
	return len(p), nil
}

// cpuTime is the CPU time the process used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
