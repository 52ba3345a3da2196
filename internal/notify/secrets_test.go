package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// marker is in every secret of these tests and must show nowhere.
const marker = "s3cr3t"

const (
	matrixToken  = "mx-s3cr3t-token-0001"
	feishuHook   = "/open-apis/bot/v2/hook/fs-s3cr3t-hook-0002"
	feishuSecret = "fs-s3cr3t-sign-0003"
	webhookPath  = "/hook/wh-s3cr3t-path-0004?token=wh-s3cr3t-query-0005"
	webhookAuth  = "Bearer wh-s3cr3t-header-0006"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return f(r)
}

func secretConfig(base string, logger *slog.Logger) Config {
	return Config{
		Matrix:  &Matrix{Homeserver: base + "/m", Room: "!room:example.org", Token: secret.New(matrixToken)},
		Feishu:  &Feishu{Webhook: secret.New(base + feishuHook), Secret: secret.New(feishuSecret)},
		Webhook: &Webhook{URL: secret.New(base + webhookPath), Headers: map[string]secret.String{"Authorization": secret.New(webhookAuth)}},
		Logger:  logger,
	}
}

// TestNoSecrets runs failing and working scenarios with distinctive secrets
// and looks for them in everything a human or a log could see.
func TestNoSecrets(t *testing.T) {
	var seen []string // everything that must not hold a secret
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// The services echo the secrets in their answers.
	echo := &receiver{reply: func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/m/"):
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"errcode":"M_UNKNOWN_TOKEN","error":"bad token %s"}`, matrixToken)
		case strings.HasPrefix(r.URL.Path, "/open-apis/"):
			fmt.Fprintf(w, `{"code":19021,"msg":"sign match fail for %s at %s"}`, feishuSecret, r.URL)
		default:
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, "no %s", r.Header.Get("Authorization"))
		}
	}}
	failing := httptest.NewServer(echo)
	defer failing.Close()
	working := &receiver{reply: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"code":0}`) }}
	ok := httptest.NewServer(working)
	defer ok.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // connection refused: the client's error holds the URL

	scenarios := []struct {
		name   string
		cfg    Config
		failed int64
	}{
		{"answers echo secrets", secretConfig(failing.URL, logger), 1},
		{"connection refused", secretConfig(closed.URL, logger), 1},
		{"transport error holds the URL", func() Config {
			cfg := secretConfig("https://notify.example", logger)
			cfg.Client = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				return nil, fmt.Errorf("proxy refused %s with %s", r.URL, r.Header.Get("Authorization"))
			})}
			return cfg
		}(), 1},
		{"working", secretConfig(ok.URL, logger), 0},
	}
	for _, sc := range scenarios {
		n, err := New(sc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}})
		n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "invalid_api_key"))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := n.Run(ctx); err != nil { // delivers the queue, then returns
			t.Fatal(err)
		}
		st := n.Stats()
		for _, name := range []string{NameMatrix, NameFeishu, NameWebhook} {
			if sc.name == "working" {
				if st.Sent[name] != 2 {
					t.Errorf("%s: Sent[%s] = %d, want 2", sc.name, name, st.Sent[name])
				}
			} else if st.Failed[name] != 2*sc.failed {
				t.Errorf("%s: Failed[%s] = %d, want %d", sc.name, name, st.Failed[name], 2*sc.failed)
			}
		}
		seen = append(seen, fmt.Sprintf("%v %+v %#v", st, st, st))
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10.3v"} {
			for _, v := range []any{sc.cfg, &sc.cfg, sc.cfg.Matrix, *sc.cfg.Matrix, sc.cfg.Feishu, *sc.cfg.Feishu,
				sc.cfg.Webhook, *sc.cfg.Webhook, n, []any{sc.cfg, n}, map[string]any{"c": sc.cfg}} {
				seen = append(seen, fmt.Sprintf(verb, v))
			}
		}
		for _, v := range []any{sc.cfg.Matrix, sc.cfg.Feishu, sc.cfg.Webhook} {
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, string(b))
		}
		logger.Info("config", "cfg", sc.cfg, "matrix", sc.cfg.Matrix, "feishu", sc.cfg.Feishu,
			"webhook", sc.cfg.Webhook, "notifier", n)
	}
	for _, r := range append(echo.requests(), working.requests()...) {
		seen = append(seen, r.Body) // the message itself, not the URL it goes to
	}
	if len(working.requests()) != 6 {
		t.Fatalf("working receiver got %d requests, want 6", len(working.requests()))
	}
	seen = append(seen, logs.String())
	if !strings.Contains(logs.String(), `"notifier":"feishu"`) || !strings.Contains(logs.String(), "19021") ||
		!strings.Contains(logs.String(), `"status":401`) || !strings.Contains(logs.String(), "M_UNKNOWN_TOKEN") {
		t.Errorf("the log does not say what failed:\n%s", logs.String())
	}

	for _, cfg := range badConfigs() {
		_, err := New(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("New(%v) = %v, want a *ConfigError", cfg, err)
			continue
		}
		seen = append(seen, err.Error(), fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg))
	}

	for _, s := range seen {
		if strings.Contains(s, marker) {
			t.Errorf("a secret shows in:\n%s", s)
		}
	}
}

func badConfigs() []Config {
	return []Config{
		{Feishu: &Feishu{Webhook: secret.New("ftp://feishu.example/s3cr3t")}},
		{Feishu: &Feishu{Webhook: secret.New("http://[bad/s3cr3t")}},
		{Feishu: &Feishu{Webhook: secret.New("http://feishu.example/%zz-s3cr3t")}},
		{Feishu: &Feishu{Webhook: secret.New("s3cr3t-no-scheme")}},
		{Webhook: &Webhook{URL: secret.New("http:///s3cr3t")}},
		{Webhook: &Webhook{URL: secret.New("https://hook.example/x"), Headers: map[string]secret.String{"X-Token": secret.New("a\nb-s3cr3t")}}},
		{Webhook: &Webhook{URL: secret.New("https://hook.example/x"), Headers: map[string]secret.String{"X Bad": secret.New("s3cr3t")}}},
		{Matrix: &Matrix{Homeserver: "https://user:pw-s3cr3t@matrix.example", Room: "!r:x", Token: secret.New("t")}},
		{Matrix: &Matrix{Homeserver: "https://matrix.example?access_token=s3cr3t", Room: "!r:x", Token: secret.New("t")}},
		{Matrix: &Matrix{Homeserver: "https://matrix.example", Room: "!r:x", Token: secret.New("tok\r\ns3cr3t")}},
	}
}

func TestNewErrors(t *testing.T) {
	ok := &Webhook{URL: secret.New("https://hook.example/x")}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing", Config{}, "notify: config: no notifier configured (matrix, feishu or webhook)"},
		{"scheme", Config{Feishu: &Feishu{Webhook: secret.New("ftp://x/y")}}, "notify: feishu webhook: must be an http or https URL"},
		{"parse", Config{Webhook: &Webhook{URL: secret.New("http://[x")}}, "notify: webhook url: is not a valid URL"},
		{"no host", Config{Webhook: &Webhook{URL: secret.New("http:///x")}}, "notify: webhook url: has no host"},
		{"empty", Config{Feishu: &Feishu{}}, "notify: feishu webhook: is empty"},
		{"room empty", Config{Matrix: &Matrix{Homeserver: "https://m.example", Token: secret.New("t")}}, "notify: matrix room: is empty"},
		{"room alias", Config{Matrix: &Matrix{Homeserver: "https://m.example", Room: "#ops:m.example", Token: secret.New("t")}},
			"notify: matrix room: must be a room ID (!…), not an alias"},
		{"token", Config{Matrix: &Matrix{Homeserver: "https://m.example", Room: "!r:m.example"}}, "notify: matrix token: is empty"},
		{"user info", Config{Matrix: &Matrix{Homeserver: "https://u:p@m.example", Room: "!r", Token: secret.New("t")}},
			"notify: matrix homeserver: must not hold user info"},
		{"header name", Config{Webhook: &Webhook{URL: secret.New("https://h.example"), Headers: map[string]secret.String{"a:b": secret.New("v")}}},
			`notify: webhook header "a:b": is not a valid header name`},
		{"negative", Config{Webhook: ok, Dedup: -1}, "notify: dedup: is negative"},
		{"negative burst", Config{Webhook: ok, Burst: -1}, "notify: burst: is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("New = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestFormat: the notifiers print as plain structs whose secrets show as
// [redacted] (set) or nothing (not set), what is not secret as it is.
func TestFormat(t *testing.T) {
	cfg := Config{
		Matrix:  &Matrix{Homeserver: "https://matrix.example/base", Room: "!r:matrix.example", Token: secret.New("tok")},
		Feishu:  &Feishu{Webhook: secret.New("https://open.feishu.cn/open-apis/bot/v2/hook/abc")},
		Webhook: &Webhook{URL: secret.New("https://hook.example/x?k=v"), Headers: map[string]secret.String{"Authorization": secret.New("Bearer x"), "X-Team": secret.New("")}},
		Burst:   3,
	}
	js, err := json.Marshal(cfg.Webhook)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ got, want string }{
		{fmt.Sprintf("%v", cfg.Matrix), "&{https://matrix.example/base !r:matrix.example [redacted]}"},
		{fmt.Sprintf("%#v", *cfg.Matrix), `notify.Matrix{Homeserver:"https://matrix.example/base", Room:"!r:matrix.example", Token:secret.String("[redacted]")}`},
		{fmt.Sprintf("%+v", *cfg.Feishu), "{Webhook:[redacted] Secret:}"},
		{fmt.Sprintf("%+v", *cfg.Webhook), "{URL:[redacted] Headers:map[Authorization:[redacted] X-Team:]}"},
		{string(js), `{"URL":"[redacted]","Headers":{"Authorization":"[redacted]","X-Team":""}}`},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got  %s\nwant %s", tt.got, tt.want)
		}
	}
}
