package app_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
)

// The secrets of the status page's tests: they must never reach the page.
const (
	statusGood    = "sk-statuspage-good-7d1f0c9a4b2e"
	statusSpare   = "sk-statuspage-spare-5e8b3a1d6c0f"
	statusDoomed  = "sk-statuspage-doomed-9a2c4e6f8b1d"
	statusClient  = "tok-statuspage-client-3c5e7a9b1d2f"
	statusAdmin   = "tok-statuspage-admin-8f6d4b2a0c1e"
	statusDBShown = "statuspage.sqlite"
)

var statusSecrets = []string{statusGood, statusSpare, statusDoomed, statusClient, statusAdmin,
	// the middles, which a masked or cut form could still show
	"statuspage-good", "statuspage-spare", "statuspage-doomed", "statuspage-client", "statuspage-admin"}

// statusRig is keypool serve on 127.0.0.1 over a fake API, with the admin
// token statusAdmin and records in SQLite.
type statusRig struct {
	base    string
	app     *app.App
	fake    *fakeopenai.Server
	revoked chan keypool.KeyID // keys the pool saw revoked
}

func newStatusRig(t *testing.T, opts app.Options) *statusRig {
	t.Helper()
	revoked := make(chan keypool.KeyID, 16)
	opts.Transport = append(opts.Transport, keypool.WithObserver(keypool.ObserverFuncs{OnStateChange: func(e keypool.StateEvent) {
		if e.To == keypool.StateRevoked {
			revoked <- e.Key
		}
	}}))
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: statusGood}, fakeopenai.Key{Secret: statusSpare}, fakeopenai.Key{Secret: statusDoomed})
	cfg := &config.Config{
		Authorization: []secret.String{secret.New(statusClient)},
		AdminToken:    secret.New(statusAdmin),
		Upstream: []config.Upstream{{Name: "openai", Endpoint: url, Keys: []keypool.Key{
			keypool.NewKey(statusGood).WithSource("keys.txt:1"), keypool.NewKey(statusSpare).WithSource("keys.txt:2"),
			keypool.NewKey(statusDoomed).WithSource("keys.txt:3"),
		}}},
		DBType: "sqlite",
		DBAddr: secret.New(filepath.Join(t.TempDir(), statusDBShown)),
	}
	a, err := app.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("the server did not stop")
		}
	})
	return &statusRig{base: "http://" + ln.Addr().String(), app: a, fake: fake, revoked: revoked}
}

// chat sends a chat completion through the proxy and returns its status.
func (r *statusRig) chat(t *testing.T) int {
	t.Helper()
	req, _ := http.NewRequest("POST", r.base+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+statusClient)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// get fetches path with the admin token (when admin), and returns the
// status, the headers and the body; for an event stream, its first event.
func (r *statusRig) get(t *testing.T, path string, admin bool) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", r.base+path, nil)
	if admin {
		req.Header.Set("Authorization", "Bearer "+statusAdmin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		br := bufio.NewReaderSize(resp.Body, 1<<20)
		var ev []byte
		for {
			line, err := br.ReadBytes('\n')
			ev = append(ev, line...)
			if err != nil || len(line) == 1 {
				return resp.StatusCode, resp.Header, ev
			}
		}
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// revokeDoomed makes the doomed key's upstream revoke it, asks the checker
// for a look at it, as an operator would through the admin API, and waits
// until the pool learned so.
func (r *statusRig) revokeDoomed(t *testing.T) {
	t.Helper()
	r.fake.SetBehavior(statusDoomed, fakeopenai.Revoked)
	id := keypool.NewKey(statusDoomed).ID()
	req, _ := http.NewRequest("POST", r.base+"/admin/keys/"+string(id)+"/recheck", nil)
	req.Header.Set("Authorization", "Bearer "+statusAdmin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("recheck: %d", resp.StatusCode)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-r.revoked:
			if got == id {
				return
			}
		case <-timeout:
			t.Fatal("the checker did not find the doomed key revoked within 10 s")
		}
	}
}

// No secret reaches the page, its files or its data: not a key, a client
// token nor the admin token, however the page is asked and whatever the
// keys went through.
func TestStatusPageHoldsNoSecret(t *testing.T) {
	r := newStatusRig(t, app.Options{})
	for range 3 {
		if code := r.chat(t); code != 200 {
			t.Fatalf("a chat completion: %d", code)
		}
	}
	r.revokeDoomed(t)
	seen := map[string][]byte{}
	for _, tt := range []struct {
		path  string
		admin bool
		want  int
	}{
		{"/status/", false, 200}, {"/status/app.js", false, 200}, {"/status/style.css", false, 200},
		{"/status/data", false, 401}, {"/status/events", false, 401},
		{"/status/data", true, 200}, {"/status/events", true, 200},
		{"/admin/keys", true, 200},
	} {
		code, h, body := r.get(t, tt.path, tt.admin)
		if code != tt.want {
			t.Fatalf("GET %s (admin token %t): %d %s", tt.path, tt.admin, code, body)
		}
		all := []byte(tt.path + "\n")
		for name, vs := range h {
			all = append(all, name+": "+strings.Join(vs, ", ")+"\n"...)
		}
		seen[tt.path] = append(all, body...)
	}
	for path, b := range seen {
		for _, s := range statusSecrets {
			if bytes.Contains(bytes.ToLower(b), []byte(strings.ToLower(s))) {
				t.Errorf("GET %s shows %q", path, s)
			}
		}
	}
	// Not vacuous: the data names every key, by ID and source, and the
	// revoked one as revoked.
	data := string(seen["/status/data"])
	for i, s := range []string{statusGood, statusSpare, statusDoomed} {
		if id := string(keypool.NewKey(s).ID()); !strings.Contains(data, id) || !strings.Contains(data, "keys.txt:"+string(rune('1'+i))) {
			t.Errorf("the data lacks key %s", id)
		}
	}
	if !strings.Contains(data, `"state":"revoked"`) || !strings.Contains(string(seen["/status/events"]), "event: snapshot\ndata: {") {
		t.Errorf("data or events incomplete:\n%s\n%s", data, seen["/status/events"])
	}
}
