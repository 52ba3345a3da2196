package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
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

const (
	reloadKey1   = "sk-reload-one-1111111111111111"
	reloadKey2   = "sk-reload-two-2222222222222222"
	reloadTokA   = "tok-reload-a-aaaaaaaaaaaaaaaa"
	reloadTokB   = "tok-reload-b-bbbbbbbbbbbbbbbb"
	reloadAdmin  = "adm-reload-cccccccccccccccccc"
	reloadConfig = `authorization: %q
admin_token: %q
dbtype: none
upstreams:
  - name: main
    endpoint: %s
    keys_file: keys.txt
`
)

// reloadServer is keypool serve over a config file in a temporary
// directory, with its SIGHUP channel in the test's hands.
type reloadServer struct {
	t      *testing.T
	dir    string
	base   string // http://addr
	fake   *fakeopenai.Server
	url    string // the fake's
	hup    chan os.Signal
	logs   *syncBuffer
	loads  atomic.Int64
	gate   chan struct{} // when not nil, each config load waits for a receive
	served chan error
	cancel context.CancelFunc
}

func startReloadServer(t *testing.T) *reloadServer {
	t.Helper()
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: reloadKey1}, fakeopenai.Key{Secret: reloadKey2})
	s := &reloadServer{t: t, dir: t.TempDir(), fake: fake, url: url, hup: make(chan os.Signal, 1), logs: &syncBuffer{},
		served: make(chan error, 1)}
	s.write("config.yaml", fmt.Sprintf(reloadConfig, reloadTokA, reloadAdmin, url))
	s.write("keys.txt", reloadKey1+"\n")
	cfg, err := config.Load(filepath.Join(s.dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	addrs := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	t.Cleanup(func() {
		cancel()
		<-s.served
	})
	opts := app.Options{Listen: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(s.logs, nil)), Ready: func(a net.Addr) { addrs <- a },
		Hangup: s.hup, Config: s.load}
	go func() { s.served <- app.Serve(ctx, cfg, opts) }()
	select {
	case a := <-addrs:
		s.base = "http://" + a.String()
	case err := <-s.served:
		t.Fatalf("Serve ended before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve never listened")
	}
	return s
}

// load is the server's Options.Config: the file, as keypool serve loads it.
func (s *reloadServer) load() (*config.Config, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.loads.Add(1)
	return config.Load(filepath.Join(s.dir, "config.yaml"))
}

func (s *reloadServer) write(name, text string) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name), []byte(text), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// do sends a request with token, and returns the status and body.
func (s *reloadServer) do(method, path, token, body string) (int, string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *reloadServer) chat(token string) (int, string) {
	return s.do("POST", "/v1/chat/completions", token, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
}

// keys lists the pool's key IDs through the admin API.
func (s *reloadServer) keys() []keypool.KeyID {
	s.t.Helper()
	status, body := s.do("GET", "/admin/keys", reloadAdmin, "")
	if status != 200 {
		s.t.Fatalf("GET /admin/keys: %d %s", status, body)
	}
	var infos []keypool.KeyInfo
	if err := json.Unmarshal([]byte(body), &infos); err != nil {
		s.t.Fatal(err)
	}
	var ids []keypool.KeyID
	for _, ki := range infos {
		ids = append(ids, ki.ID)
	}
	return ids
}

// reload asks POST /admin/reload, and decodes a 200's answer.
func (s *reloadServer) reload() (int, string, app.Reloaded) {
	s.t.Helper()
	status, body := s.do("POST", "/admin/reload", reloadAdmin, "")
	var r app.Reloaded
	if status == 200 {
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			s.t.Fatal(err)
		}
	}
	return status, body, r
}

// TestServeReload edits a serving proxy's config and reloads it, by SIGHUP
// and by POST /admin/reload: an added key and token take effect, a broken
// config is refused with its line and changes nothing, a removed key takes
// no more requests, and an upstream left with no key answers 503 with the
// reason until keys come back. Neither the log nor an answer shows a secret.
func TestServeReload(t *testing.T) {
	s := startReloadServer(t)
	id1, id2 := keypool.NewKey(reloadKey1).ID(), keypool.NewKey(reloadKey2).ID()
	if status, body := s.chat(reloadTokA); status != 200 {
		t.Fatalf("before any reload: %d %s", status, body)
	}
	if status, _ := s.chat(reloadTokB); status != 401 {
		t.Fatalf("an unknown token: %d", status)
	}

	// SIGHUP: a second key and a second client token.
	s.write("config.yaml", fmt.Sprintf(reloadConfig, reloadTokA+","+reloadTokB, reloadAdmin, s.url))
	s.write("keys.txt", reloadKey1+"\n"+reloadKey2+"\n")
	s.hup <- syscall.SIGHUP
	waitFor(t, 5*time.Second, "the added key", func() bool { return len(s.keys()) == 2 })
	if status, body := s.chat(reloadTokB); status != 200 {
		t.Fatalf("the added token: %d %s", status, body)
	}

	// A broken config: refused with its line, and the proxy serves on.
	s.write("config.yaml", "authorization: [\n  nope: {\n")
	status, body, _ := s.reload()
	if status != 400 || !strings.Contains(body, "config.yaml:") {
		t.Fatalf("a broken config: %d %s", status, body)
	}
	if ids := s.keys(); len(ids) != 2 {
		t.Fatalf("keys after a refused reload: %v", ids)
	}
	if status, _ := s.chat(reloadTokB); status != 200 {
		t.Fatalf("after a refused reload: %d", status)
	}

	// The first key removed: it serves no more.
	s.write("config.yaml", fmt.Sprintf(reloadConfig, reloadTokA+","+reloadTokB, reloadAdmin, s.url))
	s.write("keys.txt", reloadKey2+"\n")
	status, body, r := s.reload()
	if status != 200 || !slices.Equal(r.Keys.Removed, []keypool.KeyID{id1}) || !slices.Equal(r.Keys.Kept, []keypool.KeyID{id2}) ||
		len(r.Keys.Added) != 0 || r.Clients != 2 {
		t.Fatalf("removing a key: %d %s", status, body)
	}
	before := s.fake.Count(reloadKey1)
	for range 3 {
		if status, _ := s.chat(reloadTokA); status != 200 {
			t.Fatalf("after removing a key: %d", status)
		}
	}
	if n := s.fake.Count(reloadKey1); n != before {
		t.Fatalf("the removed key served %d more requests", n-before)
	}

	// Every key removed: 503 with the reason, until keys come back.
	s.write("keys.txt", "# none left\n")
	status, body, r = s.reload()
	if status != 200 || !slices.Equal(r.Keys.Removed, []keypool.KeyID{id2}) || !slices.Equal(r.NoKeys, []string{"upstream 1"}) {
		t.Fatalf("removing every key: %d %s", status, body)
	}
	if status, body := s.chat(reloadTokA); status != 503 || !strings.Contains(body, "no key is configured") {
		t.Fatalf("with no key: %d %s", status, body)
	}
	if status, body := s.do("GET", "/readyz", "", ""); status != 503 {
		t.Fatalf("readyz with no key: %d %s", status, body)
	}
	s.write("keys.txt", reloadKey1+"\n")
	s.hup <- syscall.SIGHUP
	waitFor(t, 5*time.Second, "keys back", func() bool { return slices.Equal(s.keys(), []keypool.KeyID{id1}) })
	if status, body := s.chat(reloadTokA); status != 200 {
		t.Fatalf("keys back: %d %s", status, body)
	}

	s.cancel()
	if err := <-s.served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	s.served <- nil // for the cleanup
	log := s.logs.String()
	for _, want := range []string{`msg="config reloaded" added=1 removed=0 kept=1`, `msg="config reload failed; the config before keeps serving"`,
		`msg="key removed; its requests in flight finish" key=` + string(id1), `msg="upstream has no key`, "msg=stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	for _, secret := range []string{reloadKey1, reloadKey2, reloadTokA, reloadTokB, reloadAdmin} {
		if strings.Contains(log, secret) {
			t.Fatalf("the log holds %q", secret)
		}
	}
}

// TestServeReloadStorm: a hundred SIGHUPs while a reload runs make one more
// reload, not a hundred; the proxy serves throughout and after, and the
// goroutines return to what they were.
func TestServeReloadStorm(t *testing.T) {
	s := startReloadServer(t)
	if status, _ := s.chat(reloadTokA); status != 200 {
		t.Fatalf("status %d", status)
	}
	http.DefaultClient.CloseIdleConnections()
	baseline := runtime.NumGoroutine()
	s.gate = make(chan struct{})
	s.hup <- syscall.SIGHUP
	for range 100 {
		select {
		case s.hup <- syscall.SIGHUP:
		default: // as signal.Notify does with a full channel
		}
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+10 {
		t.Fatalf("%d goroutines during the storm, %d before", n, baseline)
	}
	s.gate <- struct{}{} // the reload under way
	s.gate <- struct{}{} // the one pending
	waitFor(t, 5*time.Second, "two reloads", func() bool { return strings.Count(s.logs.String(), `msg="config reloaded"`) == 2 })
	select {
	case s.gate <- struct{}{}:
		t.Fatal("a third reload ran")
	case <-time.After(100 * time.Millisecond):
	}
	if n := s.loads.Load(); n != 2 {
		t.Fatalf("%d config loads", n)
	}
	if status, _ := s.chat(reloadTokA); status != 200 {
		t.Fatalf("after the storm: %d", status)
	}
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, 5*time.Second, "goroutines back", func() bool { return runtime.NumGoroutine() <= baseline+2 })
}

// TestReloadWithoutSource: an App given no way to read its config again
// refuses a reload, and POST /admin/reload answers 503.
func TestReloadWithoutSource(t *testing.T) {
	cfg := &config.Config{
		Upstream: []config.Upstream{{Endpoint: "https://a.example/v1", Keys: []keypool.Key{keypool.NewKey("sk-reload-none-0000")}}},
		DBType:   "none",
	}
	a, err := app.New(cfg, app.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reload(context.Background()); err != app.ErrNoReload {
		t.Fatalf("Reload: %v", err)
	}
	req, _ := http.NewRequest("POST", "/admin/reload", nil)
	req.RemoteAddr = "127.0.0.1:5000"
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("POST /admin/reload: %d %s", rec.Code, rec.Body)
	}
}

// TestReloadRefusesOpeningTheKeys: a reload that would drop every client
// token, on an address that is not known to be loopback, is refused, and
// the proxy still asks for a token.
func TestReloadRefusesOpeningTheKeys(t *testing.T) {
	withToken := &config.Config{
		Authorization: []secret.String{secret.New("tok-reload-open-000000")},
		Upstream:      []config.Upstream{{Endpoint: "https://a.example/v1", Keys: []keypool.Key{keypool.NewKey("sk-reload-open-1111")}}},
		DBType:        "none",
	}
	open := *withToken
	open.Authorization = nil
	a, err := app.New(withToken, app.Options{Config: func() (*config.Config, error) { return &open, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "anyone who can reach the proxy") {
		t.Fatalf("Reload: %v", err)
	}
	req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("a request without a token after the refused reload: %d", rec.Code)
	}
}
