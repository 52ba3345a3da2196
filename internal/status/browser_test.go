package status_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/browsertest"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/status"
)

// countFrames counts the snapshots the event streams it serves sent.
type countFrames struct {
	http.ResponseWriter
	n    *atomic.Int64
	sent chan<- struct{} // a value after each snapshot, when there is room
}

func (c countFrames) Write(b []byte) (int, error) {
	c.n.Add(1)
	select {
	case c.sent <- struct{}{}:
	default:
	}
	return c.ResponseWriter.Write(b)
}

func (c countFrames) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// A page left open does not grow: it gets a snapshot every 10 ms (a day's
// worth of the default 2 s, 43200, would take too long; 2000 are 67
// minutes' worth) while a key keeps changing state and traffic flows, and
// after 2000 more snapshots it holds the memory and the DOM it held after
// the first 300: a leak of 1 KB per snapshot would fail it.
func TestBrowserPageMemoryIsBounded(t *testing.T) {
	b := browsertest.New(t, 2*time.Minute)
	var keys []fakeopenai.Key
	for i := range 30 {
		keys = append(keys, fakeopenai.Key{Secret: fmt.Sprintf("sk-status-memory-%02d-0123456789", i)})
	}
	r := newRig(t, status.Options{Interval: 10 * time.Millisecond}, keys...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- r.page.Run(ctx) }()
	var frames atomic.Int64
	sent := make(chan struct{}, 1)
	page := r.page.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		page.ServeHTTP(countFrames{w, &frames, sent}, req)
	}))
	defer srv.Close()
	defer r.page.Shutdown() // before srv.Close, which waits for the streams

	// Traffic, and a key that keeps changing state, so that each snapshot
	// differs: events, charts, the key's row.
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		id := keypool.NewKey(keys[0].Secret).ID()
		for i := 0; ctx.Err() == nil; i++ {
			r.chat(t)
			if i%2 == 0 {
				r.tr.Pool().Disable(id, fmt.Sprintf("test %d", i))
			} else {
				r.tr.Pool().Enable(id)
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	defer func() { cancel(); <-busy }()

	type measure struct {
		Heap  int64 `json:"heap"`
		Nodes int64 `json:"nodes"`
	}
	const measureJS = `(() => { gc(); gc(); return {heap: performance.memory.usedJSHeapSize, nodes: document.getElementsByTagName('*').length}; })()`
	if err := chromedp.Do(b.Ctx, chromedp.Navigate(srv.URL+"/status/"), chromedp.WaitVisible(`#live[data-state="live"]`)); err != nil {
		t.Fatal(err)
	}
	measureAfter := func(n int64) (measure, int64) {
		t.Helper()
		for frames.Load() < n {
			select {
			case <-sent:
			case <-b.Ctx.Done():
				t.Fatalf("after %d snapshots: %v", frames.Load(), b.Ctx.Err())
			}
		}
		m, err := chromedp.Run(b.Ctx, chromedp.Evaluate[measure](measureJS))
		if err != nil {
			t.Fatal(err)
		}
		return m, frames.Load()
	}
	first, n0 := measureAfter(300)
	last, n1 := measureAfter(2300)
	t.Logf("after %d snapshots: %d bytes of JS heap, %d elements; after %d: %d bytes, %d elements",
		n0, first.Heap, first.Nodes, n1, last.Heap, last.Nodes)
	if last.Heap > first.Heap+2<<20 || last.Nodes > first.Nodes+60 {
		t.Errorf("the page grew: heap %d → %d bytes, %d → %d elements over %d snapshots",
			first.Heap, last.Heap, first.Nodes, last.Nodes, n1-n0)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page's console: %q", errs)
	}
}
