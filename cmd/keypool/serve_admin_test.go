package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeopenai"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeMetricsAndAdmin checks the routes serve adds to the proxy's: the
// metrics at both paths, the admin API on loopback without an admin_token,
// /readyz, and `keypool keys` against it.
func TestServeMetricsAndAdmin(t *testing.T) {
	keyA, keyB := "sk-serve-ffffffffffffffff", "sk-serve-gggggggggggggggg"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA}, fakeopenai.Key{Secret: keyB})
	t.Chdir(t.TempDir())
	t.Setenv("OPENAI_KEY", keyA+","+keyB)
	t.Setenv("OPENAI_BASE_URL", url)
	t.Setenv("KEYPOOL_ADMIN_TOKEN", "")
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--listen", "127.0.0.1:0")

	if code, body := post(t, base+"/v1/chat/completions", "", chatRequest); code != 200 {
		t.Fatalf("chat: %d %s", code, body)
	}
	for _, path := range []string{"/metrics", "/v1/metrics"} {
		code, body := get(t, base+path)
		if code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		for _, want := range []string{"keypool_requests_total{", "keypool_attempts_total{", "keypool_keys{", "go_goroutines"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %s", path, want)
			}
		}
		assertNoSecret(t, body, keyA, keyB)
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Errorf("readyz: %d %s", code, body)
	}
	code, body := get(t, base+"/admin/keys")
	var keys []map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &keys) != nil || len(keys) != 2 {
		t.Fatalf("admin keys: %d %s", code, body)
	}
	if code, body := post(t, base+"/admin/keys/"+id(keyA)+"/disable", "", `{"reason":"test"}`); code != 200 {
		t.Fatalf("disable: %d %s", code, body)
	}
	out, errOut, exit := cli(t, []string{keyA, keyB}, "keys", "--server", base)
	if exit != 0 || !strings.Contains(out, id(keyA)) || !strings.Contains(out, "disabled: test") {
		t.Fatalf("keys: exit %d\n%s%s", exit, out, errOut)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("healthz: %d", code)
	}

	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	log := stderr.String()
	if !strings.Contains(log, "admin API answers on loopback only") {
		t.Errorf("log does not say the admin API is loopback-only:\n%s", log)
	}
	assertNoSecret(t, log, keyA, keyB)
}
