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
// and a per-upstream token.
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
	// gpt-4o-mini: denied on the second, allowed on the third.
	if code := send("woshimima", "gpt-4o-mini"); code != 200 {
		t.Fatalf("gpt-4o-mini: %d", code)
	}
	if got := served(); len(got) != 1 || got[0] != "sk-mini" {
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
