package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

const adminToken = "tok-admin-4444444444"

var adminSecrets = []string{keyA, keyB, adminToken, wrongToken}

// countingChecker counts the rechecks asked for.
type countingChecker struct{ n atomic.Int32 }

func (c *countingChecker) Recheck() { c.n.Add(1) }

type adminFixture struct {
	fake    *fakeopenai.Server
	url     string // the fake upstream's base URL, ending in /v1
	tr      *keypool.Transport
	checker *countingChecker
	handler http.Handler
	logs    *syncBuffer
}

// newAdmin builds the admin API with token over a pool of keyA and keyB on a
// fake upstream, and checks when the test ends that no secret was logged.
func newAdmin(t *testing.T, token string) *adminFixture {
	t.Helper()
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: keyA}, fakeopenai.Key{Secret: keyB})
	tr, err := keypool.New(keypool.WithUpstream(url, keyA+","+keyB))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	f := &adminFixture{fake: fake, url: url, tr: tr, checker: &countingChecker{}, logs: logs}
	f.handler = server.NewAdmin(server.AdminOptions{
		Transport: tr, Checker: f.checker, Token: secret.New(token),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		for _, s := range adminSecrets {
			if strings.Contains(logs.String(), s) {
				t.Errorf("a secret is in the log:\n%s", logs.String())
			}
		}
	})
	return f
}

// do sends one request to the admin handler from remote with token (none
// when empty) and returns the status and body.
func (f *adminFixture) do(t *testing.T, method, path, remote, token, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	out := rec.Body.String()
	for _, s := range adminSecrets {
		if strings.Contains(out, s) {
			t.Errorf("%s %s: a secret is in the answer: %s", method, path, out)
		}
	}
	return rec.Code, out
}

func (f *adminFixture) keys(t *testing.T) []map[string]any {
	t.Helper()
	code, body := f.do(t, "GET", "/admin/keys", "127.0.0.1:5000", adminToken, "")
	if code != 200 {
		t.Fatalf("GET /admin/keys: %d %s", code, body)
	}
	var keys []map[string]any
	if err := json.Unmarshal([]byte(body), &keys); err != nil {
		t.Fatalf("GET /admin/keys: %v: %s", err, body)
	}
	return keys
}

const (
	loopback4 = "127.0.0.1:40000"
	loopback6 = "[::1]:40000"
	remote    = "203.0.113.7:40000"
)

func TestAdminAuth(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		remote string
		send   string
		want   int
	}{
		{"token: none sent", adminToken, loopback4, "", 401},
		{"token: wrong", adminToken, loopback4, wrongToken, 401},
		{"token: right, loopback", adminToken, loopback4, adminToken, 200},
		{"token: right, remote", adminToken, remote, adminToken, 200},
		{"token: wrong, remote", adminToken, remote, wrongToken, 401},
		{"no token: loopback v4", "", loopback4, "", 200},
		{"no token: loopback v6", "", loopback6, "", 200},
		{"no token: remote", "", remote, "", 403},
		{"no token: remote with a token", "", remote, adminToken, 403},
		{"no token: unparsable remote", "", "somewhere", "", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newAdmin(t, tt.token)
			for _, r := range []struct{ method, path string }{
				{"GET", "/admin/keys"},
				{"POST", "/admin/keys/recheck"},
				{"POST", "/admin/keys/kp_0000000000000000/enable"},
			} {
				code, body := f.do(t, r.method, r.path, tt.remote, tt.send, "")
				want := tt.want
				if want == 200 && r.method == "POST" {
					continue // checked by the other tests
				}
				if code != want {
					t.Errorf("%s %s: %d, want %d: %s", r.method, r.path, code, want, body)
				}
				if code >= 400 && !strings.Contains(body, `"error"`) {
					t.Errorf("%s %s: not an OpenAI-shaped error: %s", r.method, r.path, body)
				}
			}
			if tt.want != 200 && f.checker.n.Load() != 0 {
				t.Error("a refused recheck reached the checker")
			}
		})
	}
}

func TestAdminKeys(t *testing.T) {
	f := newAdmin(t, adminToken)
	keys := f.keys(t)
	if len(keys) != 2 {
		t.Fatalf("%d keys, want 2: %v", len(keys), keys)
	}
	for i, secret := range []string{keyA, keyB} {
		if got, want := keys[i]["id"], string(keypool.NewKey(secret).ID()); got != want {
			t.Errorf("key %d: id %v, want %v", i, got, want)
		}
		if keys[i]["state"] != "unchecked" {
			t.Errorf("key %d: state %v, want unchecked", i, keys[i]["state"])
		}
	}
}

func TestAdminDisableEnable(t *testing.T) {
	f := newAdmin(t, adminToken)
	idA := string(keypool.NewKey(keyA).ID())
	code, body := f.do(t, "POST", "/admin/keys/"+idA+"/disable", remote, adminToken, `{"reason":"leaked"}`)
	if code != 200 || !strings.Contains(body, `"state":"disabled"`) {
		t.Fatalf("disable: %d %s", code, body)
	}
	keys := f.keys(t)
	if keys[0]["state"] != "disabled" || !strings.Contains(keys[0]["reason"].(string), "leaked") {
		t.Errorf("after disable: %v", keys[0])
	}
	if keys[1]["state"] == "disabled" {
		t.Errorf("the other key was disabled too: %v", keys[1])
	}

	// The disabled key is no longer used.
	client := &http.Client{Transport: f.tr}
	for range 6 {
		resp, err := client.Post(f.url+"/chat/completions", "application/json",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("chat: %d", resp.StatusCode)
		}
	}
	if n := f.fake.Count(keyA); n != 0 {
		t.Errorf("the disabled key served %d requests", n)
	}
	if n := f.fake.Count(keyB); n != 6 {
		t.Errorf("the enabled key served %d requests, want 6", n)
	}

	code, body = f.do(t, "POST", "/admin/keys/"+idA+"/enable", remote, adminToken, "")
	if code != 200 || !strings.Contains(body, `"state":"unchecked"`) {
		t.Fatalf("enable: %d %s", code, body)
	}
	if keys := f.keys(t); keys[0]["state"] != "unchecked" {
		t.Errorf("after enable: %v", keys[0])
	}
	if !strings.Contains(f.logs.String(), idA) {
		t.Errorf("the changes were not logged by key ID:\n%s", f.logs.String())
	}
}

func TestAdminDisableDefaultsAndErrors(t *testing.T) {
	f := newAdmin(t, adminToken)
	idB := string(keypool.NewKey(keyB).ID())
	tests := []struct {
		name, path, body string
		want             int
		contains         string
	}{
		{"no body", "/admin/keys/" + idB + "/disable", "", 200, "by the admin API"},
		{"bad JSON", "/admin/keys/" + idB + "/disable", "{", 400, "invalid_json"},
		{"too large", "/admin/keys/" + idB + "/disable", `{"reason":"` + strings.Repeat("x", 5000) + `"}`, 413, "request_too_large"},
		{"unknown key: disable", "/admin/keys/kp_0000000000000000/disable", "", 404, "key_not_found"},
		{"unknown key: enable", "/admin/keys/kp_0000000000000000/enable", "", 404, "key_not_found"},
		{"the secret as ID", "/admin/keys/" + keyA + "/enable", "", 404, "key_not_found"},
		{"unknown route", "/admin/nothing", "", 404, "unknown_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := f.do(t, "POST", tt.path, loopback4, adminToken, tt.body)
			if code != tt.want || !strings.Contains(body, tt.contains) {
				t.Errorf("%d %s, want %d with %q", code, body, tt.want, tt.contains)
			}
		})
	}
	if code, body := f.do(t, "GET", "/admin/keys/"+idB+"/disable", loopback4, adminToken, ""); code != 404 || strings.Contains(body, idB) {
		t.Errorf("GET disable: %d %s, want 404 without the path", code, body)
	}
}

func TestAdminRecheck(t *testing.T) {
	f := newAdmin(t, adminToken)
	code, body := f.do(t, "POST", "/admin/keys/recheck", remote, adminToken, "")
	if code != 202 {
		t.Fatalf("recheck: %d %s", code, body)
	}
	if n := f.checker.n.Load(); n != 1 {
		t.Errorf("Recheck called %d times, want 1", n)
	}

	noChecker := server.NewAdmin(server.AdminOptions{Transport: f.tr})
	req := httptest.NewRequest("POST", "/admin/keys/recheck", nil)
	req.RemoteAddr = loopback4
	rec := httptest.NewRecorder()
	noChecker.ServeHTTP(rec, req)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "no_checker") {
		t.Errorf("recheck without a checker: %d %s", rec.Code, rec.Body.String())
	}
}

func TestReadyz(t *testing.T) {
	f := newAdmin(t, adminToken)
	// Open to probes: no token, not loopback.
	if code, body := f.do(t, "GET", "/readyz", remote, "", ""); code != 200 {
		t.Fatalf("readyz with unchecked keys: %d %s", code, body)
	}
	for _, secret := range []string{keyA, keyB} {
		if err := f.tr.Pool().Disable(keypool.NewKey(secret).ID(), "test"); err != nil {
			t.Fatal(err)
		}
	}
	code, body := f.do(t, "GET", "/readyz", remote, "", "")
	if code != 503 || !strings.Contains(body, "2 disabled") {
		t.Fatalf("readyz with every key disabled: %d %s", code, body)
	}
	if err := f.tr.Pool().Enable(keypool.NewKey(keyB).ID()); err != nil {
		t.Fatal(err)
	}
	if code, body := f.do(t, "GET", "/readyz", remote, "", ""); code != 200 {
		t.Fatalf("readyz with one key enabled: %d %s", code, body)
	}
}

// TestReadyzCheckedKeysOnly: under WithCheckedKeysOnly no key is selected
// before its first check, so the pool is not ready until then.
func TestReadyzCheckedKeysOnly(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA}, fakeopenai.Key{Secret: keyB})
	tr, err := keypool.New(keypool.WithUpstream(url, keyA+","+keyB), keypool.WithCheckedKeysOnly(true))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	h := server.NewAdmin(server.AdminOptions{Transport: tr})
	readyz := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := readyz(); code != 503 || !strings.Contains(body, "2 unchecked") || !strings.Contains(body, "first check") {
		t.Fatalf("readyz before any check: %d %s", code, body)
	}
	c, err := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(); code != 200 {
		t.Fatalf("readyz after the check: %d %s", code, body)
	}
}

// BenchmarkReadyz shows that a readiness probe costs the same however many
// keys the pool holds: the pool keeps its counts as states change, so the
// time and allocations per probe at 1k and 100k keys are alike.
func BenchmarkReadyz(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		secrets := make([]string, n)
		for i := range secrets {
			secrets[i] = fmt.Sprintf("sk-readyz-%07d", i)
		}
		tr, err := keypool.New(keypool.WithUpstream("http://up.invalid/v1", strings.Join(secrets, ",")))
		if err != nil {
			b.Fatal(err)
		}
		h := server.NewAdmin(server.AdminOptions{Transport: tr})
		req := httptest.NewRequest("GET", "/readyz", nil)
		for _, tc := range []struct {
			name string
			code int
		}{{"ready", 200}, {"not-ready", 503}} {
			if tc.code == 503 {
				for _, k := range tr.Snapshot() {
					tr.Pool().Disable(k.ID, "bench")
				}
			}
			b.Run(fmt.Sprintf("keys=%d/%s", n, tc.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != tc.code {
						b.Fatalf("readyz: %d %s", rec.Code, rec.Body)
					}
				}
			})
		}
	}
}

func TestNewAdminNeedsTransport(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewAdmin without a Transport did not panic")
		}
	}()
	server.NewAdmin(server.AdminOptions{})
}
