package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
)

// lockedBuffer is stderr shared by the server's goroutines and the test.
// It can tell when a text has been written.
type lockedBuffer struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	want     string
	appeared chan struct{}
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	b.notify()
	return n, err
}

// notify closes appeared once want is in the buffer; b.mu is held.
func (b *lockedBuffer) notify() {
	if b.appeared != nil && strings.Contains(b.buf.String(), b.want) {
		close(b.appeared)
		b.appeared = nil
	}
}

// watch returns a channel closed once want has been written. One watch at a
// time.
func (b *lockedBuffer) watch(want string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	b.want, b.appeared = want, ch
	b.notify()
	return ch
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startServe runs `keypool serve args…` until the test ends or stop is
// called, and returns its base URL and a stop that waits for it to return
// and hands back its error.
func startServe(t *testing.T, stderr io.Writer, args ...string) (string, func() error) {
	t.Helper()
	return startServeWith(t, stderr, nil, args...)
}

// startServeWith is startServe with every upstream request carried by base
// (nil: the network, that is the fake on loopback).
func startServeWith(t *testing.T, stderr io.Writer, base http.RoundTripper, args ...string) (string, func() error) {
	t.Helper()
	addrs := make(chan net.Addr, 1)
	cmd := newServeCmdWith(serveHooks{ready: func(a net.Addr) { addrs <- a }, base: base})
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--db") }) {
		// Records go to a file of the test's, not ./db.sqlite.
		args = append(args, "--dbaddr", filepath.Join(t.TempDir(), "db.sqlite"))
	}
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(stderr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	select {
	case a := <-addrs:
		return "http://" + a.String(), stop
	case err := <-done:
		t.Fatalf("serve ended before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve never listened")
	}
	return "", nil
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const chatRequest = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

func assertNoSecret(t *testing.T, log string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("secret %q… in the log:\n%s", s[:6], log)
		}
	}
}

func TestServeOpenAIKey(t *testing.T) {
	keyA, keyB := "sk-serve-aaaaaaaaaaaaaaaa", "sk-serve-bbbbbbbbbbbbbbbb"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA}, fakeopenai.Key{Secret: keyB})
	t.Chdir(t.TempDir()) // no ./config.yaml
	t.Setenv("OPENAI_KEY", keyA+","+keyB)
	t.Setenv("OPENAI_BASE_URL", url)
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--listen", "127.0.0.1:0")

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	if code, body := post(t, base+"/v1/chat/completions", "", chatRequest); code != 200 {
		t.Fatalf("chat: %d %s", code, body)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	log := stderr.String()
	for _, want := range []string{"no config file", "upstream=" + url, "keys=2", "listening", "no client tokens", "stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	assertNoSecret(t, log, keyA, keyB)
}

func TestServeConfig(t *testing.T) {
	key, token := "sk-serve-cccccccccccccccc", "tok-serve-dddddddddddd"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key})
	noEnv(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	yaml := "authorization: \"" + token + "\"\nlisten: 127.0.0.1:0\nupstreams:\n  - sk: \"" + key + "\"\n    endpoint: " + url + "\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--config", file)

	if code, body := post(t, base+"/v1/chat/completions", "", chatRequest); code != 401 || !strings.Contains(body, "invalid_api_key") {
		t.Fatalf("no token: %d %s", code, body)
	}
	if code, body := post(t, base+"/v1/chat/completions", token, chatRequest); code != 200 {
		t.Fatalf("with token: %d %s", code, body)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	log := stderr.String()
	if strings.Contains(log, "no client tokens") {
		t.Errorf("warned of an open proxy with a token configured:\n%s", log)
	}
	assertNoSecret(t, log, key, token)
}

// TestServeDrainsOnShutdown checks that a request in flight when the
// command's context ends still gets its answer.
func TestServeDrainsOnShutdown(t *testing.T) {
	key := "sk-serve-eeeeeeeeeeeeeeee"
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	up := newSlowUpstream(t, entered, release)
	t.Chdir(t.TempDir())
	t.Setenv("OPENAI_KEY", key)
	t.Setenv("OPENAI_BASE_URL", up+"/v1")
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--listen", "127.0.0.1:0")

	type result struct {
		code int
		body string
	}
	got := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(chatRequest))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, string(b)}
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// Shutdown has begun once the log says so; then let the answer go.
	waitFor(t, stderr, "shutting down")
	close(release)
	r := <-got
	if r.code != 200 || !strings.Contains(r.body, "drained") {
		t.Fatalf("in-flight request: %d %s", r.code, r.body)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("serve: %v", err)
	}
	assertNoSecret(t, stderr.String(), key)
}

// newSlowUpstream answers generation requests only once release is closed,
// signalling entered first; other requests (the checker's) get a 404.
func newSlowUpstream(t *testing.T, entered chan<- struct{}, release <-chan struct{}) string {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"max_tokens":-1`) {
			// The background checker's probe: refuse it at once, as OpenAI
			// does, so that only the test's request holds the upstream.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"Invalid 'max_tokens'","type":"invalid_request_error","param":"max_tokens","code":"integer_below_min_value"}}`)
			return
		}
		entered <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"drained"}}]}`)
	})
	srv := newLoopbackServer(t, mux)
	return srv
}

func newLoopbackServer(t *testing.T, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// waitFor waits until the log holds want: the server writes it before it
// acts, so this waits for an event, not a duration.
func waitFor(t *testing.T, log *lockedBuffer, want string) {
	t.Helper()
	select {
	case <-log.watch(want):
	case <-time.After(10 * time.Second):
		t.Fatalf("log never said %q:\n%s", want, log.String())
	}
}

func TestServeNothingToServe(t *testing.T) {
	noEnv(t)
	t.Chdir(t.TempDir())
	stdout, stderr, code := cli(t, nil, "serve", "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, "OPENAI_KEY") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestServeStoreFlag(t *testing.T) {
	t.Setenv("OPENAI_KEY", "sk-store-flag-1")
	for _, store := range []string{"http://:pw-SECRET-flag@h:1/0", "redis://:pw-SECRET-flag@h:1/zero"} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "--dbtype", "none", "--store", store}, &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), "store must be a Redis URL") {
			t.Errorf("--store %.8s…: exit %d, stderr %q", store, code, errOut.String())
		}
		if strings.Contains(errOut.String(), "pw-SECRET") {
			t.Errorf("the password was printed: %s", errOut.String())
		}
	}
}

func TestServeRefusesOpenProxyOffLoopback(t *testing.T) {
	t.Setenv("OPENAI_KEY", "sk-open-1")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"serve", "--listen", "0.0.0.0:0"}, &out, &errOut)
	if code == 0 || !strings.Contains(errOut.String(), "without client tokens") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	if strings.Contains(errOut.String(), "sk-open-1") {
		t.Fatal("the key was printed")
	}
}

// TestServeRecords: serve writes one record per request to SQLite, flushed at
// shutdown, and keypool records reads them back, by ID only.
func TestServeRecords(t *testing.T) {
	key, token := "sk-serve-ffffffffffffffff", "tok-serve-gggggggggggg"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key})
	noEnv(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "records.sqlite")
	file := filepath.Join(dir, "config.yaml")
	yaml := "authorization: \"" + token + "\"\nlisten: 127.0.0.1:0\ndbtype: sqlite\ndbaddr: " + db +
		"\nupstreams:\n  - sk: \"" + key + "\"\n    endpoint: " + url + "\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--config", file, "--dbtype", "sqlite") // the config's file
	for range 3 {
		if code, body := post(t, base+"/v1/chat/completions", token, chatRequest); code != 200 {
			t.Fatalf("chat: %d %s", code, body)
		}
	}
	post(t, base+"/v1/chat/completions", "tok-wrong-hhhhhhhhhhhh", chatRequest) // refused: counted, not recorded
	if code, _ := post(t, base+"/v1/chat/completions", token, `{"model":""}`); code != 400 {
		t.Fatalf("empty model: %d", code)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	if log := stderr.String(); !strings.Contains(log, "records flushed") || !strings.Contains(log, "written=4") ||
		!strings.Contains(log, `msg="client token" id=`+records.ClientID(token)+" upstreams="+strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/v1")) {
		t.Fatalf("log:\n%s", log)
	}

	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"records", "--config", file, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("records: exit %d: %s", code, errOut.String())
	}
	var recs []records.Record
	if err := json.Unmarshal(out.Bytes(), &recs); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(recs) != 4 || recs[0].Status != 400 || recs[0].Error != "bad_model" || recs[1].Client != records.ClientID(token) ||
		recs[1].Key != string(keypool.NewKey(key).ID()) || recs[1].Model != "gpt-4o-mini" || recs[1].OutputTokens == 0 {
		t.Fatalf("records %s", out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"records", "--dbaddr", db, "--by", "status"}, &out, &errOut); code != 0 {
		t.Fatalf("records --by: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "STATUS") || !regexp.MustCompile(`(?m)^200\s+3\s+0\s`).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^400\s+1\s+1\s`).MatchString(out.String()) {
		t.Fatalf("aggregate:\n%s", out.String())
	}
	assertNoSecret(t, stderr.String()+out.String()+errOut.String(), key, token, "tok-wrong-hhhhhhhhhhhh")

	// A file that is not there is an error, not an empty store.
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"records", "--dbaddr", filepath.Join(dir, "nope.sqlite")}, &out, &errOut); code == 0 ||
		!strings.Contains(errOut.String(), "no records at") {
		t.Fatalf("missing file: exit %d, %s", code, errOut.String())
	}
}

// TestServeNotifies: a key the checker finds revoked reaches the webhook of
// the config, by ID, and with the only key gone, the upstream is down.
func TestServeNotifies(t *testing.T) {
	key, hookToken := "sk-serve-iiiiiiiiiiiiiiii", "hook-secret-jjjjjjjjjj"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key, Behavior: fakeopenai.Revoked})
	noEnv(t)
	got := make(chan map[string]any, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		if r.Header.Get("X-Token") != hookToken || json.NewDecoder(r.Body).Decode(&ev) != nil {
			w.WriteHeader(400)
			return
		}
		got <- ev
	}))
	defer hook.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	yaml := "listen: 127.0.0.1:0\ndbtype: none\nnotify:\n  webhook:\n    url: " + hook.URL + "/hook\n    headers: {X-Token: " + hookToken + "}\n" +
		"upstreams:\n  - name: main\n    sk: \"" + key + "\"\n    endpoint: " + url + "\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	_, stop := startServe(t, stderr, "--config", file, "--dbtype", "none")
	kinds := map[string]map[string]any{}
	for len(kinds) < 2 {
		select {
		case ev := <-got:
			kinds[ev["event"].(string)] = ev
		case <-time.After(10 * time.Second):
			t.Fatalf("webhook got %v; log:\n%s", kinds, stderr.String())
		}
	}
	if ev := kinds["key_revoked"]; ev == nil || ev["key"] != string(keypool.NewKey(key).ID()) || ev["upstream"] != "main" {
		t.Fatalf("events %v", kinds)
	}
	if kinds["upstream_down"] == nil {
		t.Fatalf("events %v", kinds)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(kinds)
	assertNoSecret(t, stderr.String()+string(js), key, hookToken)
}

// TestServeNeverWaitsOnADeadStore: a PostgreSQL that takes connections and
// never answers does not hold up the start, and a SQLite file that cannot
// be written does not hold up the shutdown; what could not be written is
// counted.
func TestServeNeverWaitsOnADeadStore(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: waits out a store that never answers (about 10 s)")
	}
	key := "sk-dead-store-aaaaaaaaaaaa"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key})
	noEnv(t)
	t.Setenv("OPENAI_KEY", key)
	t.Setenv("OPENAI_BASE_URL", url)
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	t.Run("postgres that never answers", func(t *testing.T) {
		start := time.Now()
		_, stop := startServe(t, io.Discard, "--listen", "127.0.0.1:0", "--dbtype", "postgres",
			"--dbaddr", "postgres://keypool@"+hung.Addr().String()+"/keypool?sslmode=disable&connect_timeout=60")
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("serve took %v to listen", took)
		}
		stop()
	})
	t.Run("redis that never answers", func(t *testing.T) {
		stderr := &lockedBuffer{}
		start := time.Now()
		base, stop := startServe(t, stderr, "--listen", "127.0.0.1:0", "--dbtype", "none",
			"--store", "redis://:pw-SECRET-redis@"+hung.Addr().String()+"/0")
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("serve took %v to listen", took)
		}
		if code, body := post(t, base+"/v1/chat/completions", "", chatRequest); code != 200 {
			t.Fatalf("chat: %d %s", code, body)
		}
		start = time.Now()
		stop()
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("shutdown took %v with Redis hung", took)
		}
		log := stderr.String()
		if !strings.Contains(log, `msg="state store redis"`) || !strings.Contains(log, hung.Addr().String()) {
			t.Errorf("serve did not log its state store:\n%s", log)
		}
		assertNoSecret(t, log, "pw-SECRET-redis")
	})
	t.Run("sqlite that cannot be written", func(t *testing.T) {
		stderr := &lockedBuffer{}
		base, stop := startServe(t, stderr, "--listen", "127.0.0.1:0", "--dbtype", "sqlite",
			"--dbaddr", filepath.Join(t.TempDir(), "no-such-dir", "db.sqlite"))
		if code, body := post(t, base+"/v1/chat/completions", "", chatRequest); code != 200 {
			t.Fatalf("chat: %d %s", code, body)
		}
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("shutdown took %v with nothing in flight", took)
		}
		if log := stderr.String(); !strings.Contains(log, "dropped=1") {
			t.Errorf("the unwritten record is not counted:\n%s", log)
		}
	})
}
