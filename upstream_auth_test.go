package keypool_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// scripted is an upstream that answers each request with the next status of
// its script (the last one repeats), and remembers the Authorization header
// and OpenAI-Organization of every request.
type scripted struct {
	mu     sync.Mutex
	script []int
	auths  []string
	orgs   []string
	n      int
	header http.Header // extra answer headers
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	s.mu.Lock()
	status := s.script[min(s.n, len(s.script)-1)]
	s.n++
	s.auths = append(s.auths, r.Header.Get("Authorization"))
	s.orgs = append(s.orgs, r.Header.Get("OpenAI-Organization"))
	for k, v := range s.header {
		w.Header()[k] = v
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch status {
	case 200:
		fmt.Fprint(w, `{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}`)
	case 401:
		w.WriteHeader(401)
		fmt.Fprint(w, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
	case 429:
		w.WriteHeader(429)
		fmt.Fprint(w, `{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	default:
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":{"message":"oops","type":"server_error","param":null,"code":null}}`)
	}
}

func (s *scripted) seen() (auths, orgs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auths...), append([]string(nil), s.orgs...)
}

func startScripted(t *testing.T, script ...int) (*scripted, string) {
	t.Helper()
	s := &scripted{script: script}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL + "/v1"
}

func sendWithAuth(t *testing.T, tr http.RoundTripper, auth string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://proxy.invalid/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o","messages":[]}`))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("OpenAI-Organization", "org-caller")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestUpstreamWithoutKey sends no credentials to an AuthNone upstream, never
// takes it out of selection for a refusal, and rests it after repeated
// failures like any key.
func TestUpstreamWithoutKey(t *testing.T) {
	up, base := startScripted(t, 200, 401, 401, 200)
	rec := &recorder{}
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{Name: "local", BaseURL: base, Auth: keypool.AuthNone}),
		keypool.WithObserver(rec), keypool.WithCheckedKeysOnly(true), keypool.WithMaxAttempts(1),
		keypool.WithFailureCooldown(3, time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	snap := tr.Snapshot()
	if len(snap) != 1 || snap[0].Auth != keypool.AuthNone || snap[0].State != keypool.StateReady {
		t.Fatalf("snapshot %+v", snap)
	}
	// Usable at once although nothing checked it (WithCheckedKeysOnly). A
	// 401 is the pool's problem, not the caller's: keypool says so (503).
	for i, want := range []int{200, 503, 503, 200} {
		if got := sendWithAuth(t, tr, "Bearer client-token"); got != want {
			t.Fatalf("request %d: status %d, want %d", i+1, got, want)
		}
	}
	auths, orgs := up.seen()
	for i := range auths {
		if auths[i] != "" || orgs[i] != "" {
			t.Fatalf("request %d went out with Authorization %q, organization %q", i+1, auths[i], orgs[i])
		}
	}
	if st := tr.Snapshot()[0]; st.State != keypool.StateReady {
		t.Fatalf("after two 401s the stand-in is %s (%s), want ready", st.State, st.Reason)
	}
	// Failures rest it: three in a row (the threshold here is 3), or
	// sooner, as a failure rate this high does.
	up.mu.Lock()
	up.script, up.n = []int{500}, 0
	up.mu.Unlock()
	for range 3 {
		req, _ := http.NewRequest("POST", "http://proxy.invalid/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			break // resting already: no key for this request
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if st := tr.Snapshot()[0]; st.State != keypool.StateCooling {
		t.Fatalf("after 3 failures the stand-in is %s, want cooling", st.State)
	}
	c, err := keypool.NewChecker(tr)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.CheckAll(context.Background())
	if err != nil || len(res) != 0 {
		t.Fatalf("the checker checked the stand-in: %+v, %v", res, err)
	}
}

// TestUpstreamCallerAuth passes the caller's own credentials to an
// AuthCaller upstream and learns nothing from its answers: a 401 or 429 is
// about the caller's key.
func TestUpstreamCallerAuth(t *testing.T) {
	up, base := startScripted(t, 401, 429, 429, 200)
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{Name: "asis", BaseURL: base, Auth: keypool.AuthCaller}),
		keypool.WithMaxAttempts(1), keypool.WithMaxWait(0))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	for i, want := range []int{401, 429, 429, 200} {
		if got := sendWithAuth(t, tr, fmt.Sprintf("Bearer sk-caller-%d", i)); got != want {
			t.Fatalf("request %d: status %d, want %d", i+1, got, want)
		}
		if st := tr.Snapshot()[0]; st.State != keypool.StateReady || len(st.Limits) != 0 && !st.Limits[0].CoolingUntil.IsZero() {
			t.Fatalf("after request %d the stand-in is %+v", i+1, st)
		}
	}
	auths, orgs := up.seen()
	for i := range auths {
		if want := fmt.Sprintf("Bearer sk-caller-%d", i); auths[i] != want || orgs[i] != "org-caller" {
			t.Fatalf("request %d went out with %q / %q, want the caller's own", i+1, auths[i], orgs[i])
		}
	}
}

// TestUpstreamCallerAuthNoInFlightLimit lets any number of callers through
// at once: each brings a key of its own, so the probe limit of pool keys
// does not apply.
func TestUpstreamCallerAuthNoInFlightLimit(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	inflight, peak := 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		mu.Unlock()
		<-release
		mu.Lock()
		inflight--
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{}`)
	}))
	defer srv.Close()
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: srv.URL, Auth: keypool.AuthCaller}),
		keypool.WithProbeLimit(2), keypool.WithMaxWait(0))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	deadline := time.After(10 * time.Second)
	for {
		mu.Lock()
		p := peak
		mu.Unlock()
		if p == n {
			break
		}
		select {
		case err := <-errs:
			t.Fatalf("a caller was refused: %v", err)
		case <-deadline:
			t.Fatalf("only %d of %d callers reached the upstream at once", p, n)
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(release)
	wg.Wait()
}

func TestUpstreamAuthWithKeysRefused(t *testing.T) {
	for _, auth := range []keypool.UpstreamAuth{keypool.AuthNone, keypool.AuthCaller, 7} {
		_, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: "https://api.openai.com/v1",
			Auth: auth, Keys: []keypool.Key{keypool.NewKey("sk-secret-1234")}}))
		if err == nil || strings.Contains(err.Error(), "sk-secret") {
			t.Errorf("Auth %s with keys: %v", auth, err)
		}
	}
}

// TestUpstreamOrderRandom spreads requests over the upstreams in random
// order, and still fails over to the others.
func TestUpstreamOrderRandom(t *testing.T) {
	a, baseA := startScripted(t, 200)
	b, baseB := startScripted(t, 200)
	ups := []keypool.Upstream{
		{Name: "a", BaseURL: baseA, Keys: []keypool.Key{keypool.NewKey("sk-a")}},
		{Name: "b", BaseURL: baseB, Keys: []keypool.Key{keypool.NewKey("sk-b")}},
	}
	count := func(opts ...keypool.Option) (int, int) {
		a.mu.Lock()
		a.n, a.auths = 0, nil
		a.mu.Unlock()
		b.mu.Lock()
		b.n, b.auths = 0, nil
		b.mu.Unlock()
		tr, err := keypool.New(append([]keypool.Option{keypool.WithUpstreams(ups...)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		for range 200 {
			if code := sendWithAuth(t, tr, ""); code != 200 {
				t.Fatalf("status %d", code)
			}
		}
		aa, _ := a.seen()
		bb, _ := b.seen()
		return len(aa), len(bb)
	}
	if na, nb := count(); na != 200 || nb != 0 {
		t.Fatalf("priority order: a %d, b %d; want all on a", na, nb)
	}
	// 200 fair coin flips: fewer than 60 on either side has odds below 1e-8.
	if na, nb := count(keypool.WithUpstreamOrder(keypool.OrderRandom)); na < 60 || nb < 60 {
		t.Fatalf("random order: a %d, b %d", na, nb)
	}
	// Failover still reaches the other upstream whichever comes first.
	a.mu.Lock()
	a.script = []int{401}
	a.mu.Unlock()
	if na, nb := count(keypool.WithUpstreamOrder(keypool.OrderRandom)); nb != 200 || na != 1 {
		t.Fatalf("random order with a revoked: a %d, b %d; want one try on a, then all on b", na, nb)
	}
	if _, err := keypool.New(keypool.WithUpstreams(ups...), keypool.WithUpstreamOrder(9)); err == nil {
		t.Fatal("an unknown order was accepted")
	}
}
