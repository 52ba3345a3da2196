package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// runNotifier runs n until the test ends, and waits for Run to return.
func runNotifier(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func receive(t *testing.T, ch <-chan request) request {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second): // a hang guard, not a wait for state
		t.Fatal("no request arrived")
		return request{}
	}
}

// TestWireFormats checks the requests each service gets, byte for byte, over
// real sockets.
func TestWireFormats(t *testing.T) {
	matrix := &receiver{got: make(chan request, 4), reply: func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"event_id":"$abc"}`)
	}}
	feishu := &receiver{got: make(chan request, 4), reply: func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"code":0,"data":{},"msg":"success"}`)
	}}
	hook := &receiver{got: make(chan request, 4), reply: func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}}
	var servers []*httptest.Server
	for _, h := range []http.Handler{matrix, feishu, hook} {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		servers = append(servers, s)
	}
	c := newClock()
	n, err := New(Config{
		Matrix: &Matrix{Homeserver: servers[0].URL + "/prefix/", Room: "!room/1:example.org", Token: secret.New("mtoken")},
		Feishu: &Feishu{Webhook: secret.New(servers[1].URL + "/open-apis/bot/v2/hook/hook-id"), Secret: secret.New("fsecret")},
		Webhook: &Webhook{URL: secret.New(servers[2].URL + "/events?source=keypool"),
			Headers: map[string]secret.String{"Authorization": secret.New("Bearer wtoken"), "X-Team": secret.New("infra")}},
		Now: c.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	runNotifier(t, n)
	n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}, {ID: kB, Upstream: "main"}})
	n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, `invalid_api_key <"x"&y>`))

	const text = `keypool: key kp_aaaaaaaaaaaaaaaa on upstream main is revoked (invalid_api_key <\"x\"&y>)`

	m := receive(t, matrix.got)
	wantPath := fmt.Sprintf("/prefix/_matrix/client/v3/rooms/%%21room%%2F1:example.org/send/m.room.message/keypool-%d-1", t0.UnixNano())
	if m.Method != http.MethodPut || m.Path != wantPath || m.Query != "" {
		t.Errorf("matrix: %s %s?%s, want PUT %s", m.Method, m.Path, m.Query, wantPath)
	}
	if got := m.Header.Get("Authorization"); got != "Bearer mtoken" {
		t.Errorf("matrix Authorization = %q", got)
	}
	if got := m.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("matrix Content-Type = %q", got)
	}
	if want := `{"msgtype":"m.text","body":"` + text + `"}`; m.Body != want {
		t.Errorf("matrix body\n%s\nwant\n%s", m.Body, want)
	}

	f := receive(t, feishu.got)
	if f.Method != http.MethodPost || f.Path != "/open-apis/bot/v2/hook/hook-id" {
		t.Errorf("feishu: %s %s", f.Method, f.Path)
	}
	if got := f.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("feishu Content-Type = %q", got)
	}
	ts := strconv.FormatInt(t0.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(ts+"\nfsecret"))
	sign := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if want := `{"msg_type":"text","content":{"text":"` + text + `"},"timestamp":"` + ts + `","sign":"` + sign + `"}`; f.Body != want {
		t.Errorf("feishu body\n%s\nwant\n%s", f.Body, want)
	}

	w := receive(t, hook.got)
	if w.Method != http.MethodPost || w.Path != "/events" || w.Query != "source=keypool" {
		t.Errorf("webhook: %s %s?%s", w.Method, w.Path, w.Query)
	}
	for name, want := range map[string]string{"Authorization": "Bearer wtoken", "X-Team": "infra", "Content-Type": "application/json"} {
		if got := w.Header.Get(name); got != want {
			t.Errorf("webhook %s = %q, want %q", name, got, want)
		}
	}
	wantBody := `{"event":"key_revoked","upstream":"main","key":"kp_aaaaaaaaaaaaaaaa","reason":"invalid_api_key <\"x\"&y>",` +
		`"time":"2026-03-01T12:00:00.123456789Z","text":"` + text + `","suppressed":0}`
	if w.Body != wantBody {
		t.Errorf("webhook body\n%s\nwant\n%s", w.Body, wantBody)
	}
}

// TestWebhookUpstreamEvent checks that an event without a key has no key
// field, and that the suppressed count is posted.
func TestWebhookUpstreamEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hook := &receiver{}
		c := newClock()
		n, err := New(Config{
			Webhook: &Webhook{URL: secret.New("http://hook.test/x")},
			Client:  &http.Client{Transport: handlerTransport{hook}},
			Burst:   1,
			Now:     c.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go n.Run(ctx)
		n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}, {ID: kB, Upstream: "main"}, {ID: kC, Upstream: "main"}})
		n.Attempt(keypool.AttemptEvent{Upstream: "main", Outcome: keypool.OutcomeServerError})
		for range 5 {
			n.Attempt(keypool.AttemptEvent{Upstream: "main", Outcome: keypool.OutcomeServerError})
		}
		n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "x")) // rate-limited
		c.Add(time.Minute)
		n.StateChange(change("main", kB, keypool.StateReady, keypool.StateRevoked, "y"))
		synctest.Wait()
		reqs := hook.requests()
		if len(reqs) != 2 {
			t.Fatalf("%d posts, want 2", len(reqs))
		}
		want := `{"event":"upstream_failing","upstream":"main","reason":"5 failed attempts within 1m0s, last: no response",` +
			`"time":"2026-03-01T12:00:00.123456789Z","text":"keypool: upstream main is failing (5 failed attempts within 1m0s, last: no response)","suppressed":0}`
		if reqs[0].Body != want {
			t.Errorf("body\n%s\nwant\n%s", reqs[0].Body, want)
		}
		want = `{"event":"key_revoked","upstream":"main","key":"kp_bbbbbbbbbbbbbbbb","reason":"y",` +
			`"time":"2026-03-01T12:01:00.123456789Z","text":"keypool: key kp_bbbbbbbbbbbbbbbb on upstream main is revoked (y) (1 more suppressed)","suppressed":1}`
		if reqs[1].Body != want {
			t.Errorf("body\n%s\nwant\n%s", reqs[1].Body, want)
		}
	})
}

func TestFeishuUnsigned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := &receiver{reply: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"code":0}`) }}
		n, err := New(Config{
			Feishu: &Feishu{Webhook: secret.New("https://open.feishu.test/open-apis/bot/v2/hook/abc")},
			Client: &http.Client{Transport: handlerTransport{rc}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go n.Run(ctx)
		n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}, {ID: kB, Upstream: "main"}})
		n.StateChange(change("main", kA, keypool.StateReady, keypool.StateOverQuota, "insufficient_quota"))
		synctest.Wait()
		reqs := rc.requests()
		want := `{"msg_type":"text","content":{"text":"keypool: key kp_aaaaaaaaaaaaaaaa on upstream main is over quota (insufficient_quota)"}}`
		if len(reqs) != 1 || reqs[0].Body != want {
			t.Fatalf("got %+v, want one post of\n%s", reqs, want)
		}
	})
}

// TestAnswers checks which answers count as sent and which as failed.
func TestAnswers(t *testing.T) {
	tests := []struct {
		notifier string
		status   int
		body     string
		ok       bool
	}{
		{NameFeishu, 200, `{"code":0,"data":{},"msg":"success"}`, true},
		{NameFeishu, 200, `{"Extra":null,"StatusCode":0,"StatusMessage":"success"}`, true},
		{NameFeishu, 200, `{"code":19021,"data":{},"msg":"sign match fail or timestamp is not within one hour from current time"}`, false},
		{NameFeishu, 200, `{"code":9499,"msg":"Bad Request"}`, false},
		{NameFeishu, 200, `{"StatusCode":19001,"StatusMessage":"param invalid"}`, false},
		{NameFeishu, 200, `<html>`, false},
		{NameFeishu, 200, `{}`, false},
		{NameFeishu, 500, `{"code":0}`, false},
		{NameMatrix, 200, `{"event_id":"$x"}`, true},
		{NameMatrix, 401, `{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token"}`, false},
		{NameMatrix, 502, ``, false},
		{NameWebhook, 200, ``, true},
		{NameWebhook, 202, ``, true},
		{NameWebhook, 302, ``, false},
		{NameWebhook, 404, ``, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d %s", tt.notifier, tt.status, tt.body), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rc := &receiver{reply: func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(tt.status)
					io.WriteString(w, tt.body)
				}}
				cfg := Config{Client: &http.Client{Transport: handlerTransport{rc}}}
				switch tt.notifier {
				case NameFeishu:
					cfg.Feishu = &Feishu{Webhook: secret.New("https://feishu.test/hook/x"), Secret: secret.New("s")}
				case NameMatrix:
					cfg.Matrix = &Matrix{Homeserver: "https://matrix.test", Room: "!r:matrix.test", Token: secret.New("t")}
				case NameWebhook:
					cfg.Webhook = &Webhook{URL: secret.New("https://hook.test/x")}
				}
				n, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				go n.Run(ctx)
				n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}, {ID: kB, Upstream: "main"}})
				n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "x"))
				synctest.Wait()
				st := n.Stats()
				sent, failed := st.Sent[tt.notifier], st.Failed[tt.notifier]
				if tt.ok && (sent != 1 || failed != 0) || !tt.ok && (sent != 0 || failed != 1) {
					t.Fatalf("Sent %d, Failed %d; want ok=%v", sent, failed, tt.ok)
				}
			})
		})
	}
}

// TestSlowReceiver checks that a receiver that hangs until the timeout
// never holds up the observer methods: they return at once, and what does
// not fit the queue is dropped and counted.
func TestSlowReceiver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := &receiver{reply: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }}
		n, err := New(Config{
			Webhook:   &Webhook{URL: secret.New("http://slow.test/x")},
			Client:    &http.Client{Transport: handlerTransport{hang}},
			Timeout:   10 * time.Second,
			QueueSize: 4,
			Burst:     1000,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- n.Run(ctx) }()

		keys := make([]keypool.KeyID, 100)
		var seed []keypool.KeyInfo
		for i := range keys {
			keys[i] = keypool.KeyID(fmt.Sprintf("kp_%016x", i))
			seed = append(seed, keypool.KeyInfo{ID: keys[i], Upstream: "main", State: keypool.StateReady})
		}
		n.Seed(append(seed, keypool.KeyInfo{ID: kA, Upstream: "main"}))
		n.StateChange(change("main", keys[0], keypool.StateReady, keypool.StateRevoked, "x"))
		synctest.Wait() // Run took it and hangs in the receiver

		start := time.Now()
		for _, k := range keys[1:] {
			n.StateChange(change("main", k, keypool.StateReady, keypool.StateRevoked, "x"))
			n.Attempt(keypool.AttemptEvent{Upstream: "main", Key: k, Outcome: keypool.OutcomeServerError})
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("observer calls took %v of fake time, want none", d)
		}
		// 4 fit in the queue. 99 key events came, and from the 5th failed
		// attempt on, 95 upstream_failing: a dropped event is no duplicate
		// of a later one.
		if st := n.Stats(); st.Dropped != 99+95-4 {
			t.Errorf("Dropped = %d, want %d", st.Dropped, 99+95-4)
		}

		cancel()
		stop := time.Now()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// The send under way is cut at the drain timeout; the rest is left.
		if d := time.Since(stop); d != DefaultDrainTimeout {
			t.Fatalf("Run returned %v after its context ended, want %v", d, DefaultDrainTimeout)
		}
		if st := n.Stats(); st.Failed[NameWebhook] != 1 || st.Sent[NameWebhook] != 0 {
			t.Fatalf("Stats %+v, want 1 failed", st)
		}
	})
}

// TestTimeout checks that a send that hangs fails at Config.Timeout and the
// next message goes out.
func TestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first := true
		rc := &receiver{got: make(chan request, 2), reply: func(w http.ResponseWriter, r *http.Request) {
			if first {
				first = false
				<-r.Context().Done()
			}
		}}
		n, err := New(Config{
			Webhook: &Webhook{URL: secret.New("http://slow.test/x")},
			Client:  &http.Client{Transport: handlerTransport{rc}},
			Timeout: 3 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go n.Run(ctx)
		n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}, {ID: kB, Upstream: "main"}, {ID: kC, Upstream: "main"}})
		start := time.Now()
		n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "x"))
		n.StateChange(change("main", kB, keypool.StateReady, keypool.StateRevoked, "x"))
		<-rc.got
		<-rc.got // blocks the bubble, so fake time runs to the timeout
		synctest.Wait()
		if d := time.Since(start); d != 3*time.Second {
			t.Fatalf("took %v, want the 3s timeout", d)
		}
		if st := n.Stats(); st.Failed[NameWebhook] != 1 || st.Sent[NameWebhook] != 1 {
			t.Fatalf("Stats %+v, want 1 failed and 1 sent", st)
		}
	})
}

// TestRunDrains checks that what is queued when the context ends is still
// delivered, to every notifier.
func TestRunDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mx, fs, wh := &receiver{}, &receiver{}, &receiver{reply: func(w http.ResponseWriter, r *http.Request) {}}
		fs.reply = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"code":0}`) }
		n, err := New(Config{
			Matrix:  &Matrix{Homeserver: "https://matrix.test", Room: "!r:matrix.test", Token: secret.New("t")},
			Feishu:  &Feishu{Webhook: secret.New("https://feishu.test/hook/x")},
			Webhook: &Webhook{URL: secret.New("https://hook.test/x")},
			Client: &http.Client{Transport: handlerTransport{hostMux{
				"matrix.test": mx, "feishu.test": fs, "hook.test": wh}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}, {ID: kB, Upstream: "main"}, {ID: kC, Upstream: "main"}})
		n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "x"))
		n.StateChange(change("main", kB, keypool.StateReady, keypool.StateRevoked, "x"))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := n.Run(ctx); err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{NameMatrix: 2, NameFeishu: 2, NameWebhook: 2}
		st := n.Stats()
		for name, c := range want {
			if st.Sent[name] != c {
				t.Errorf("Sent[%s] = %d, want %d (%+v)", name, st.Sent[name], c, st)
			}
		}
		// Distinct transaction IDs: a retry could reuse one, a new message not.
		reqs := mx.requests()
		if len(reqs) != 2 || reqs[0].Path == reqs[1].Path {
			t.Fatalf("matrix requests %+v, want 2 with distinct transaction IDs", reqs)
		}
	})
}

func TestRunTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, err := New(Config{Webhook: &Webhook{URL: secret.New("https://hook.test/x")}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- n.Run(ctx) }()
		synctest.Wait()
		if err := n.Run(ctx); err == nil {
			t.Fatal("a second Run at once succeeded")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// Webhook header values are secrets, but the default client follows a
// redirect to any host and copies every non-Authorization header there.
func TestWebhookHeadersNeverFollowARedirect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		evil := &receiver{}
		hook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://evil.test/steal", http.StatusTemporaryRedirect)
		})
		n, err := New(Config{
			Webhook: &Webhook{URL: secret.New("http://hook.test/x"), Headers: map[string]secret.String{"X-Api-Key": secret.New("wh-secret-value")}},
			Client:  &http.Client{Transport: handlerTransport{hostMux{"hook.test": hook, "evil.test": evil}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}, {ID: kB, Upstream: "main"}})
		n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "x"))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		n.Run(ctx)
		for _, r := range evil.requests() {
			if v := r.Header.Get("X-Api-Key"); v != "" {
				t.Errorf("another host got the webhook's secret header: %q", v)
			}
		}
	})
}
