package keypool_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
)

type rvRT func(*http.Request) (*http.Response, error)

func (f rvRT) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func rvOK(req *http.Request, h map[string]string, body io.ReadCloser) *http.Response {
	hd := http.Header{"Content-Type": {"application/json"}}
	for k, v := range h {
		hd.Set(k, v)
	}
	if body == nil {
		body = io.NopCloser(strings.NewReader(`{"usage":{"prompt_tokens":1,"completion_tokens":1}}`))
	}
	return &http.Response{StatusCode: 200, Header: hd, Body: body, Request: req}
}

// rvBlock blocks Read until released, then returns EOF.
type rvBlock struct{ release chan struct{} }

// ctxBody blocks Read until its request's context ends, as a net/http body does.
type ctxBody struct{ ctx context.Context }

func (b ctxBody) Read(p []byte) (int, error) { <-b.ctx.Done(); return 0, context.Cause(b.ctx) }
func (b ctxBody) Close() error               { return nil }

func (b *rvBlock) Read(p []byte) (int, error) { <-b.release; return 0, io.EOF }
func (b *rvBlock) Close() error {
	select {
	case <-b.release:
	default:
		close(b.release)
	}
	return nil
}

func rvPost(ctx context.Context) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://x/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
	return req
}

// R1: a success answer lowers a Ready key's remaining requests but the ready
// heap keeps its old score; take looks only at the heap top, finds it full,
// and never considers the idle key X.
func TestRegressionStaleScoreHidesFreeKey(t *testing.T) {
	var n atomic.Int32
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		r.Body.Close()
		switch n.Add(1) {
		case 1:
			return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "3"}, nil), nil
		case 2:
			return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "50"}, nil), nil
		case 3:
			return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "1"}, &rvBlock{release: make(chan struct{})}), nil
		}
		return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "2"}, nil), nil
	})
	tr, err := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a,sk-b"), keypool.WithBase(base), keypool.WithMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// Warm up: r1 -> X says 3 left (headroom 2 while open), so r2 -> Y says 50.
	r1, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(r1.Body)
	r1.Body.Close()
	io.ReadAll(r2.Body)
	r2.Body.Close()
	// r3 -> Y (50 > 3); its answer says 1 left; its body stays open.
	r3, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Body.Close()
	for _, ki := range tr.Snapshot() {
		t.Logf("%s inflight=%d remaining=%d", ki.ID, ki.InFlight, ki.Limits[0].RemainingRequests)
	}
	// X is idle with 3 left: the next request must go to it at once.
	start := time.Now()
	r4, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatalf("request 4 failed after %v although a key is idle with 3 requests left: %v", time.Since(start), err)
	}
	r4.Body.Close()
}

// R2: probe limit 1: a request waits while the key's first answer is
// pending; the answer states 100 remaining, but while its body is open the
// waiter is not woken and waits out maxWait (20s).
func TestRegressionNoWakeOnSuccessHeaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		gate := make(chan struct{})
		body := &rvBlock{release: make(chan struct{})}
		base := rvRT(func(r *http.Request) (*http.Response, error) {
			r.Body.Close()
			if n.Add(1) == 1 {
				<-gate
				return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "100"}, body), nil
			}
			return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "99"}, nil), nil
		})
		tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithProbeLimit(1))
		firstDone := make(chan *http.Response, 1)
		go func() {
			r, _ := tr.RoundTrip(rvPost(context.Background()))
			firstDone <- r
		}()
		synctest.Wait() // first request holds the key's only probe slot
		secondDone := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			r, err := tr.RoundTrip(rvPost(context.Background()))
			if err == nil {
				r.Body.Close()
			}
			secondDone <- time.Since(start)
		}()
		synctest.Wait() // second request waits for a slot
		close(gate)     // first answer: 100 remaining, body stays open
		first := <-firstDone
		waited := <-secondDone
		first.Body.Close()
		if waited > time.Second {
			t.Fatalf("second request waited %v although the key's first answer stated 100 remaining", waited)
		}
	})
}

// R3: an upstream that states remaining requests but no reset (Azure style):
// remaining only ever goes down; after one "0" the key is stuck at 1.
func TestRegressionRemainingRatchetsDown(t *testing.T) {
	var seq = []string{"5", "0", "100", "100", "100"}
	var i atomic.Int32
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		r.Body.Close()
		v := seq[min(int(i.Add(1))-1, len(seq)-1)]
		return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": v}, nil), nil
	})
	tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithClock(clock))
	for k := 0; k < 5; k++ {
		r, err := tr.RoundTrip(rvPost(context.Background()))
		if err != nil {
			t.Fatalf("req %d: %v", k, err)
		}
		io.ReadAll(r.Body)
		r.Body.Close()
		mu.Lock()
		now = now.Add(2 * time.Second) // past any 1s cooldown
		mu.Unlock()
	}
	got := tr.Snapshot()[0].Limits[0].RemainingRequests
	if got != 100 {
		t.Fatalf("after three answers saying 100 remaining the pool believes %d", got)
	}
}

// R4: a 503 whose body never ends hangs RoundTrip: the attempt timer is
// stopped before the error body is read.
func TestRegressionErrorBodyNoDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := rvRT(func(r *http.Request) (*http.Response, error) {
			r.Body.Close()
			return &http.Response{StatusCode: 503, Header: http.Header{"Content-Type": {"application/json"}},
				Body: ctxBody{r.Context()}, Request: r}, nil
		})
		up := keypool.Upstream{BaseURL: "https://api.example/v1", Keys: rvKeys("sk-a,sk-b"), Timeout: 5 * time.Second}
		tr, _ := keypool.New(keypool.WithUpstreams(up), keypool.WithBase(base))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			tr.RoundTrip(rvPost(ctx))
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(time.Hour):
			t.Errorf("RoundTrip still blocked after an hour with a 5s per-attempt timeout")
			cancel()
			<-done
		}
		cancel()
	})
}

func rvKeys(s string) []keypool.Key { k, _ := keypool.ParseKeys(s); return k }

// A non-2xx answer handed back and read to EOF, never closed, still ends
// its attempt's context (a success body is released at EOF too).
func TestRegressionContextEndsAtEOFWithoutClose(t *testing.T) {
	var attemptCtx context.Context
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		r.Body.Close()
		attemptCtx = r.Context()
		return &http.Response{StatusCode: 400, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"error":{"type":"invalid_request_error"}}`)), Request: r}, nil
	})
	tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base))
	r, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	if attemptCtx.Err() != nil {
		t.Fatal("attempt context ended before the body was read")
	}
	io.ReadAll(r.Body) // to EOF, no Close
	if attemptCtx.Err() == nil {
		t.Fatal("attempt context still live after the body reached EOF")
	}
}

// R7: an error event with no blank line after it, then EOF, is handed back
// as a success instead of failing over.
func TestRegressionStreamErrorAtEOF(t *testing.T) {
	var n atomic.Int32
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		r.Body.Close()
		if n.Add(1) == 1 {
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
				Body: io.NopCloser(strings.NewReader(`data: {"error":{"type":"server_error","message":"overloaded"}}` + "\n")), Request: r}, nil
		}
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
			Body: io.NopCloser(strings.NewReader("data: {\"choices\":[]}\n\ndata: [DONE]\n\n")), Request: r}, nil
	})
	tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a,sk-b"), keypool.WithBase(base))
	req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","stream":true}`))
	r, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if strings.Contains(string(b), "error") {
		t.Fatalf("error stream handed back as success after %d attempt(s): %q", n.Load(), b)
	}
}

var _ = errors.New

// R9: requests without a JSON model use their URL path as the model, so
// GETs of distinct IDs each make a bucket; 64 of them evict the bucket of a
// real model, and with it a 429 cooldown: the cooling key is hit again.
func TestRegressionPathBucketsEvictCooldown(t *testing.T) {
	var chat atomic.Int32
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		if r.Method == "POST" {
			chat.Add(1)
			return &http.Response{StatusCode: 429, Header: http.Header{"Content-Type": {"application/json"}, "Retry-After": {"600"}},
				Body: io.NopCloser(strings.NewReader(`{"error":{"type":"requests","code":"rate_limit_exceeded"}}`)), Request: r}, nil
		}
		return rvOK(r, nil, io.NopCloser(strings.NewReader(`{}`))), nil
	})
	tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithMaxWait(0))
	r, _ := tr.RoundTrip(rvPost(context.Background()))
	r.Body.Close()
	for i := 0; i < 64; i++ {
		req, _ := http.NewRequest("GET", "http://x/v1/files/file-"+strings.Repeat("x", i+1)+"/content", nil)
		r, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	r, err := tr.RoundTrip(rvPost(context.Background()))
	if err == nil {
		r.Body.Close()
	}
	if chat.Load() != 1 {
		t.Fatalf("key told to wait 600s was sent %d chat requests within the cooldown", chat.Load())
	}
}

// R10: a policy that does not retry a transport error (here: timeouts are
// final) makes RoundTrip return (nil, nil).
func TestRegressionNilNilOnFinalTransportError(t *testing.T) {
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		r.Body.Close()
		return nil, errors.New("dial tcp: connection refused")
	})
	pol := keypool.PolicyFunc(func(a *keypool.Answer) keypool.Outcome {
		if a.Err != nil {
			return keypool.OutcomeClientError // "do not fail over on network errors"
		}
		return keypool.DefaultPolicy.Classify(a)
	})
	tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithPolicy(pol))
	resp, err := tr.RoundTrip(rvPost(context.Background()))
	if resp == nil && err == nil {
		t.Fatal("RoundTrip returned (nil, nil)")
	}
}

// R11: an upstream that states no rate limits at all (vLLM, Ollama, most
// compatible servers) is documented as "not limited", but e.answered is set
// only when some rate-limit header was present, so each key stays at the
// probe limit (4 in flight) for ever.
func TestRegressionNoHeadersStaysProbeLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := rvRT(func(r *http.Request) (*http.Response, error) {
			r.Body.Close()
			return rvOK(r, nil, ctxBody{r.Context()}), nil
		})
		tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithMaxWait(time.Second))
		// One answered request first, so the key has "answered".
		r0, _ := tr.RoundTrip(rvPost(context.Background()))
		r0.Body.Close()
		var open []*http.Response
		for i := 0; i < 10; i++ {
			r, err := tr.RoundTrip(rvPost(context.Background()))
			if err != nil {
				t.Errorf("request %d with %d streams open: %v", i+1, len(open), err)
				break
			}
			open = append(open, r)
		}
		for _, r := range open {
			r.Body.Close()
		}
	})
}
