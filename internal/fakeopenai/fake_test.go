package fakeopenai_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool/internal/fakeopenai"
)

// fakeClock is a Config.Now that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type call struct {
	method, path, key string
	header            map[string]string
	body              any // JSON-encoded; a string or []byte is sent as is
	contentType       string
	acceptEncoding    []string // Accept-Encoding lines, sent as they are
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// apiErr is a decoded {"error":{…}} body.
type apiErr struct {
	Message, Type string
	Param, Code   any
}

func do(t *testing.T, client *http.Client, base string, c call) reply {
	t.Helper()
	r, err := send(context.Background(), client, base, c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{r.StatusCode, r.Header, b}
}

func send(ctx context.Context, client *http.Client, base string, c call) (*http.Response, error) {
	var body io.Reader
	switch b := c.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(j)
	}
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, base+c.path, body)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	} else if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	for _, v := range c.acceptEncoding {
		req.Header.Add("Accept-Encoding", v)
	}
	return client.Do(req)
}

func (r reply) apiError(t *testing.T) apiErr {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q", ct)
	}
	var env map[string]map[string]any
	if err := json.Unmarshal(r.body, &env); err != nil || len(env) != 1 || env["error"] == nil {
		t.Fatalf("not an error envelope (%v): %s", err, r.body)
	}
	e := env["error"]
	if len(e) != 4 {
		t.Errorf("error fields = %v, want exactly message, type, param, code", e)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e[k]; !ok {
			t.Errorf("error lacks %q: %s", k, r.body)
		}
	}
	msg, _ := e["message"].(string)
	typ, _ := e["type"].(string)
	return apiErr{Message: msg, Type: typ, Param: e["param"], Code: e["code"]}
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	return m
}

// path digs into decoded JSON: path(m, "choices", 0, "message", "content").
func path(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func chat(model string, kv ...any) map[string]any {
	m := map[string]any{"model": model, "messages": []any{map[string]any{"role": "user", "content": "Say hello."}}}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func header(t *testing.T, h http.Header, name string) int {
	t.Helper()
	n, err := strconv.Atoi(h.Get(name))
	if err != nil {
		t.Fatalf("%s = %q: %v", name, h.Get(name), err)
	}
	return n
}

func reset(t *testing.T, h http.Header, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(h.Get(name))
	if err != nil {
		t.Fatalf("%s = %q: %v", name, h.Get(name), err)
	}
	return d
}

const reply6 = "Hello from the fake OpenAI server."

func TestBehaviors(t *testing.T) {
	tests := []struct {
		key        fakeopenai.Key
		wantStatus int
		wantType   string
		wantCode   any
		wantMsg    string // prefix
	}{
		{key: fakeopenai.Key{Behavior: fakeopenai.OK}, wantStatus: 200},
		{key: fakeopenai.Key{Behavior: fakeopenai.Revoked}, wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key",
			wantMsg: "Incorrect API key provided: sk-test-*"},
		{key: fakeopenai.Key{Behavior: fakeopenai.OverQuota}, wantStatus: 429, wantType: "insufficient_quota", wantCode: "insufficient_quota"},
		{key: fakeopenai.Key{Behavior: fakeopenai.BillingInactive}, wantStatus: 429, wantType: "billing_not_active", wantCode: nil},
		{key: fakeopenai.Key{Behavior: fakeopenai.Terminated}, wantStatus: 429, wantType: "access_terminated", wantCode: "access_terminated"},
		{key: fakeopenai.Key{Behavior: fakeopenai.Flaky, FailFirst: 1}, wantStatus: 500, wantType: "server_error", wantCode: nil},
		{key: fakeopenai.Key{Behavior: fakeopenai.Flaky, FailFirst: 1, FailStatus: 502}, wantStatus: 502, wantType: "cf_bad_gateway", wantCode: float64(502)},
		{key: fakeopenai.Key{Behavior: fakeopenai.Flaky, FailFirst: 1, FailStatus: 503}, wantStatus: 503, wantType: "server_error", wantCode: nil,
			wantMsg: "That model is currently overloaded with other requests."},
		{key: fakeopenai.Key{Behavior: fakeopenai.Flaky, FailEvery: 2}, wantStatus: 200}, // the first request is the 1st, not the 2nd
		{key: fakeopenai.Key{Behavior: fakeopenai.SlowHeaders, Delay: time.Millisecond}, wantStatus: 200},
		{key: fakeopenai.Key{Behavior: fakeopenai.StreamErrorFirst}, wantStatus: 500, wantType: "server_error", wantCode: nil},
		{key: fakeopenai.Key{Behavior: fakeopenai.StreamErrorMidway}, wantStatus: 200},
	}
	for _, tt := range tests {
		name := tt.key.Behavior.String()
		if tt.key.FailStatus != 0 || tt.key.FailEvery != 0 {
			name += fmt.Sprintf("/%d-%d", tt.key.FailStatus, tt.key.FailEvery)
		}
		t.Run(name, func(t *testing.T) {
			tt.key.Secret = "sk-test-abcdefghijklmnopqrstuvwxyz"
			s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, tt.key)
			r := do(t, http.DefaultClient, base, call{path: "/chat/completions", key: tt.key.Secret, body: chat("gpt-4o")})
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			if !strings.HasPrefix(r.header.Get("x-request-id"), "req_") || r.header.Get("openai-version") != "2020-10-01" {
				t.Errorf("common headers missing: %v", r.header)
			}
			spent := 0
			if r.status == 200 {
				spent = 1
				if got := path(r.json(t), "choices", 0, "message", "content"); got != reply6 {
					t.Errorf("content = %v", got)
				}
			} else {
				e := r.apiError(t)
				if e.Type != tt.wantType || e.Code != tt.wantCode || !strings.HasPrefix(e.Message, tt.wantMsg) {
					t.Errorf("error = %+v, want type %q code %v message %q…", e, tt.wantType, tt.wantCode, tt.wantMsg)
				}
				if strings.Contains(e.Message, tt.key.Secret) {
					t.Errorf("message shows the whole key: %s", e.Message)
				}
			}
			if got := s.Count(tt.key.Secret); got != 1 {
				t.Errorf("Count = %d, want 1", got)
			}
			if got := s.Completions(tt.key.Secret); got != spent {
				t.Errorf("Completions = %d, want %d", got, spent)
			}
			if recs := s.Records(); len(recs) != 1 || recs[0].Status != tt.wantStatus || recs[0].Model != "gpt-4o" {
				t.Errorf("Records = %+v", recs)
			}
		})
	}
}

func TestFlakySchedule(t *testing.T) {
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-flaky", Behavior: fakeopenai.Flaky, FailFirst: 2, FailEvery: 3})
	var got []int
	for range 8 {
		got = append(got, do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-flaky", body: chat("gpt-4o")}).status)
	}
	// 1, 2 fail (FailFirst), then every 3rd after them: 5 and 8.
	if want := []int{500, 500, 200, 200, 500, 200, 200, 500}; !slices.Equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if got := s.Completions("sk-flaky"); got != 4 {
		t.Errorf("Completions = %d, want 4", got)
	}
}

func TestRequestErrors(t *testing.T) {
	orgs := []fakeopenai.Org{{ID: "org-main", Title: "Main", Default: true}}
	keys := []fakeopenai.Key{
		{Secret: "sk-good", Orgs: orgs},
		{Secret: "sk-svcacct-robot", Orgs: orgs},
		{Secret: "sk-proj-project", Orgs: orgs},
		{Secret: "sk-unverified", Unverified: true},
		{Secret: "sk-revoked", Behavior: fakeopenai.Revoked},
		{Secret: "sk-broke", Behavior: fakeopenai.OverQuota},
	}
	tests := []struct {
		name       string
		call       call
		wantStatus int
		wantType   string
		wantCode   any
		wantParam  any
		wantMsg    string // exact when set
	}{
		{name: "missing auth", call: call{path: "/chat/completions", body: chat("gpt-4o")},
			wantStatus: 401, wantType: "invalid_request_error", wantMsg: "Missing bearer or basic authentication in header"},
		{name: "unknown key", call: call{path: "/chat/completions", key: "sk-unknown-0123456789abcdef", body: chat("gpt-4o")},
			wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key",
			wantMsg: "Incorrect API key provided: sk-unkno***************cdef. You can find your API key at https://platform.openai.com/account/api-keys."},
		{name: "azure api-key header", call: call{path: "/chat/completions", header: map[string]string{"api-key": "sk-good"}, body: chat("gpt-4o")},
			wantStatus: 200},
		{name: "unknown path", call: call{path: "/xyz", key: "sk-good", body: "{}"},
			wantStatus: 404, wantType: "invalid_request_error", wantMsg: "Invalid URL (POST /v1/xyz)"},
		{name: "wrong method", call: call{method: "GET", path: "/chat/completions", key: "sk-good"},
			wantStatus: 404, wantType: "invalid_request_error", wantMsg: "Invalid URL (GET /v1/chat/completions)"},
		{name: "malformed json", call: call{path: "/chat/completions", key: "sk-good", body: `{"model":`},
			wantStatus: 400, wantType: "invalid_request_error"},
		{name: "wrong type", call: call{path: "/chat/completions", key: "sk-good", body: `{"model":"gpt-4o","stream":"yes"}`},
			wantStatus: 400, wantType: "invalid_request_error", wantCode: "invalid_type", wantParam: "stream"},
		{name: "no model", call: call{path: "/chat/completions", key: "sk-good", body: map[string]any{"messages": []any{}}},
			wantStatus: 400, wantType: "invalid_request_error", wantMsg: "you must provide a model parameter"},
		{name: "unknown model", call: call{path: "/chat/completions", key: "sk-good", body: chat("gpt-9")},
			wantStatus: 404, wantType: "invalid_request_error", wantCode: "model_not_found",
			wantMsg: "The model `gpt-9` does not exist or you do not have access to it."},
		{name: "mismatched org", call: call{path: "/chat/completions", key: "sk-good", header: map[string]string{"OpenAI-Organization": "org-other"}, body: chat("gpt-4o")},
			wantStatus: 401, wantType: "invalid_request_error", wantCode: "mismatched_organization"},
		{name: "matching org", call: call{path: "/chat/completions", key: "sk-good", header: map[string]string{"OpenAI-Organization": "org-main"}, body: chat("gpt-4o")},
			wantStatus: 200},
		{name: "svcacct with its own org header", call: call{path: "/chat/completions", key: "sk-svcacct-robot", header: map[string]string{"OpenAI-Organization": "org-main"}, body: chat("gpt-4o")},
			wantStatus: 401, wantType: "invalid_request_error", wantCode: "mismatched_organization"},
		{name: "svcacct without org header", call: call{path: "/chat/completions", key: "sk-svcacct-robot", body: chat("gpt-4o")},
			wantStatus: 200},
		{name: "svcacct cannot list orgs", call: call{method: "GET", path: "/organizations", key: "sk-svcacct-robot"},
			wantStatus: 403, wantType: "invalid_request_error"},
		{name: "project key cannot read me", call: call{method: "GET", path: "/me", key: "sk-proj-project"},
			wantStatus: 403, wantType: "invalid_request_error"},
		{name: "unverified image", call: call{path: "/images/generations", key: "sk-unverified", body: map[string]any{"model": "gpt-image-1", "prompt": "a cat"}},
			wantStatus: 403, wantType: "invalid_request_error"},
		{name: "unverified gpt-5 stream", call: call{path: "/chat/completions", key: "sk-unverified", body: chat("gpt-5", "stream", true)},
			wantStatus: 400, wantType: "invalid_request_error", wantCode: "unsupported_value", wantParam: "stream"},
		{name: "unverified gpt-5 no stream", call: call{path: "/chat/completions", key: "sk-unverified", body: chat("gpt-5")},
			wantStatus: 200},
		{name: "unverified dall-e", call: call{path: "/images/generations", key: "sk-unverified", body: map[string]any{"model": "dall-e-3", "prompt": "a cat"}},
			wantStatus: 200},
		{name: "revoked with org header", call: call{path: "/chat/completions", key: "sk-revoked", header: map[string]string{"OpenAI-Organization": "org-x"}, body: chat("gpt-4o")},
			wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key"},
		{name: "over quota can list models", call: call{method: "GET", path: "/models", key: "sk-broke"},
			wantStatus: 200},
		{name: "over quota before model check", call: call{path: "/chat/completions", key: "sk-broke", body: chat("gpt-9")},
			wantStatus: 429, wantType: "insufficient_quota", wantCode: "insufficient_quota"},
		{name: "retrieve model", call: call{method: "GET", path: "/models/gpt-4o", key: "sk-good"},
			wantStatus: 200},
		{name: "retrieve unknown model", call: call{method: "GET", path: "/models/gpt-9", key: "sk-good"},
			wantStatus: 404, wantType: "invalid_request_error", wantCode: "model_not_found", wantParam: "model"},
		{name: "empty embeddings input", call: call{path: "/embeddings", key: "sk-good", body: map[string]any{"model": "text-embedding-3-small", "input": []any{}}},
			wantStatus: 400, wantType: "invalid_request_error"},
	}
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Reset()
			r := do(t, http.DefaultClient, base, tt.call)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.body)
			}
			if r.status >= 400 {
				e := r.apiError(t)
				if e.Type != tt.wantType || e.Code != tt.wantCode || e.Param != tt.wantParam {
					t.Errorf("error = %+v, want type %q code %v param %v", e, tt.wantType, tt.wantCode, tt.wantParam)
				}
				if tt.wantMsg != "" && e.Message != tt.wantMsg {
					t.Errorf("message = %q, want %q", e.Message, tt.wantMsg)
				}
			}
			recs := s.Records()
			if len(recs) != 1 || recs[0].Status != tt.wantStatus || recs[0].Method != cmp(tt.call.method, "POST") {
				t.Errorf("Records = %+v", recs)
			}
		})
	}
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestRateLimitHeaders(t *testing.T) {
	clk := newClock()
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{Now: clk.Now},
		fakeopenai.Key{Secret: "sk-paid"},
		fakeopenai.Key{Secret: "sk-acme", Orgs: []fakeopenai.Org{{ID: "org-acme123", Title: "Acme Inc."}}})

	// 40 bytes of prompt = 10 tokens, plus max_tokens 20: the token bucket is charged 30.
	body := map[string]any{"model": "gpt-4o", "max_tokens": 20,
		"messages": []any{map[string]any{"role": "user", "content": strings.Repeat("abcd", 10)}}}
	r := do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-paid", body: body})
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	h := r.header
	for name, want := range map[string]int{
		"x-ratelimit-limit-requests": 3000, "x-ratelimit-remaining-requests": 2999,
		"x-ratelimit-limit-tokens": 150000, "x-ratelimit-remaining-tokens": 149970,
	} {
		if got := header(t, h, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	// 1 request of 3000/min refills in 20ms; 30 tokens of 150000/min in 12ms.
	if got := reset(t, h, "x-ratelimit-reset-requests"); got != 20*time.Millisecond {
		t.Errorf("reset-requests = %v, want 20ms", got)
	}
	if got := reset(t, h, "x-ratelimit-reset-tokens"); got != 12*time.Millisecond {
		t.Errorf("reset-tokens = %v, want 12ms", got)
	}
	if !regexp.MustCompile(`^req_[0-9a-f]{32}$`).MatchString(h.Get("x-request-id")) {
		t.Errorf("x-request-id = %q", h.Get("x-request-id"))
	}
	if _, err := strconv.Atoi(h.Get("openai-processing-ms")); err != nil {
		t.Errorf("openai-processing-ms = %q", h.Get("openai-processing-ms"))
	}
	if org := h.Get("openai-organization"); !strings.HasPrefix(org, "user-") {
		t.Errorf("openai-organization = %q, want a personal slug", org)
	}
	if got := path(r.json(t), "usage", "prompt_tokens"); got != float64(10) {
		t.Errorf("usage.prompt_tokens = %v, want 10", got)
	}
	if rec := s.Records()[0]; !rec.Spent || rec.PromptTokens != 10 || rec.CompletionTokens != 6 || rec.OrgUsed == "" {
		t.Errorf("record = %+v", rec)
	}

	clk.Advance(time.Minute)
	r = do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-acme", body: chat("gpt-4o")})
	if got := r.header.Get("openai-organization"); got != "acme-inc" {
		t.Errorf("openai-organization = %q, want the slug acme-inc", got)
	}
	clk.Advance(time.Minute)
	r = do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-acme", body: chat("gpt-4o", "max_tokens", 1)})
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if got := r.header.Get("x-ratelimit-reset-requests"); got != "20ms" {
		t.Errorf("reset-requests = %q", got)
	}
}

func TestBucketsExhaustAndRefill(t *testing.T) {
	clk := newClock()
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{Now: clk.Now},
		fakeopenai.Key{Secret: "sk-rpm", RPM: 3},
		fakeopenai.Key{Secret: "sk-tpm", TPM: 100},
		fakeopenai.Key{Secret: "sk-models", RPM: 1, PerModel: true})
	post := func(key string, body any) reply {
		return do(t, http.DefaultClient, base, call{path: "/chat/completions", key: key, body: body})
	}

	t.Run("requests", func(t *testing.T) {
		for i := range 3 {
			r := post("sk-rpm", chat("gpt-4o"))
			if r.status != 200 || header(t, r.header, "x-ratelimit-remaining-requests") != 2-i {
				t.Fatalf("request %d: %d remaining %s", i, r.status, r.header.Get("x-ratelimit-remaining-requests"))
			}
		}
		r := post("sk-rpm", chat("gpt-4o"))
		e := r.apiError(t)
		if r.status != 429 || e.Type != "requests" || e.Code != "rate_limit_exceeded" {
			t.Fatalf("4th = %d %+v", r.status, e)
		}
		if !strings.HasPrefix(e.Message, "Rate limit reached for gpt-4o in organization org-") ||
			!strings.HasSuffix(e.Message, " on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.") {
			t.Errorf("message = %q", e.Message)
		}
		if got := r.header.Get("Retry-After"); got != "20" {
			t.Errorf("Retry-After = %q, want 20", got)
		}
		if header(t, r.header, "x-ratelimit-remaining-requests") != 0 || reset(t, r.header, "x-ratelimit-reset-requests") != time.Minute {
			t.Errorf("headers = %v", r.header)
		}
		if s.Count("sk-rpm") != 4 || s.Completions("sk-rpm") != 3 {
			t.Errorf("Count %d Completions %d", s.Count("sk-rpm"), s.Completions("sk-rpm"))
		}

		clk.Advance(19 * time.Second)
		if r := post("sk-rpm", chat("gpt-4o")); r.status != 429 || r.apiError(t).Message == e.Message || r.header.Get("Retry-After") != "1" {
			t.Errorf("after 19s: %d Retry-After %q", r.status, r.header.Get("Retry-After"))
		}
		clk.Advance(time.Second)
		if r := post("sk-rpm", chat("gpt-4o")); r.status != 200 {
			t.Errorf("after 20s: %d %s", r.status, r.body)
		}
	})

	t.Run("tokens", func(t *testing.T) {
		// "Say hello." is 3 tokens; with max_tokens 90 the request costs 93.
		if r := post("sk-tpm", chat("gpt-4o", "max_tokens", 90)); r.status != 200 || header(t, r.header, "x-ratelimit-remaining-tokens") != 7 {
			t.Fatalf("first: %d %v", r.status, r.header)
		}
		r := post("sk-tpm", chat("gpt-4o", "max_tokens", 90))
		e := r.apiError(t)
		if r.status != 429 || e.Type != "tokens" || e.Code != "rate_limit_exceeded" {
			t.Fatalf("second = %d %+v", r.status, e)
		}
		// 86 tokens missing at 100/min: 51.6s.
		if !strings.Contains(e.Message, "on tokens per min (TPM): Limit 100, Used 93, Requested 93. Please try again in 51.6s.") {
			t.Errorf("message = %q", e.Message)
		}
		if got := r.header.Get("Retry-After"); got != "52" {
			t.Errorf("Retry-After = %q", got)
		}
		clk.Advance(51600 * time.Millisecond)
		if r := post("sk-tpm", chat("gpt-4o", "max_tokens", 90)); r.status != 200 {
			t.Errorf("after refill: %d %s", r.status, r.body)
		}
	})

	t.Run("request too large", func(t *testing.T) {
		clk.Advance(time.Hour)
		r := post("sk-tpm", chat("gpt-4o", "max_tokens", 200))
		e := r.apiError(t)
		if r.status != 429 || e.Type != "tokens" || e.Code != "rate_limit_exceeded" ||
			!strings.HasPrefix(e.Message, "Request too large for gpt-4o in organization org-") ||
			!strings.Contains(e.Message, "on tokens per min (TPM): Limit 100, Requested 203. The input or output tokens must be reduced in order to run successfully.") {
			t.Fatalf("%d %+v", r.status, e)
		}
		if r.header.Get("Retry-After") != "" {
			t.Errorf("Retry-After on a request no wait can help: %q", r.header.Get("Retry-After"))
		}
		if header(t, r.header, "x-ratelimit-remaining-tokens") != 100 || header(t, r.header, "x-ratelimit-remaining-requests") != 3000 ||
			r.header.Get("x-ratelimit-reset-tokens") != "0s" {
			t.Errorf("idle key headers = %v", r.header)
		}
	})

	t.Run("per model", func(t *testing.T) {
		if r := post("sk-models", chat("gpt-4o")); r.status != 200 {
			t.Fatal(r.status)
		}
		if r := post("sk-models", chat("gpt-4o-2024-08-06")); r.status != 429 {
			t.Errorf("a snapshot shares its alias's bucket: %d", r.status)
		}
		if r := post("sk-models", chat("gpt-4o-mini")); r.status != 200 {
			t.Errorf("another model has its own bucket: %d", r.status)
		}
	})
}

func TestTrialHeaders(t *testing.T) {
	clk := newClock()
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{Now: clk.Now},
		fakeopenai.Key{Secret: "sk-trial", Trial: true},
		fakeopenai.Key{Secret: "sk-trial2", Trial: true, RPM: 2})

	r := do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-trial", body: chat("gpt-4o-mini")})
	if r.status != 200 || header(t, r.header, "x-ratelimit-limit-requests") != 200 ||
		header(t, r.header, "x-ratelimit-remaining-requests") != 199 || header(t, r.header, "x-ratelimit-limit-tokens") != 40000 {
		t.Fatalf("%d %v", r.status, r.header)
	}
	if got := r.header.Get("x-ratelimit-reset-requests"); got != "7m12s" {
		t.Errorf("reset-requests = %q, want 7m12s (a day / 200)", got)
	}

	for range 2 {
		do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-trial2", body: chat("gpt-4o-mini")})
	}
	clk.Advance(4*time.Minute + 43874*time.Millisecond)
	r = do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-trial2", body: chat("gpt-4o-mini")})
	e := r.apiError(t)
	if r.status != 429 || e.Type != "requests" ||
		!strings.Contains(e.Message, "on requests per day (RPD): Limit 2, Used 2, Requested 1.") ||
		!strings.HasSuffix(e.Message, "You can increase your rate limit by adding a payment method to your account at https://platform.openai.com/account/billing.") {
		t.Fatalf("%d %+v", r.status, e)
	}
	if got := r.header.Get("x-ratelimit-reset-requests"); got != "23h55m16.126s" {
		t.Errorf("reset-requests = %q, want 23h55m16.126s", got)
	}
	if d := reset(t, r.header, "x-ratelimit-reset-requests"); d != 23*time.Hour+55*time.Minute+16126*time.Millisecond {
		t.Errorf("parsed reset = %v", d)
	}
}

func TestMultiOrg(t *testing.T) {
	key := fakeopenai.Key{Secret: "sk-multi", Orgs: []fakeopenai.Org{
		{ID: "org-alpha", Title: "Alpha", RPM: 1},
		{ID: "org-beta", Title: "Beta Labs", Default: true, RPM: 1},
	}}
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{Now: newClock().Now}, key)
	post := func(org string) reply {
		c := call{path: "/chat/completions", key: "sk-multi", body: chat("gpt-4o")}
		if org != "" {
			c.header = map[string]string{"OpenAI-Organization": org}
		}
		return do(t, http.DefaultClient, base, c)
	}
	steps := []struct {
		org, wantOrgUsed string
		wantStatus       int
	}{
		{"", "org-beta", 200}, // the default org
		{"org-beta", "org-beta", 429},
		{"org-alpha", "org-alpha", 200}, // its own quota
		{"org-alpha", "org-alpha", 429},
		{"org-gamma", "", 401},
	}
	for i, st := range steps {
		r := post(st.org)
		if r.status != st.wantStatus {
			t.Fatalf("step %d: %d, want %d: %s", i, r.status, st.wantStatus, r.body)
		}
		rec := s.Records()[i]
		if rec.Org != st.org || rec.OrgUsed != st.wantOrgUsed {
			t.Errorf("step %d: record Org %q OrgUsed %q", i, rec.Org, rec.OrgUsed)
		}
		switch st.wantStatus {
		case 429:
			if e := r.apiError(t); !strings.Contains(e.Message, "in organization "+st.wantOrgUsed+" on requests") {
				t.Errorf("step %d: %q", i, e.Message)
			}
		case 401:
			if e := r.apiError(t); e.Code != "mismatched_organization" {
				t.Errorf("step %d: %+v", i, e)
			}
		}
	}
	if got := post("org-alpha").header.Get("openai-organization"); got != "alpha" {
		t.Errorf("openai-organization = %q", got)
	}

	r := do(t, http.DefaultClient, base, call{method: "GET", path: "/organizations", key: "sk-multi"})
	list := r.json(t)
	if r.status != 200 || path(list, "data", 0, "id") != "org-alpha" || path(list, "data", 0, "is_default") != false ||
		path(list, "data", 1, "is_default") != true || path(list, "data", 1, "object") != "organization" {
		t.Errorf("/v1/organizations = %s", r.body)
	}
	r = do(t, http.DefaultClient, base, call{method: "GET", path: "/me", key: "sk-multi"})
	me := r.json(t)
	if r.status != 200 || me["object"] != "user" || path(me, "orgs", "data", 1, "id") != "org-beta" ||
		path(me, "orgs", "data", 1, "projects", "object") != "list" {
		t.Errorf("/v1/me = %s", r.body)
	}
}

type event struct{ name, data string }

func parseSSE(t *testing.T, r reply) []event {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type = %q", ct)
	}
	body := string(r.body)
	if !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", body)
	}
	var events []event
	for _, block := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		var e event
		for _, line := range strings.Split(block, "\n") {
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				e.name = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				e.data = v
			} else {
				t.Fatalf("bad SSE line %q", line)
			}
		}
		events = append(events, e)
	}
	return events
}

func TestChatStream(t *testing.T) {
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-a"})
	for _, includeUsage := range []bool{true, false} {
		t.Run(fmt.Sprint("include_usage=", includeUsage), func(t *testing.T) {
			s.Reset()
			body := chat("gpt-4o", "stream", true, "stream_options", map[string]any{"include_usage": includeUsage})
			r := do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-a", body: body})
			if r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			events := parseSSE(t, r)
			if last := events[len(events)-1]; last != (event{data: "[DONE]"}) {
				t.Fatalf("last event = %+v", last)
			}
			var chunks []map[string]any
			for _, e := range events[:len(events)-1] {
				var c map[string]any
				if e.name != "" || json.Unmarshal([]byte(e.data), &c) != nil || c["object"] != "chat.completion.chunk" {
					t.Fatalf("bad chunk %+v", e)
				}
				chunks = append(chunks, c)
			}
			if path(chunks[0], "choices", 0, "delta", "role") != "assistant" {
				t.Errorf("first chunk = %v", chunks[0])
			}
			content := chunks
			if includeUsage {
				content = chunks[:len(chunks)-1]
				final := chunks[len(chunks)-1]
				if choices := final["choices"].([]any); len(choices) != 0 {
					t.Errorf("usage chunk has choices %v", choices)
				}
				if path(final, "usage", "completion_tokens") != float64(6) || path(final, "usage", "prompt_tokens") != float64(3) ||
					path(final, "usage", "completion_tokens_details", "reasoning_tokens") != float64(0) {
					t.Errorf("usage = %v", final["usage"])
				}
			}
			var text strings.Builder
			for _, c := range content {
				u, has := c["usage"]
				if has != includeUsage || u != nil {
					t.Errorf("chunk usage = %v (present %v)", u, has)
				}
				if d, ok := path(c, "choices", 0, "delta", "content").(string); ok {
					text.WriteString(d)
				}
			}
			if text.String() != reply6 {
				t.Errorf("text = %q", text.String())
			}
			if path(content[len(content)-1], "choices", 0, "finish_reason") != "stop" {
				t.Errorf("no stop chunk: %v", content[len(content)-1])
			}
			if rec := s.Records()[0]; !rec.Stream || !rec.Spent || rec.Status != 200 {
				t.Errorf("record = %+v", rec)
			}
		})
	}
}

func TestReasoningAndCachedUsage(t *testing.T) {
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-a"})
	long := strings.Repeat("x", 5000) // 1250 tokens
	body := map[string]any{"model": "gpt-5", "messages": []any{map[string]any{"role": "user", "content": long}}}
	u := path(do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-a", body: body}).json(t), "usage")
	if path(u, "prompt_tokens") != float64(1250) || path(u, "prompt_tokens_details", "cached_tokens") != float64(1152) ||
		path(u, "completion_tokens_details", "reasoning_tokens") != float64(64) || path(u, "completion_tokens") != float64(70) ||
		path(u, "total_tokens") != float64(1320) {
		t.Errorf("usage = %v", u)
	}
	// An output limit below the reasoning budget leaves no text: finish_reason "length".
	m := do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-a", body: chat("o3", "max_completion_tokens", 64)}).json(t)
	if path(m, "choices", 0, "finish_reason") != "length" || path(m, "choices", 0, "message", "content") != "" {
		t.Errorf("truncated = %v", m["choices"])
	}
}

func TestStreamErrors(t *testing.T) {
	tests := []struct {
		behavior fakeopenai.Behavior
		route    string
		body     map[string]any
	}{
		{fakeopenai.StreamErrorFirst, "/chat/completions", chat("gpt-4o", "stream", true)},
		{fakeopenai.StreamErrorMidway, "/chat/completions", chat("gpt-4o", "stream", true)},
		{fakeopenai.StreamErrorFirst, "/responses", map[string]any{"model": "gpt-4o", "input": "hi", "stream": true}},
		{fakeopenai.StreamErrorMidway, "/responses", map[string]any{"model": "gpt-4o", "input": "hi", "stream": true}},
	}
	for _, tt := range tests {
		t.Run(tt.behavior.String()+tt.route, func(t *testing.T) {
			s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-a", Behavior: tt.behavior})
			r := do(t, http.DefaultClient, base, call{path: tt.route, key: "sk-a", body: tt.body})
			if r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			events := parseSSE(t, r)
			if tt.behavior == fakeopenai.StreamErrorFirst && len(events) != 1 || tt.behavior == fakeopenai.StreamErrorMidway && len(events) < 3 {
				t.Errorf("%d events", len(events))
			}
			last := events[len(events)-1]
			var m map[string]any
			if err := json.Unmarshal([]byte(last.data), &m); err != nil {
				t.Fatalf("last event %+v", last)
			}
			if tt.route == "/chat/completions" {
				if last.name != "" || path(m, "error", "type") != "server_error" || path(m, "error", "code") != nil ||
					path(m, "error", "message") != "The server experienced an error while processing your request. Sorry about that!" {
					t.Errorf("last event = %+v", last)
				}
			} else if last.name != "error" || m["type"] != "error" || m["code"] != "server_error" || m["sequence_number"] != float64(len(events)-1) {
				t.Errorf("last event = %+v", last)
			}
			if s.Completions("sk-a") != 0 {
				t.Errorf("a broken stream counted as spent")
			}
		})
	}
}

func TestResponses(t *testing.T) {
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-a"})
	input := []any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "input_text", "text": "What is up?"}}}}

	r := do(t, http.DefaultClient, base, call{path: "/responses", key: "sk-a", body: map[string]any{"model": "gpt-4.1", "input": input}})
	m := r.json(t)
	if r.status != 200 || m["object"] != "response" || m["status"] != "completed" ||
		path(m, "output", 0, "type") != "message" || path(m, "output", 0, "content", 0, "type") != "output_text" ||
		path(m, "output", 0, "content", 0, "text") != reply6 ||
		path(m, "usage", "input_tokens") != float64(3) || path(m, "usage", "output_tokens") != float64(6) ||
		path(m, "usage", "total_tokens") != float64(9) || path(m, "usage", "input_tokens_details", "cached_tokens") != float64(0) ||
		path(m, "usage", "output_tokens_details", "reasoning_tokens") != float64(0) {
		t.Errorf("response = %s", r.body)
	}

	r = do(t, http.DefaultClient, base, call{path: "/responses", key: "sk-a", body: map[string]any{"model": "gpt-4.1", "input": input, "stream": true}})
	events := parseSSE(t, r)
	var names []string
	for i, e := range events {
		var d map[string]any
		if err := json.Unmarshal([]byte(e.data), &d); err != nil || d["type"] != e.name || d["sequence_number"] != float64(i) {
			t.Fatalf("event %d = %+v", i, e)
		}
		if i > 0 && e.name == names[len(names)-1] {
			continue
		}
		names = append(names, e.name)
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done",
		"response.completed"}
	if !slices.Equal(names, want) {
		t.Errorf("events = %v", names)
	}
	var done map[string]any
	json.Unmarshal([]byte(events[len(events)-1].data), &done)
	if path(done, "response", "usage", "output_tokens") != float64(6) || path(done, "response", "status") != "completed" {
		t.Errorf("response.completed = %v", done)
	}
	if s.Completions("sk-a") != 2 {
		t.Errorf("Completions = %d", s.Completions("sk-a"))
	}

	r = do(t, http.DefaultClient, base, call{path: "/responses", key: "sk-a", body: map[string]any{"model": "gpt-4.1", "input": "hi", "max_output_tokens": 8}})
	if e := r.apiError(t); r.status != 400 || e.Code != "integer_below_min_value" || e.Param != "max_output_tokens" {
		t.Errorf("max_output_tokens 8: %d %+v", r.status, e)
	}
}

func TestEmbeddings(t *testing.T) {
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-a"})
	tests := []struct {
		name       string
		input      any
		format     string
		wantItems  int
		wantTokens int
	}{
		{"string", "hello world!", "", 1, 3},
		{"strings", []string{"abcd", "abcdefgh", "a"}, "", 3, 4},
		{"tokens", []int{1, 2, 3, 4, 5}, "", 1, 5},
		{"base64", "hello world!", "base64", 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{"model": "text-embedding-3-small", "input": tt.input}
			if tt.format != "" {
				body["encoding_format"] = tt.format
			}
			r := do(t, http.DefaultClient, base, call{path: "/embeddings", key: "sk-a", body: body})
			m := r.json(t)
			data, _ := m["data"].([]any)
			if r.status != 200 || m["object"] != "list" || m["model"] != "text-embedding-3-small" || len(data) != tt.wantItems ||
				path(m, "usage", "prompt_tokens") != float64(tt.wantTokens) || path(m, "usage", "total_tokens") != float64(tt.wantTokens) {
				t.Fatalf("%d %s", r.status, r.body)
			}
			for i := range data {
				if path(data, i, "object") != "embedding" || path(data, i, "index") != float64(i) {
					t.Errorf("item %d = %v", i, data[i])
				}
				switch v := path(data, i, "embedding").(type) {
				case []any:
					if tt.format != "" || len(v) != 8 {
						t.Errorf("embedding = %v", v)
					}
				case string:
					b, err := base64.StdEncoding.DecodeString(v)
					if tt.format != "base64" || err != nil || len(b) != 32 {
						t.Errorf("embedding = %q", v)
					}
				default:
					t.Errorf("embedding = %v", v)
				}
			}
		})
	}
	if s.Completions("sk-a") != len(tests) {
		t.Errorf("Completions = %d", s.Completions("sk-a"))
	}
}

func multipartBody(t *testing.T, fields map[string]string, file bool) ([]byte, string) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for k, v := range fields {
		w.WriteField(k, v)
	}
	if file {
		f, err := w.CreateFormFile("file", "hello.mp3")
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("ID3 not really audio"))
	}
	w.Close()
	return b.Bytes(), w.FormDataContentType()
}

func TestTranscription(t *testing.T) {
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-a"})
	tests := []struct {
		name       string
		fields     map[string]string
		file       bool
		wantStatus int
		wantCode   any
	}{
		{"whisper", map[string]string{"model": "whisper-1"}, true, 200, nil},
		{"unknown model", map[string]string{"model": "whisper-9"}, true, 404, "model_not_found"},
		{"no file", map[string]string{"model": "whisper-1"}, false, 400, nil},
		{"text format", map[string]string{"model": "whisper-1", "response_format": "text"}, true, 200, nil},
		{"gpt-4o-transcribe", map[string]string{"model": "gpt-4o-transcribe", "prompt": "Names: Ada."}, true, 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Reset()
			body, ct := multipartBody(t, tt.fields, tt.file)
			r := do(t, http.DefaultClient, base, call{path: "/audio/transcriptions", key: "sk-a", body: body, contentType: ct})
			if r.status != tt.wantStatus {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if r.status == 200 {
				if tt.fields["response_format"] == "text" {
					if string(r.body) != reply6+"\n" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
						t.Errorf("text body = %q", r.body)
					}
				} else if m := r.json(t); m["text"] != reply6 || (tt.fields["model"] != "whisper-1") != (m["usage"] != nil) {
					t.Errorf("body = %s", r.body)
				}
				if rec := s.Records()[0]; rec.Model != tt.fields["model"] || !rec.Spent || r.header.Get("x-ratelimit-limit-requests") != "3000" {
					t.Errorf("record = %+v", rec)
				}
			} else if e := r.apiError(t); e.Code != tt.wantCode {
				t.Errorf("error = %+v", e)
			}
		})
	}
	r := do(t, http.DefaultClient, base, call{path: "/audio/transcriptions", key: "sk-a", body: `{"model":"whisper-1"}`})
	if r.status != 400 {
		t.Errorf("JSON body: %d", r.status)
	}
}

func TestLivenessProbe(t *testing.T) {
	probe := map[string]any{"model": "babbage-002", "max_tokens": -1, "messages": []any{map[string]any{"role": "user", "content": "Hi"}}}
	tests := []struct {
		name       string
		key        fakeopenai.Key
		wantStatus int
		wantLimit  int
	}{
		{"paid", fakeopenai.Key{}, 400, 3000},
		{"trial", fakeopenai.Key{Trial: true}, 400, 200},
		{"model not served", fakeopenai.Key{Models: []string{"gpt-4o"}}, 400, 3000}, // the probe comes before the model check
		{"exhausted", fakeopenai.Key{RPM: 1}, 429, 1},                               // rate limits come before validation
		{"over quota", fakeopenai.Key{Behavior: fakeopenai.OverQuota}, 429, 0},
		{"revoked", fakeopenai.Key{Behavior: fakeopenai.Revoked}, 401, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.key.Secret = "sk-probe"
			s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{Now: newClock().Now}, tt.key)
			if tt.name == "exhausted" {
				do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-probe", body: chat("gpt-4o")})
				s.Reset()
			}
			for i := range 2 {
				r := do(t, http.DefaultClient, base, call{path: "/chat/completions", key: "sk-probe", body: probe})
				if r.status != tt.wantStatus {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				if tt.name == "exhausted" {
					if e := r.apiError(t); e.Type != "requests" || r.header.Get("x-ratelimit-remaining-requests") != "0" {
						t.Errorf("exhausted key: %+v %v", e, r.header)
					}
					if len(s.Records()) != 1 || s.Records()[0].Spent {
						t.Errorf("the refused probe was charged: %+v", s.Records())
					}
					return
				}
				if tt.wantStatus != 400 {
					if r.header.Get("x-ratelimit-limit-requests") != "" {
						t.Errorf("account errors come before the buckets: %v", r.header)
					}
					return
				}
				e := r.apiError(t)
				if e.Type != "invalid_request_error" || e.Param != "max_tokens" || e.Code != "integer_below_min_value" ||
					e.Message != "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got -1 instead." {
					t.Errorf("error = %+v", e)
				}
				limit := header(t, r.header, "x-ratelimit-limit-requests")
				want := limit
				if tt.name == "exhausted" {
					want = 0
				}
				if limit != tt.wantLimit || header(t, r.header, "x-ratelimit-remaining-requests") != want {
					t.Errorf("probe %d: limit %d remaining %s", i, limit, r.header.Get("x-ratelimit-remaining-requests"))
				}
				if tt.name != "exhausted" && header(t, r.header, "x-ratelimit-remaining-tokens") != header(t, r.header, "x-ratelimit-limit-tokens") {
					t.Errorf("tokens charged: %v", r.header)
				}
			}
			if s.Completions("sk-probe") != 0 || s.Count("sk-probe") != 2 || s.Records()[0].Spent {
				t.Errorf("Completions %d Count %d", s.Completions("sk-probe"), s.Count("sk-probe"))
			}
		})
	}
}

func TestConcurrentBucket(t *testing.T) {
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{Now: newClock().Now}, fakeopenai.Key{Secret: "sk-a", RPM: 10})
	var wg sync.WaitGroup
	statuses := make([]int, 30)
	for i := range statuses {
		wg.Go(func() {
			r, err := send(context.Background(), http.DefaultClient, base, call{path: "/chat/completions", key: "sk-a", body: chat("gpt-4o")})
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
			statuses[i] = r.StatusCode
		})
	}
	wg.Wait()
	ok := 0
	for _, st := range statuses {
		if st == 200 {
			ok++
		} else if st != 429 {
			t.Errorf("status %d", st)
		}
	}
	if ok != 10 || s.Completions("sk-a") != 10 || len(s.Records()) != 30 {
		t.Errorf("%d served, Completions %d, %d records", ok, s.Completions("sk-a"), len(s.Records()))
	}
}

func TestScriptChanges(t *testing.T) {
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-a"})
	post := func(key string) int {
		return do(t, http.DefaultClient, base, call{path: "/chat/completions", key: key, body: chat("gpt-4o")}).status
	}
	if post("sk-a") != 200 {
		t.Fatal("ok key refused")
	}
	s.SetBehavior("sk-a", fakeopenai.Revoked)
	if got := post("sk-a"); got != 401 {
		t.Errorf("revoked: %d", got)
	}
	s.SetBehavior("sk-a", fakeopenai.OK)
	if got := post("sk-b"); got != 401 {
		t.Errorf("unknown: %d", got)
	}
	s.AddKey(fakeopenai.Key{Secret: "sk-b", Models: []string{"gpt-4o"}})
	if got := post("sk-b"); got != 200 {
		t.Errorf("added: %d", got)
	}
	if got := len(s.Records()); got != 4 {
		t.Errorf("%d records", got)
	}
	s.Reset()
	if got := len(s.Records()); got != 0 {
		t.Errorf("%d records after Reset", got)
	}
	r := do(t, http.DefaultClient, base, call{method: "GET", path: "/models", key: "sk-b"})
	if m := r.json(t); r.status != 200 || m["object"] != "list" || path(m, "data", 0, "id") != "gpt-4o" ||
		path(m, "data", 0, "owned_by") != "system" || path(m, "data", 1) != nil {
		t.Errorf("/v1/models = %s", r.body)
	}
}

func TestServePipe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-slow", Behavior: fakeopenai.SlowHeaders, Delay: time.Minute})
		tr, closePipe := fakeopenai.ServePipe(s)
		defer closePipe()
		client := &http.Client{Transport: tr}

		start := time.Now()
		r := do(t, client, fakeopenai.PipeBaseURL, call{path: "/chat/completions", key: "sk-slow", body: chat("gpt-4o")})
		if r.status != 200 || path(r.json(t), "choices", 0, "message", "content") != reply6 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if waited := time.Since(start); waited != time.Minute {
			t.Errorf("waited %v, want the scripted minute", waited)
		}
		if recs := s.Records(); len(recs) != 1 || recs[0].Path != "/v1/chat/completions" || !recs[0].Spent {
			t.Errorf("records = %+v", recs)
		}
	})
}

func TestStreamHangEndsWhenClientGoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-hang", Behavior: fakeopenai.StreamHang})
		tr, closePipe := fakeopenai.ServePipe(s)
		defer closePipe()
		client := &http.Client{Transport: tr}

		ctx, cancel := context.WithCancel(t.Context())
		resp, err := send(ctx, client, fakeopenai.PipeBaseURL, call{path: "/chat/completions", key: "sk-hang", body: chat("gpt-4o", "stream", true)})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") ||
			resp.Header.Get("x-ratelimit-remaining-requests") != "2999" {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		synctest.Wait()
		if s.InFlight() != 1 {
			t.Fatalf("InFlight = %d while hanging", s.InFlight())
		}
		cancel()
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
			t.Errorf("read after cancel: %v", err)
		}
		resp.Body.Close()
		synctest.Wait()
		if s.InFlight() != 0 {
			t.Errorf("InFlight = %d after the client left", s.InFlight())
		}

		// Without stream, the request never gets headers: the client's deadline ends it.
		ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err = send(ctx, client, fakeopenai.PipeBaseURL, call{path: "/chat/completions", key: "sk-hang", body: chat("gpt-4o")})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("non-stream: %v", err)
		}
		synctest.Wait()
		recs := s.Records()
		if s.InFlight() != 0 || len(recs) != 2 || recs[0].Status != 200 || recs[0].Spent || recs[1].Status != 499 {
			t.Errorf("InFlight %d, records %+v", s.InFlight(), recs)
		}
	})
}

func ExampleServePipe() {
	s := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-example", Trial: true})
	tr, closePipe := fakeopenai.ServePipe(s)
	defer closePipe()

	body := `{"model":"babbage-002","max_tokens":-1,"messages":[{"role":"user","content":"Hi"}]}`
	req, _ := http.NewRequest("POST", fakeopenai.PipeBaseURL+"/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-example")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("x-ratelimit-limit-requests"), s.Completions("sk-example"))
	// Output: 400 200 0
}
