package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestServeOpenAIAPIRouteConfig serves a config written the way
// openai-api-route's users write theirs (nothing keypool-specific: top-level
// authorization, upstreams with sk, endpoint, timeout, allow, deny,
// authorization and noauth), pointed at the fake, and checks that it routes
// as it did there: the client token, allow/deny, failover in upstream order,
// and a per-upstream token that is the only one its upstream takes.
func TestServeOpenAIAPIRouteConfig(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-first", Behavior: fakeopenai.OverQuota},
		fakeopenai.Key{Secret: "sk-second"},
		fakeopenai.Key{Secret: "sk-mini"})
	dir := t.TempDir()
	t.Chdir(dir)
	cfg := fmt.Sprintf(`authorization: woshimima
upstreams:
  - sk: "sk-first"
    endpoint: "%[1]s"
    timeout: 30
  - sk: "sk-second"
    endpoint: "%[1]s"
    deny:
      - gpt-4o-mini
  - sk: "sk-mini"
    endpoint: "%[1]s"
    allow:
      - gpt-4o-mini
    authorization: minitoken
`, base)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	proxy, _ := startServe(t, stderr, "--listen", "127.0.0.1:0") // ./config.yaml by default

	send := func(token, model string) int {
		req, _ := http.NewRequest("POST", proxy+"/v1/chat/completions",
			strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	served := func() []string {
		var keys []string
		for _, r := range fake.Records() {
			if r.Spent {
				keys = append(keys, r.Key)
			}
		}
		fake.Reset()
		return keys
	}
	if code := send("", "gpt-4o"); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	fake.Reset()
	// gpt-4o: the first upstream is over quota, the second serves it.
	if code := send("woshimima", "gpt-4o"); code != 200 {
		t.Fatalf("gpt-4o: %d", code)
	}
	if got := served(); len(got) != 1 || got[0] != "sk-second" {
		t.Fatalf("gpt-4o served by %v", got)
	}
	// gpt-4o-mini: denied on the second, and the third takes only its own
	// token, as in openai-api-route.
	if code := send("woshimima", "gpt-4o-mini"); code == 200 {
		t.Fatal("a top-level token reached an upstream with a token of its own")
	}
	if got := served(); len(got) != 0 {
		t.Fatalf("gpt-4o-mini served by %v", got)
	}
	// The third upstream's own token reaches only it: gpt-4o is not allowed
	// there, so nothing serves it for that token.
	if code := send("minitoken", "gpt-4o"); code == 200 {
		t.Fatal("a per-upstream token reached another upstream")
	}
	if code := send("minitoken", "gpt-4o-mini"); code != 200 {
		t.Fatalf("minitoken gpt-4o-mini: %d", code)
	}
	assertNoSecret(t, stderr.String(), "sk-first", "sk-second", "sk-mini", "woshimima", "minitoken")
}

// TestServeOpenAIAPIRouteSample: keypool serve starts on openai-api-route's
// own config.sample.yaml, unchanged, as ./config.yaml, and routes as the
// sample says: OpenAI's models to api.openai.com, the replicate upstream's
// to Replicate's predictions API. A router answers for both in memory, so
// nothing leaves the machine.
func TestServeOpenAIAPIRouteSample(t *testing.T) {
	sample, err := os.ReadFile(filepath.Join("..", "..", "internal", "config", "testdata", "openai-api-route", "config.sample.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	noEnv(t)
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("config.yaml", sample, 0o600); err != nil {
		t.Fatal(err)
	}
	replicate := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "key_for_replicate"})
	router := &fakeopenai.Router{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "api.replicate.com" {
			replicate.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[]}`)
	})}
	stderr := &lockedBuffer{}
	proxy, stop := startServeWith(t, stderr, router, "--listen", "127.0.0.1:0")
	send := func(token, model string) int {
		req, _ := http.NewRequest("POST", proxy+"/v1/chat/completions",
			strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	chats := func() []fakeopenai.Hit {
		var out []fakeopenai.Hit
		for _, h := range router.Hits() {
			if strings.HasSuffix(h.URL, "/chat/completions") && h.Model != "babbage-002" {
				out = append(out, h)
			}
		}
		return out
	}
	if code := send("", "gpt-3.5-trubo"); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	router.Reset()
	if code := send("woshimima", "gpt-3.5-trubo"); code != 200 {
		t.Fatalf("woshimima: %d", code)
	}
	if h := chats(); len(h) != 1 || h[0].URL != "https://api.openai.com/v2/chat/completions" || h[0].Model != "gpt-3.5-trubo" || h[0].Authorization != "Bearer secret_key_1" {
		t.Fatalf("attempts %+v", h)
	}
	router.Reset()
	if code := send("woshimima", "gpt-4"); code == 200 || len(chats()) != 0 {
		t.Fatalf("gpt-4 (allowed nowhere): %d, attempts %+v", code, chats())
	}
	router.Reset()
	const mixtral = "mistralai/mixtral-8x7b-instruct-v0.1"
	if code := send("woshimima", mixtral); code != 200 {
		t.Fatalf("%s: %d", mixtral, code)
	}
	if h := router.Hits(); len(h) != 1 || h[0].URL != "https://api.replicate.com/v1/models/"+mixtral+"/predictions" || h[0].Authorization != "Bearer key_for_replicate" {
		t.Fatalf("attempts %+v", h)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	log := stderr.String()
	if strings.Contains(log, "not served") || !strings.Contains(log, "upstreams=3") {
		t.Fatalf("the replicate upstream is not loaded:\n%s", log)
	}
	assertNoSecret(t, log, "woshimima", "secret_key_1", "secret_key_2", "key_for_replicate")
}
