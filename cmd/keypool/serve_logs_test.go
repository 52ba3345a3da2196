package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
)

// writeConfig writes yaml to a config.yaml of the test's and returns its
// path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// linesWith returns the lines of log that hold every one of want.
func linesWith(log string, want ...string) []string {
	var out []string
	for line := range strings.Lines(log) {
		all := true
		for _, w := range want {
			all = all && strings.Contains(line, w)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// scrape returns the proxy's /metrics.
func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestServeLogsKeyStates: with a revoked and an over-quota key, the log
// tells of each once, at info, by ID and with the reason, never the key;
// the 401 and the 503 the proxy then makes itself are counted by client,
// route and class.
func TestServeLogsKeyStates(t *testing.T) {
	revoked, overQuota, token := "sk-logs-revoked-aaaaaaaaaaaa", "sk-logs-quota-bbbbbbbbbbbbbb", "tok-logs-cccccccccccc"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: revoked, Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: overQuota, Behavior: fakeopenai.OverQuota})
	noEnv(t)
	file := writeConfig(t, "listen: 127.0.0.1:0\ndbtype: none\nauthorization: \""+token+"\"\n"+
		"upstreams:\n  - name: main\n    sk: \""+revoked+","+overQuota+"\"\n    endpoint: "+url+"\n")
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--config", file, "--dbtype", "none")
	waitFor(t, stderr, "key over quota")
	waitFor(t, stderr, "key revoked")

	if code, body := post(t, base+"/v1/chat/completions", "", chatRequest); code != 401 {
		t.Fatalf("no token: %d %s", code, body)
	}
	if code, body := post(t, base+"/v1/chat/completions", "wrong", chatRequest); code != 401 {
		t.Fatalf("wrong token: %d %s", code, body)
	}
	if code, body := post(t, base+"/v1/chat/completions", token, chatRequest); code != 503 {
		t.Fatalf("no key left: %d %s", code, body)
	}
	client := records.ClientID(token)
	metrics := scrape(t, base)
	for _, want := range []string{
		`keypool_proxy_answers_total{class="4xx",client="none",route="/v1/chat/completions"} 1`,
		`keypool_proxy_answers_total{class="4xx",client="invalid",route="/v1/chat/completions"} 1`,
		`keypool_proxy_answers_total{class="5xx",client="` + client + `",route="/v1/chat/completions"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, linesWith(metrics, "keypool_proxy_answers_total"))
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	log := stderr.String()
	for _, tt := range []struct{ secret, msg, reason string }{
		{revoked, "key revoked", "invalid_api_key"},
		{overQuota, "key over quota", "insufficient_quota"},
	} {
		lines := linesWith(log, "level=INFO", tt.msg, "key="+id(tt.secret))
		if len(lines) != 1 || !strings.Contains(lines[0], tt.reason) || !strings.Contains(lines[0], "upstream=main") {
			t.Errorf("%s: want one info line naming the key, its upstream and %s; got %q in:\n%s", tt.msg, tt.reason, lines, log)
		}
	}
	assertNoSecret(t, log+metrics, revoked, overQuota, token)
}

// TestServeAccessLogJSON: --log-format json writes one JSON object per
// line, and --access-log one line per request with who asked (the token's
// ID), what, the answer, the key that gave it and the tokens it took.
func TestServeAccessLogJSON(t *testing.T) {
	key, token := "sk-logs-good-dddddddddddddd", "tok-logs-eeeeeeeeeeee"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key})
	noEnv(t)
	file := writeConfig(t, "listen: 127.0.0.1:0\ndbtype: none\nlog_format: text\nauthorization: \""+token+"\"\n"+
		"upstreams:\n  - name: main\n    sk: \""+key+"\"\n    endpoint: "+url+"\n")
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--config", file, "--dbtype", "none", "--log-format", "json", "--access-log")
	if code, body := post(t, base+"/v1/chat/completions", token, chatRequest); code != 200 {
		t.Fatalf("chat: %d %s", code, body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	log := stderr.String()
	var access []map[string]any
	for line := range strings.Lines(log) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q (%v)", line, err)
		}
		if m["msg"] == "request" {
			access = append(access, m)
		}
	}
	if !strings.Contains(log, `"msg":"config loaded"`) {
		t.Errorf("the lines logged while the config loaded are not in its format:\n%s", log)
	}
	if len(access) != 1 {
		t.Fatalf("%d access log lines, want 1:\n%s", len(access), log)
	}
	a := access[0]
	want := map[string]any{
		"level": "INFO", "log": "access", "client": records.ClientID(token), "method": "POST",
		"route": "/v1/chat/completions", "model": "gpt-4o-mini", "status": 200.0, "key": id(key), "attempts": 1.0,
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s = %v, want %v; line %v", k, a[k], v, a)
		}
	}
	if n, _ := a["input_tokens"].(float64); n <= 0 {
		t.Errorf("input_tokens %v; line %v", a["input_tokens"], a)
	}
	if _, ok := a["latency"].(float64); !ok {
		t.Errorf("latency %v; line %v", a["latency"], a)
	}
	assertNoSecret(t, log, key, token)
}

// TestServeLogFlagsRefuseBadValues: a level or format serve cannot log at
// is a usage error naming the flag and the values it takes, before serve
// reads a config or listens.
func TestServeLogFlagsRefuseBadValues(t *testing.T) {
	noEnv(t)
	for _, tt := range []struct{ flag, value, want string }{
		{"--log-level", "verbose", `invalid argument "verbose" for "--log-level" flag: must be one of debug, info, warn, error`},
		{"--log-format", "xml", `invalid argument "xml" for "--log-format" flag: must be one of text, json`},
	} {
		t.Run(tt.flag, func(t *testing.T) {
			_, stderr, code := cli(t, nil, "serve", tt.flag, tt.value, "--config", "/nonexistent.yaml")
			if code != 2 || !strings.Contains(stderr, tt.want) || strings.Contains(stderr, "nonexistent") {
				t.Fatalf("code %d, stderr %q", code, stderr)
			}
		})
	}
}
