package keypool_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// recorder collects observer events.
type recorder struct {
	mu       sync.Mutex
	attempts []keypool.AttemptEvent
	states   []keypool.StateEvent
	checks   []keypool.CheckResult
}

func (r *recorder) Attempt(e keypool.AttemptEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, e)
}

func (r *recorder) StateChange(e keypool.StateEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, e)
}

func (r *recorder) Checked(c keypool.CheckResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, c)
}

func (r *recorder) outcomes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.attempts {
		out = append(out, a.Outcome.String())
	}
	return out
}

// setup starts the fake with keys and a transport over one upstream holding
// the same keys in the same order.
func setup(t *testing.T, opts []keypool.Option, keys ...fakeopenai.Key) (*fakeopenai.Server, *keypool.Transport, *recorder) {
	t.Helper()
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	var creds []keypool.Key
	for _, k := range keys {
		creds = append(creds, keypool.NewKey(k.Secret))
	}
	rec := &recorder{}
	all := append([]keypool.Option{
		keypool.WithUpstreams(keypool.Upstream{BaseURL: base, Keys: creds}),
		keypool.WithObserver(rec),
		keypool.WithBackoff(time.Millisecond, 2*time.Millisecond),
	}, opts...)
	tr, err := keypool.New(all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return fake, tr, rec
}

func chatBody(model string, stream bool) string {
	if stream {
		return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello there"}],"stream":true,"stream_options":{"include_usage":true}}`, model)
	}
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello there"}]}`, model)
}

// post sends a chat request through tr; the URL's host is irrelevant, the
// transport moves it onto the upstream.
func post(t *testing.T, tr http.RoundTripper, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer client-token")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("request failed: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, b
}

func keysServed(fake *fakeopenai.Server) []string {
	var out []string
	for _, r := range fake.Records() {
		out = append(out, r.Key)
	}
	return out
}

func stateOf(t *testing.T, tr *keypool.Transport, secret string) keypool.KeyInfo {
	t.Helper()
	info, ok := tr.Pool().Key(keypool.NewKey(secret).ID())
	if !ok {
		t.Fatalf("no key for %s", secret[:6])
	}
	return info
}

// TestOutcomeTable runs one request per row of the outcome table through the
// transport against the fake upstream.
func TestOutcomeTable(t *testing.T) {
	good := fakeopenai.Key{Secret: "sk-good-0001"}
	tests := []struct {
		name       string
		first      fakeopenai.Key
		model      string
		body       string
		wantStatus int
		wantKeys   []string // secrets in the order the fake saw them
		wantState  keypool.State
		wantOut    []string
	}{
		{"2xx", fakeopenai.Key{Secret: "sk-first"}, "gpt-4o", "", 200,
			[]string{"sk-first"}, keypool.StateReady, []string{"success"}},
		{"401 invalid_api_key", fakeopenai.Key{Secret: "sk-first", Behavior: fakeopenai.Revoked}, "gpt-4o", "", 200,
			[]string{"sk-first", "sk-good-0001"}, keypool.StateRevoked, []string{"revoked", "success"}},
		{"429 access_terminated", fakeopenai.Key{Secret: "sk-first", Behavior: fakeopenai.Terminated}, "gpt-4o", "", 200,
			[]string{"sk-first", "sk-good-0001"}, keypool.StateRevoked, []string{"revoked", "success"}},
		{"429 insufficient_quota", fakeopenai.Key{Secret: "sk-first", Behavior: fakeopenai.OverQuota}, "gpt-4o", "", 200,
			[]string{"sk-first", "sk-good-0001"}, keypool.StateOverQuota, []string{"over_quota", "success"}},
		{"429 billing_not_active", fakeopenai.Key{Secret: "sk-first", Behavior: fakeopenai.BillingInactive}, "gpt-4o", "", 200,
			[]string{"sk-first", "sk-good-0001"}, keypool.StateOverQuota, []string{"over_quota", "success"}},
		{"403/404 model_not_found", fakeopenai.Key{Secret: "sk-first", Models: []string{"gpt-4o-mini"}}, "gpt-4o", "", 200,
			[]string{"sk-first", "sk-good-0001"}, keypool.StateUnchecked, []string{"model_not_found", "success"}},
		{"500", fakeopenai.Key{Secret: "sk-first", Behavior: fakeopenai.Flaky, FailFirst: 1, FailStatus: 500}, "gpt-4o", "", 200,
			[]string{"sk-first", "sk-good-0001"}, keypool.StateUnchecked, []string{"server_error", "success"}},
		{"502", fakeopenai.Key{Secret: "sk-first", Behavior: fakeopenai.Flaky, FailFirst: 1, FailStatus: 502}, "gpt-4o", "", 200,
			[]string{"sk-first", "sk-good-0001"}, keypool.StateUnchecked, []string{"server_error", "success"}},
		{"503", fakeopenai.Key{Secret: "sk-first", Behavior: fakeopenai.Flaky, FailFirst: 1, FailStatus: 503}, "gpt-4o", "", 200,
			[]string{"sk-first", "sk-good-0001"}, keypool.StateUnchecked, []string{"server_error", "success"}},
		{"other 4xx returned as is", fakeopenai.Key{Secret: "sk-first"}, "gpt-4o", `{"model":"gpt-4o","messages":`, 400,
			[]string{"sk-first"}, keypool.StateUnchecked, []string{"client_error"}},
		{"429 request too large returned as is", fakeopenai.Key{Secret: "sk-first", TPM: 50}, "gpt-4o",
			`{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("long words ", 100) + `"}]}`, 429,
			[]string{"sk-first"}, keypool.StateUnchecked, []string{"too_large"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, tr, rec := setup(t, nil, tt.first, good)
			body := tt.body
			if body == "" {
				body = chatBody(tt.model, false)
			}
			resp, b := post(t, tr, body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, b)
			}
			if got := keysServed(fake); !equal(got, tt.wantKeys) {
				t.Fatalf("fake saw keys %v, want %v", got, tt.wantKeys)
			}
			if got := rec.outcomes(); !equal(got, tt.wantOut) {
				t.Fatalf("outcomes %v, want %v", got, tt.wantOut)
			}
			if st := stateOf(t, tr, tt.first.Secret).State; st != tt.wantState {
				t.Fatalf("first key state %v, want %v", st, tt.wantState)
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRateLimitedFailsOverAndCools(t *testing.T) {
	fake, tr, rec := setup(t, nil, fakeopenai.Key{Secret: "sk-small", RPM: 1}, fakeopenai.Key{Secret: "sk-big"})
	// Teach the pool nothing first: the small key is picked, serves one request.
	post(t, tr, chatBody("gpt-4o", false))
	if got := keysServed(fake); !equal(got, []string{"sk-small"}) {
		t.Fatalf("first request went to %v", got)
	}
	// Its answer said remaining 0: the next request goes straight to the big key,
	// without a 429 from the small one.
	resp, _ := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 || fake.Count("sk-small") != 1 || fake.Count("sk-big") != 1 {
		t.Fatalf("status %d, small %d, big %d", resp.StatusCode, fake.Count("sk-small"), fake.Count("sk-big"))
	}
	if st := stateOf(t, tr, "sk-small"); st.State != keypool.StateCooling || st.CoolingUntil.IsZero() {
		t.Fatalf("small key %v until %v", st.State, st.CoolingUntil)
	}
	_ = rec
}

func TestRateLimit429FailsOver(t *testing.T) {
	// Both keys start unknown; the probe limit lets two requests reach the
	// 1-RPM key before any answer, so one gets a real requests 429.
	fake, tr, rec := setup(t, []keypool.Option{keypool.WithProbeLimit(1)},
		fakeopenai.Key{Secret: "sk-small", RPM: 1}, fakeopenai.Key{Secret: "sk-big"})
	fake.AddKey(fakeopenai.Key{Secret: "sk-direct"})
	// Spend the small key's only request directly, so the pool does not know.
	req, _ := http.NewRequest("POST", fakeURL(t, tr)+"/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
	req.Header.Set("Authorization", "Bearer sk-small")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, _ = post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := rec.outcomes(); !equal(got, []string{"rate_limited", "success"}) {
		t.Fatalf("outcomes %v", got)
	}
	st := stateOf(t, tr, "sk-small")
	if st.State != keypool.StateCooling || len(st.Limits) != 1 || st.Limits[0].CoolingUntil.IsZero() {
		t.Fatalf("small key %+v", st)
	}
}

// fakeURL returns the fake's base URL from the transport's snapshot upstream.
func fakeURL(t *testing.T, tr *keypool.Transport) string {
	t.Helper()
	return "http://" + tr.Snapshot()[0].Upstream + "/v1"
}

func TestCloneMismatchedOrganization(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-multi", Orgs: []fakeopenai.Org{{ID: "org-a", Default: true}, {ID: "org-b"}}})
	multi := keypool.NewKey("sk-multi")
	rec := &recorder{}
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: base, Keys: []keypool.Key{
		multi.WithOrganization("org-gone"), multi.WithOrganization("org-b")}}), keypool.WithObserver(rec))
	if err != nil {
		t.Fatal(err)
	}
	resp, b := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, b)
	}
	recs := fake.Records()
	if len(recs) != 2 || recs[0].Org != "org-gone" || recs[0].Status != 401 || recs[1].Org != "org-b" || recs[1].OrgUsed != "org-b" {
		t.Fatalf("records %+v", recs)
	}
	gone, _ := tr.Pool().Key(multi.WithOrganization("org-gone").ID())
	if gone.State != keypool.StateRevoked {
		t.Fatalf("clone state %v", gone.State)
	}
}

func TestServiceAccountNeverSentOrganization(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-svcacct-abc"})
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: base,
		Keys: []keypool.Key{keypool.NewKey("sk-svcacct-abc").WithOrganization("org-x").WithProject("proj_y")}}))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
	req.Header.Set("OpenAI-Organization", "org-from-client")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := fake.Records()[0]
	if resp.StatusCode != 200 || r.Org != "" || r.Project != "" {
		t.Fatalf("status %d, org %q, project %q", resp.StatusCode, r.Org, r.Project)
	}
}

func TestNetworkErrorFailsOverToNextUpstream(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/v1"
	dead.Close() // connection refused from now on
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-live"})
	rec := &recorder{}
	tr, err := keypool.New(
		keypool.WithUpstreams(
			keypool.Upstream{Name: "dead", BaseURL: deadURL, Keys: []keypool.Key{keypool.NewKey("sk-dead-1"), keypool.NewKey("sk-dead-2")}},
			keypool.Upstream{Name: "live", BaseURL: base, Keys: []keypool.Key{keypool.NewKey("sk-live")}}),
		keypool.WithObserver(rec), keypool.WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 || fake.Count("sk-live") != 1 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// The second attempt skips the dead upstream's other key: a network
	// error moves the request on to the next upstream.
	if len(rec.attempts) != 2 || rec.attempts[0].Upstream != "dead" || rec.attempts[0].Err == nil || rec.attempts[1].Upstream != "live" {
		t.Fatalf("attempts %+v", rec.attempts)
	}
}

func TestAllFailedReturnsLastAnswerNotToRetry(t *testing.T) {
	fake, tr, rec := setup(t, nil,
		fakeopenai.Key{Secret: "sk-r1", Behavior: fakeopenai.Revoked},
		fakeopenai.Key{Secret: "sk-r2", Behavior: fakeopenai.OverQuota})
	resp, b := post(t, tr, chatBody("gpt-4o", false))
	// The last answer was about the pool's key (out of quota): the caller
	// gets keypool's own error, which says so without the upstream's text.
	if resp.StatusCode != 503 || resp.Header.Get("X-Should-Retry") != "false" {
		t.Fatalf("status %d, x-should-retry %q", resp.StatusCode, resp.Header.Get("X-Should-Retry"))
	}
	var e struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Code != "no_key_available" || e.Error.Type != "server_error" ||
		!strings.Contains(e.Error.Message, "429 insufficient_quota/insufficient_quota") || bytes.Contains(b, []byte("sk-r")) {
		t.Fatalf("body %s", b)
	}
	if fake.Count("sk-r1") != 1 || fake.Count("sk-r2") != 1 {
		t.Fatal("a key was tried twice")
	}
	// Now nothing is usable: keypool's refusal at once, a 503 the SDKs do
	// not retry, no request upstream, and the reason for Go callers.
	resp, b = post(t, tr, chatBody("gpt-4o", false))
	nk, ok := keypool.Refusal(resp)
	if !ok || resp.StatusCode != 503 || resp.Header.Get("X-Should-Retry") != "false" || len(fake.Records()) != 2 ||
		!errors.Is(nk, keypool.ErrNoKey) || errors.Is(nk, keypool.ErrModelNotFound) || !bytes.Contains(b, []byte("no_key_available")) {
		t.Fatalf("status %d, refusal %v, body %s", resp.StatusCode, nk, b)
	}
	_ = rec
}

func TestAllFailedWithRetryAfterWhenAKeyFreesSoon(t *testing.T) {
	// One key, rate-limited by a 429 whose Retry-After is 2s: with no wait
	// budget the caller gets the 429, marked not to retry, with Retry-After.
	_, tr, _ := setup(t, []keypool.Option{keypool.WithMaxWait(0), keypool.WithProbeLimit(1)},
		fakeopenai.Key{Secret: "sk-one", RPM: 1})
	post(t, tr, chatBody("gpt-4o", false)) // spends the only request; pool learns remaining 0
	resp, b := post(t, tr, chatBody("gpt-4o", false))
	nk, ok := keypool.Refusal(resp)
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if !ok || resp.StatusCode != 429 || nk.FreeAt.IsZero() || time.Until(nk.FreeAt) > time.Minute ||
		ra < 1 || ra > 60 || resp.Header.Get("Retry-After-Ms") == "" || !bytes.Contains(b, []byte("rate_limit_exceeded")) {
		t.Fatalf("status %d, headers %v, refusal %v", resp.StatusCode, resp.Header, nk)
	}
}

func TestStreaming(t *testing.T) {
	t.Run("passes bytes through and counts usage", func(t *testing.T) {
		fake, tr, rec := setup(t, nil, fakeopenai.Key{Secret: "sk-s"})
		resp, b := post(t, tr, chatBody("gpt-4o", true))
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("status %d ct %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) || !bytes.Contains(b, []byte(`"choices":[]`)) {
			t.Fatalf("stream not passed through whole: %s", b)
		}
		r := fake.Records()[0]
		info := stateOf(t, tr, "sk-s")
		if len(info.Usage) != 1 || info.Usage[0].Family != "gpt-4o" || info.Usage[0].Requests != 1 ||
			info.Usage[0].InputTokens != int64(r.PromptTokens) || info.Usage[0].OutputTokens != int64(r.CompletionTokens) || r.CompletionTokens == 0 {
			t.Fatalf("usage %+v, fake %+v", info.Usage, r)
		}
		if info.InFlight != 0 {
			t.Fatalf("in flight %d after EOF", info.InFlight)
		}
		rec.mu.Lock()
		last := rec.attempts[len(rec.attempts)-1]
		rec.mu.Unlock()
		if !last.Final || !last.Stream || last.Usage.OutputTokens != int64(r.CompletionTokens) {
			t.Fatalf("final event %+v", last)
		}
	})
	t.Run("responses API stream usage", func(t *testing.T) {
		fake, tr, _ := setup(t, nil, fakeopenai.Key{Secret: "sk-s"})
		req, _ := http.NewRequest("POST", "http://client.invalid/v1/responses", strings.NewReader(`{"model":"o3","input":"hi","stream":true}`))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(b, []byte("event: response.completed")) {
			t.Fatalf("no completed event: %s", b)
		}
		r := fake.Records()[0]
		u := stateOf(t, tr, "sk-s").Usage
		if len(u) != 1 || u[0].OutputTokens != int64(r.CompletionTokens) || u[0].ReasoningTokens == 0 {
			t.Fatalf("usage %+v fake %+v", u, r)
		}
	})
	t.Run("a stream opening with an error event fails over", func(t *testing.T) {
		fake, tr, rec := setup(t, nil, fakeopenai.Key{Secret: "sk-bad", Behavior: fakeopenai.StreamErrorFirst}, fakeopenai.Key{Secret: "sk-ok"})
		resp, b := post(t, tr, chatBody("gpt-4o", true))
		if resp.StatusCode != 200 || bytes.Contains(b, []byte(`"error"`)) || fake.Count("sk-ok") != 1 {
			t.Fatalf("status %d body %s", resp.StatusCode, b)
		}
		if got := rec.outcomes(); !equal(got, []string{"server_error", "success"}) {
			t.Fatalf("outcomes %v", got)
		}
	})
	t.Run("an error mid-stream is passed through, no failover", func(t *testing.T) {
		fake, tr, _ := setup(t, nil, fakeopenai.Key{Secret: "sk-mid", Behavior: fakeopenai.StreamErrorMidway}, fakeopenai.Key{Secret: "sk-ok"})
		_, b := post(t, tr, chatBody("gpt-4o", true))
		if !bytes.Contains(b, []byte(`"server_error"`)) || fake.Count("sk-ok") != 0 {
			t.Fatalf("body %s", b)
		}
	})
	t.Run("read event by event as they come", func(t *testing.T) {
		_, tr, _ := setup(t, nil, fakeopenai.Key{Secret: "sk-s"})
		req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", true)))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		events := 0
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				events++
			}
		}
		if events < 4 {
			t.Fatalf("%d events", events)
		}
	})
}

// TestTimeouts runs under synctest: the fake is served over in-memory pipes
// and its delays pass in fake time.
func TestTimeouts(t *testing.T) {
	t.Run("slow headers fail over after the timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fake := fakeopenai.New(fakeopenai.Config{},
				fakeopenai.Key{Secret: "sk-slow", Behavior: fakeopenai.SlowHeaders, Delay: time.Hour},
				fakeopenai.Key{Secret: "sk-fast"})
			pipe, closePipe := fakeopenai.ServePipe(fake)
			defer closePipe()
			defer fake.Close()
			tr, err := keypool.New(keypool.WithBase(pipe), keypool.WithUpstreams(keypool.Upstream{
				BaseURL: fakeopenai.PipeBaseURL, Timeout: 5 * time.Second,
				Keys: []keypool.Key{keypool.NewKey("sk-slow"), keypool.NewKey("sk-fast")}}),
				keypool.WithBackoff(time.Second, time.Second))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, b := post(t, tr, chatBody("gpt-4o", false))
			if resp.StatusCode != 200 || fake.Count("sk-fast") != 1 {
				t.Fatalf("status %d %s", resp.StatusCode, b)
			}
			// 5s timeout, then a backoff of 1s ±20%.
			if took := time.Since(start); took < 5800*time.Millisecond || took > 6200*time.Millisecond {
				t.Fatalf("took %v", took)
			}
		})
	})
	t.Run("a stream that never begins fails over after the stream timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fake := fakeopenai.New(fakeopenai.Config{},
				fakeopenai.Key{Secret: "sk-hang", Behavior: fakeopenai.StreamHang},
				fakeopenai.Key{Secret: "sk-ok"})
			pipe, closePipe := fakeopenai.ServePipe(fake)
			defer closePipe()
			defer fake.Close()
			rec := &recorder{}
			tr, err := keypool.New(keypool.WithBase(pipe), keypool.WithObserver(rec), keypool.WithUpstreams(keypool.Upstream{
				BaseURL: fakeopenai.PipeBaseURL, StreamTimeout: 3 * time.Second,
				Keys: []keypool.Key{keypool.NewKey("sk-hang"), keypool.NewKey("sk-ok")}}),
				keypool.WithBackoff(time.Millisecond, time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, b := post(t, tr, chatBody("gpt-4o", true))
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte("[DONE]")) {
				t.Fatalf("status %d %s", resp.StatusCode, b)
			}
			if took := time.Since(start); took < 3*time.Second || took > 3100*time.Millisecond {
				t.Fatalf("took %v", took)
			}
			rec.mu.Lock()
			first := rec.attempts[0]
			rec.mu.Unlock()
			if !errors.Is(first.Err, keypool.ErrAttemptTimeout) || first.Outcome != keypool.OutcomeServerError {
				t.Fatalf("first attempt %+v", first)
			}
		})
	})
	t.Run("caller cancel stops at once and does not count against the key", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-slow", Behavior: fakeopenai.SlowHeaders, Delay: time.Minute})
			pipe, closePipe := fakeopenai.ServePipe(fake)
			defer closePipe()
			defer fake.Close()
			rec := &recorder{}
			tr, _ := keypool.New(keypool.WithBase(pipe), keypool.WithObserver(rec), keypool.WithUpstreams(keypool.Upstream{
				BaseURL: fakeopenai.PipeBaseURL, Keys: []keypool.Key{keypool.NewKey("sk-slow")}}))
			ctx, cancel := context.WithCancel(context.Background())
			go func() { time.Sleep(2 * time.Second); cancel() }()
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
			start := time.Now()
			_, err := tr.RoundTrip(req)
			if !errors.Is(err, context.Canceled) || time.Since(start) != 2*time.Second {
				t.Fatalf("err %v after %v", err, time.Since(start))
			}
			info := tr.Snapshot()[0]
			if info.State != keypool.StateUnchecked || info.InFlight != 0 {
				t.Fatalf("key after cancel: %+v", info)
			}
			if got := rec.outcomes(); !equal(got, []string{"cancelled"}) {
				t.Fatalf("outcomes %v", got)
			}
		})
	})
	t.Run("waits for a key that frees up within the budget", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-one", RPM: 60})
			pipe, closePipe := fakeopenai.ServePipe(fake)
			defer closePipe()
			defer fake.Close()
			tr, _ := keypool.New(keypool.WithBase(pipe), keypool.WithProbeLimit(1), keypool.WithUpstreams(keypool.Upstream{
				BaseURL: fakeopenai.PipeBaseURL, Keys: []keypool.Key{keypool.NewKey("sk-one")}}))
			// 60 RPM: drain the bucket, then the next request waits ~1s for a slot.
			for range 60 {
				if resp, b := post(t, tr, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
					t.Fatalf("status %d %s", resp.StatusCode, b)
				}
			}
			start := time.Now()
			resp, _ := post(t, tr, chatBody("gpt-4o", false))
			if resp.StatusCode != 200 || time.Since(start) < 900*time.Millisecond || time.Since(start) > 1100*time.Millisecond {
				t.Fatalf("status %d after %v", resp.StatusCode, time.Since(start))
			}
			for _, r := range fake.Records() {
				if r.Status != 200 {
					t.Fatalf("the fake answered %d: the pool sent a request the key had no room for", r.Status)
				}
			}
		})
	})
}

func TestBodyReplay(t *testing.T) {
	t.Run("a body without GetBody is buffered and replayed", func(t *testing.T) {
		fake, tr, _ := setup(t, nil, fakeopenai.Key{Secret: "sk-r", Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: "sk-ok"})
		body := chatBody("gpt-4o", false)
		req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", io.NopCloser(strings.NewReader(body)))
		req.GetBody = nil
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || fake.Count("sk-ok") != 1 || fake.Records()[1].Model != "gpt-4o" {
			t.Fatalf("status %d records %+v", resp.StatusCode, fake.Records())
		}
	})
	t.Run("a body too big to buffer gets one attempt", func(t *testing.T) {
		fake, tr, _ := setup(t, []keypool.Option{keypool.WithMaxBodyBuffer(16)},
			fakeopenai.Key{Secret: "sk-r", Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: "sk-ok"})
		body := chatBody("gpt-4o", false)
		cb := &closeCounter{Reader: strings.NewReader(body)}
		req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", cb)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || len(fake.Records()) != 1 || resp.Header.Get("X-Should-Retry") != "false" {
			t.Fatalf("status %d, %d upstream requests", resp.StatusCode, len(fake.Records()))
		}
		if cb.closed.Load() == 0 {
			t.Fatal("request body not closed")
		}
	})
	t.Run("a big body with GetBody is replayed through it", func(t *testing.T) {
		fake, tr, _ := setup(t, []keypool.Option{keypool.WithMaxBodyBuffer(16)},
			fakeopenai.Key{Secret: "sk-r", Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: "sk-ok"})
		req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", bytes.NewReader([]byte(chatBody("gpt-4o", false))))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || len(fake.Records()) != 2 {
			t.Fatalf("status %d, %d upstream requests", resp.StatusCode, len(fake.Records()))
		}
	})
	t.Run("the body is closed on every path", func(t *testing.T) {
		_, tr, _ := setup(t, []keypool.Option{keypool.WithMaxWait(0)}, fakeopenai.Key{Secret: "sk-r", Behavior: fakeopenai.Revoked})
		for i := range 2 { // the second finds no usable key
			cb := &closeCounter{Reader: strings.NewReader(chatBody("gpt-4o", false))}
			req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", cb)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			if cb.closed.Load() == 0 {
				t.Fatalf("request %d: body not closed", i)
			}
		}
	})
	t.Run("the caller's request is not modified", func(t *testing.T) {
		_, tr, _ := setup(t, nil, fakeopenai.Key{Secret: "sk-ok"})
		req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions?x=1", strings.NewReader(chatBody("gpt-4o", false)))
		req.Header.Set("Authorization", "Bearer client-token")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.URL.String() != "http://client.invalid/v1/chat/completions?x=1" || req.Header.Get("Authorization") != "Bearer client-token" {
			t.Fatalf("request changed: %s %v", req.URL, req.Header)
		}
		if resp.Request != req {
			t.Fatal("resp.Request is not the caller's request")
		}
	})
}

type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

func TestMultipartUsesPathAsModel(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-audio"}, fakeopenai.Key{Secret: "sk-chat"})
	tr, err := keypool.New(keypool.WithUpstreams(
		keypool.Upstream{Name: "chat-only", BaseURL: base, Keys: []keypool.Key{keypool.NewKey("sk-chat")}, Deny: []string{"/v1/audio/*"}},
		keypool.Upstream{Name: "audio", BaseURL: base, Keys: []keypool.Key{keypool.NewKey("sk-audio")}, Allow: []string{"/v1/audio/*"}},
	))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("model", "whisper-1")
	fw, _ := mw.CreateFormFile("file", "a.wav")
	fw.Write([]byte("RIFF....WAVE"))
	mw.Close()
	req, _ := http.NewRequest("POST", "http://client.invalid/v1/audio/transcriptions", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"text"`)) {
		t.Fatalf("status %d %s", resp.StatusCode, b)
	}
	if r := fake.Records(); len(r) != 1 || r[0].Key != "sk-audio" || r[0].Path != "/v1/audio/transcriptions" {
		t.Fatalf("records %+v", r)
	}
}

func TestURLRewrite(t *testing.T) {
	var got []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RequestURI()+" "+r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[]}`)
	}))
	defer upstream.Close()
	tr, err := keypool.New(keypool.WithUpstream(upstream.URL+"/openai/v1/", "sk-rewrite"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/models?limit=2", "/v1", "/models"} {
		req, _ := http.NewRequest("GET", "http://client.invalid"+path, nil)
		req.Header.Set("Authorization", "Bearer client-token")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := []string{"/openai/v1/models?limit=2 Bearer sk-rewrite", "/openai/v1 Bearer sk-rewrite", "/openai/v1/models Bearer sk-rewrite"}
	if !equal(got, want) {
		t.Fatalf("upstream saw %q", got)
	}
}

// TestConcurrentRateLimitedKeys sends 200 concurrent requests over 10 keys of
// 10 requests per minute each: no key may be sent more than its limit, and
// every request either succeeds or gets a clear answer.
//
// It runs under synctest (the fake over in-memory pipes, in fake time), so
// a loaded machine cannot make a busy key's answer outlast the wait budget.
func TestConcurrentRateLimitedKeys(t *testing.T) {
	synctest.Test(t, testConcurrentRateLimitedKeys)
}

func testConcurrentRateLimitedKeys(t *testing.T) {
	var keys []fakeopenai.Key
	var creds []keypool.Key
	for i := range 10 {
		keys = append(keys, fakeopenai.Key{Secret: fmt.Sprintf("sk-rl-%02d", i), RPM: 10})
		creds = append(creds, keypool.NewKey(keys[i].Secret))
	}
	fake := fakeopenai.New(fakeopenai.Config{}, keys...)
	pipe, closePipe := fakeopenai.ServePipe(fake)
	defer closePipe()
	defer fake.Close()
	// A short wait budget: busy keys answer within it, but an exhausted key
	// frees a slot only after 6s, so requests beyond 10 per key are refused.
	tr, err := keypool.New(keypool.WithBase(pipe), keypool.WithMaxWait(2*time.Second),
		keypool.WithUpstreams(keypool.Upstream{BaseURL: fakeopenai.PipeBaseURL, Keys: creds}))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				if !errors.Is(err, keypool.ErrNoKey) {
					t.Errorf("unexpected error: %v", err)
				}
				refused.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				ok.Add(1)
			} else {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, k := range keys {
		if n := fake.Count(k.Secret); n > 10 {
			t.Errorf("key %s was sent %d requests, its limit is 10", k.Secret, n)
		}
	}
	for _, r := range fake.Records() {
		if r.Status == 429 {
			t.Errorf("the fake answered 429: a key was sent more than it could take")
			break
		}
	}
	if ok.Load() != 100 || ok.Load()+refused.Load() != 200 {
		t.Fatalf("ok %d refused %d, want 100 served", ok.Load(), refused.Load())
	}
	for _, info := range tr.Snapshot() {
		if info.InFlight != 0 {
			t.Fatalf("%s left %d in flight", info.ID, info.InFlight)
		}
	}
}

func TestObserverEvents(t *testing.T) {
	_, tr, rec := setup(t, nil, fakeopenai.Key{Secret: "sk-bad", Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: "sk-ok"})
	post(t, tr, chatBody("gpt-4o", false))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.attempts) != 2 {
		t.Fatalf("%d attempts", len(rec.attempts))
	}
	a1, a2 := rec.attempts[0], rec.attempts[1]
	if a1.Request != a2.Request || a1.Attempt != 1 || a2.Attempt != 2 || a1.Status != 401 || a1.Final || !a2.Final ||
		a1.Key != keypool.NewKey("sk-bad").ID() || a2.Model != "gpt-4o" || a2.Duration < a2.TimeToHeaders || a2.Usage.InputTokens == 0 {
		t.Fatalf("attempts %+v", rec.attempts)
	}
	var sawRevoked, sawReady bool
	for _, s := range rec.states {
		sawRevoked = sawRevoked || s.To == keypool.StateRevoked && s.From == keypool.StateUnchecked && s.Key == a1.Key
		sawReady = sawReady || s.To == keypool.StateReady && s.Key == a2.Key
	}
	if !sawRevoked || !sawReady {
		t.Fatalf("states %+v", rec.states)
	}
	js, _ := json.Marshal(rec)
	if bytes.Contains(js, []byte("sk-bad")) || bytes.Contains(js, []byte("sk-ok")) {
		t.Fatal("an event shows a secret")
	}
}

func TestSnapshotNeverShowsSecrets(t *testing.T) {
	_, tr, _ := setup(t, nil, fakeopenai.Key{Secret: "sk-proj-VISIBLE1"}, fakeopenai.Key{Secret: "sk-proj-VISIBLE2", Behavior: fakeopenai.Revoked})
	post(t, tr, chatBody("gpt-4o", false))
	snap := tr.Snapshot()
	js, _ := json.Marshal(snap)
	text := fmt.Sprintf("%v %+v %#v %s", snap, snap, snap, js)
	if strings.Contains(text, "VISIBLE") {
		t.Fatalf("snapshot shows a secret: %s", text)
	}
	if !strings.Contains(string(js), string(keypool.NewKey("sk-proj-VISIBLE1").ID())) {
		t.Fatal("snapshot lacks the key IDs")
	}
	errText := fmt.Sprintf("%v", tr)
	if strings.Contains(errText, "VISIBLE") {
		t.Fatal("printing the transport shows a secret")
	}
}

func TestFinalAnswerCarriesRetryAfter(t *testing.T) {
	// Both keys spent behind the pool's back (2 RPM each): each answers a
	// requests 429, then no key is left within the wait budget. The caller
	// gets the last 429, marked not to retry, with when a key frees up.
	fake, tr, _ := setup(t, []keypool.Option{keypool.WithMaxWait(time.Second)},
		fakeopenai.Key{Secret: "sk-a", RPM: 2}, fakeopenai.Key{Secret: "sk-b", RPM: 2})
	for _, secret := range []string{"sk-a", "sk-b"} {
		for range 2 {
			req, _ := http.NewRequest("POST", fakeURL(t, tr)+"/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
			req.Header.Set("Authorization", "Bearer "+secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	fake.Reset()
	resp, b := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 429 || resp.Header.Get("X-Should-Retry") != "false" {
		t.Fatalf("status %d x-should-retry %q: %s", resp.StatusCode, resp.Header.Get("X-Should-Retry"), b)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 31 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if !bytes.Contains(b, []byte(`"type":"requests"`)) || len(fake.Records()) != 2 {
		t.Fatalf("body %s, %d upstream requests", b, len(fake.Records()))
	}
}

func TestRouteOf(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/files/file-abc123/content": "/v1/files",
		"/v1/audio/transcriptions":      "/v1/audio/transcriptions",
		"/v1/responses/resp_9f":         "/v1/responses",
		"/v1/models/gpt-4o":             "/v1/models",
		"/v1/models":                    "/v1/models",
		"/v1":                           "/v1",
		"/":                             "/",
		"":                              "",
		"/openai/deployments/d1/chat":   "/openai/deployments",
	} {
		if got := keypool.RouteOf(in); got != want {
			t.Errorf("routeOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUpstreamsOnly(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-first"}, fakeopenai.Key{Secret: "sk-second"})
	tr, err := keypool.New(keypool.WithUpstreams(
		keypool.Upstream{Name: "first", BaseURL: base, Keys: []keypool.Key{keypool.NewKey("sk-first")}},
		keypool.Upstream{Name: "second", BaseURL: base, Keys: []keypool.Key{keypool.NewKey("sk-second")}}))
	if err != nil {
		t.Fatal(err)
	}
	send := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
		resp, err := tr.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	if _, err := send(keypool.ContextWithUpstreams(context.Background(), "second")); err != nil {
		t.Fatal(err)
	}
	if r := fake.Records(); len(r) != 1 || r[0].Key != "sk-second" {
		t.Fatalf("records %+v", r)
	}
	resp, err := send(keypool.ContextWithUpstreams(context.Background()))
	nk, ok := keypool.Refusal(resp)
	if err != nil || !ok || resp.StatusCode != 404 || nk.Reason != "no upstream this client may use serves this model" ||
		!errors.Is(nk, keypool.ErrModelNotFound) || len(fake.Records()) != 1 {
		t.Fatalf("err %v, refusal %v", err, nk)
	}
}

func TestDotSegmentsRefused(t *testing.T) {
	fake, tr, _ := setup(t, nil, fakeopenai.Key{Secret: "sk-dots"})
	for _, p := range []string{"/v1/../x", "/v1/models/./gpt-4o", "/v1/a/.."} {
		cb := &closeCounter{Reader: strings.NewReader("{}")}
		req, _ := http.NewRequest("POST", "http://client.invalid/", cb)
		req.URL.Path = p // as a server decodes %2e%2e
		if _, err := tr.RoundTrip(req); !errors.Is(err, keypool.ErrBadPath) || cb.closed.Load() == 0 {
			t.Errorf("%s: err %v, body closed %v", p, err, cb.closed.Load() != 0)
		}
	}
	if len(fake.Records()) != 0 {
		t.Fatalf("the upstream was sent %+v", fake.Records())
	}
}

// TestRequestObserver: a request's own observer gets that request's attempts
// (both, the final one with its usage once the body is read), and nothing of
// another request.
func TestRequestObserver(t *testing.T) {
	_, tr, global := setup(t, nil, fakeopenai.Key{Secret: "sk-bad", Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: "sk-ok"})
	mine := &recorder{}
	req, _ := http.NewRequestWithContext(keypool.ContextWithObserver(context.Background(), mine),
		"POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	mine.mu.Lock()
	before := len(mine.attempts)
	mine.mu.Unlock()
	if before != 1 {
		t.Fatalf("%d attempts before the body was read, want the failed one only", before)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	post(t, tr, chatBody("gpt-4o", false)) // another request, without an observer of its own

	mine.mu.Lock()
	defer mine.mu.Unlock()
	if len(mine.attempts) != 2 {
		t.Fatalf("request observer got %d attempts, want 2", len(mine.attempts))
	}
	a1, a2 := mine.attempts[0], mine.attempts[1]
	if a1.Outcome != keypool.OutcomeRevoked || a1.Final || !a2.Final || a2.Status != 200 || a2.Usage.InputTokens == 0 || a1.Request != a2.Request {
		t.Fatalf("attempts %+v", mine.attempts)
	}
	global.mu.Lock()
	defer global.mu.Unlock()
	if len(global.attempts) != 3 {
		t.Fatalf("transport observer got %d attempts, want 3", len(global.attempts))
	}
}

// R4: a 503 whose body never ends hangs RoundTrip: the attempt timer is
// stopped before the error body is read.
func TestErrorBodyReadUnderAttemptDeadline(t *testing.T) {
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
func TestAttemptContextEndsAtEOFWithoutClose(t *testing.T) {
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
func TestStreamErrorEventAtEOFFailsOver(t *testing.T) {
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

// R10: a policy that does not retry a transport error (here: timeouts are
// final) makes RoundTrip return (nil, nil).
func TestFinalTransportErrorIsReturned(t *testing.T) {
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		r.Body.Close()
		return nil, errors.New("dial tcp: connection refused")
	})
	pol := keypool.PolicyFunc(func(a *keypool.Answer) keypool.Outcome {
		if a.Err != nil {
			return keypool.OutcomeClientError // "do not fail over on network errors"
		}
		return keypool.DefaultPolicy().Classify(a)
	})
	tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithPolicy(pol))
	resp, err := tr.RoundTrip(rvPost(context.Background()))
	if resp == nil && err == nil {
		t.Fatal("RoundTrip returned (nil, nil)")
	}
}
