package app_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
)

// TestNewStartsNothing: New builds every part (a notifier included) and
// starts none: synctest.Test fails on a goroutine left running.
func TestNewStartsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := &config.Config{
			Authorization: []secret.String{secret.New("tok-app-start-0000")},
			Upstream:      []config.Upstream{{Endpoint: "https://a.example/v1", Keys: []keypool.Key{keypool.NewKey("sk-app-start-1111")}}},
			DBType:        "none",
			Notify:        config.Notify{Webhook: &config.Webhook{URL: secret.New("https://hooks.example/keypool")}},
		}
		a, err := app.New(cfg, app.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if a.Handler() == nil || len(a.Transport().Snapshot()) != 1 {
			t.Fatalf("handler %v, %d keys", a.Handler(), len(a.Transport().Snapshot()))
		}
	})
}

// TestServeStopsInOrder: Serve serves until its context ends, then the
// server drains, the records are flushed (the request's record written),
// and only then does it say it stopped.
func TestServeStopsInOrder(t *testing.T) {
	const key, token = "sk-app-order-aaaaaaaaaaaa", "tok-app-order-bbbbbbbbbb"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key})
	cfg := &config.Config{
		Authorization: []secret.String{secret.New(token)},
		Upstream:      []config.Upstream{{Endpoint: url, Keys: []keypool.Key{keypool.NewKey(key)}}},
		DBType:        "sqlite",
		DBAddr:        secret.New(filepath.Join(t.TempDir(), "db.sqlite")),
	}
	logs := &syncBuffer{}
	addrs := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- app.Serve(ctx, cfg, app.Options{Listen: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second,
			Logger: slog.New(slog.NewTextHandler(logs, nil)), Ready: func(a net.Addr) { addrs <- a }})
	}()
	var base string
	select {
	case a := <-addrs:
		base = "http://" + a.String()
	case err := <-served:
		t.Fatalf("Serve ended before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve never listened")
	}
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	log := logs.String()
	last := -1
	for _, want := range []string{`msg="client token"`, "msg=listening", `msg="shutting down"`, `msg="records flushed" written=1 dropped=0`, "msg=stopped"} {
		i := strings.Index(log, want)
		if i < 0 || i < last {
			t.Fatalf("%q missing or out of order in the log:\n%s", want, log)
		}
		last = i
	}
	for _, secret := range []string{key, token} {
		if strings.Contains(log, secret) {
			t.Fatalf("the log holds %q:\n%s", secret, log)
		}
	}
}
