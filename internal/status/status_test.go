package status_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/status"
)

const (
	good    = "sk-status-good-0123456789abcdef"
	revoked = "sk-status-revoked-0123456789abcdef"
)

// rig is a pool over the fake API, in memory, and its status page.
type rig struct {
	fake *fakeopenai.Server
	tr   *keypool.Transport
	page *status.Page
}

func newRig(t *testing.T, opts status.Options, keys ...fakeopenai.Key) *rig {
	t.Helper()
	r := &rig{fake: fakeopenai.New(fakeopenai.Config{}, keys...)}
	t.Cleanup(r.fake.Close)
	opts.Keys = func() []keypool.KeyInfo { return r.tr.Snapshot() }
	r.page = status.New(opts)
	var secrets []string
	for _, k := range keys {
		secrets = append(secrets, k.Secret)
	}
	var err error
	r.tr, err = keypool.New(keypool.WithUpstream("https://api.openai.com/v1", strings.Join(secrets, ",")),
		keypool.WithBase(&fakeopenai.Router{Handler: r.fake}), keypool.WithObserver(r.page),
		keypool.WithBackoff(time.Millisecond, time.Millisecond), keypool.WithMaxWait(0))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// chat sends one chat completion through the pool, and wants a 200.
func (r *rig) chat(t *testing.T) {
	t.Helper()
	req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func (r *rig) get(t *testing.T, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r.page.Handler().ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w
}

func decode(t *testing.T, b []byte) status.Snapshot {
	t.Helper()
	var s status.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return s
}

func stateOf(s status.Snapshot, secret string) string {
	id := keypool.NewKey(secret).ID()
	for _, k := range s.Keys {
		if k.ID == id {
			return k.State.String()
		}
	}
	return "absent"
}

func TestSnapshotShowsThePool(t *testing.T) {
	r := newRig(t, status.Options{Upstreams: func() []status.Upstream {
		return []status.Upstream{{Name: "api.openai.com", Type: "openai"}}
	}}, fakeopenai.Key{Secret: revoked, Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: good})
	for range 3 {
		r.chat(t)
	}
	w := r.get(t, "/status/data")
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	body := w.Body.Bytes()
	for _, secret := range []string{good, revoked, "status-good", "status-revoked"} {
		if bytes.Contains(body, []byte(secret)) {
			t.Fatalf("the snapshot holds a secret (%s): %s", secret, body)
		}
	}
	s := decode(t, body)
	if s.KeysTotal != 2 || len(s.Keys) != 2 || stateOf(s, revoked) != "revoked" || stateOf(s, good) != "ready" {
		t.Fatalf("keys %+v", s.Keys)
	}
	if s.Counts.Usable != 1 || s.Counts.States["revoked"] != 1 || s.Counts.States["ready"] != 1 {
		t.Fatalf("counts %+v", s.Counts)
	}
	if len(s.Upstreams) != 1 || s.Upstreams[0].Type != "openai" || s.Upstreams[0].Keys != 2 || s.Upstreams[0].States["revoked"] != 1 {
		t.Fatalf("upstreams %+v", s.Upstreams)
	}
	if s.Minutes.Source != "memory" || len(s.Minutes.Requests) != 60 || s.Minutes.Requests[59] != 3 || s.Minutes.Errors[59] != 0 || s.Minutes.Tokens[59] == 0 {
		t.Fatalf("minutes %+v", s.Minutes)
	}
	// The good key's answers stated its organization's limits: one budget
	// with the model's, and the revoked key's own.
	var limits []keypool.ModelLimits
	for _, b := range s.Budgets {
		if len(b.Keys) == 1 && b.Keys[0] == keypool.NewKey(good).ID() {
			limits = b.Models
		}
	}
	if len(s.Budgets) != 2 || len(limits) != 1 || limits[0].Model != "gpt-4o-mini" || limits[0].LimitRequests <= 0 ||
		limits[0].RemainingRequests >= limits[0].LimitRequests {
		t.Fatalf("budgets %+v", s.Budgets)
	}
	// The revoked key's first answer: its change of state and a
	// failover; the good key's: its change to ready (newest first).
	var seen []string
	for _, e := range s.Events {
		switch {
		case e.Kind == "state" && e.From != nil && e.To != nil:
			seen = append(seen, string(e.Key)+" "+e.From.String()+" > "+e.To.String())
		case e.Kind == "failover":
			seen = append(seen, string(e.Key)+" failover "+strconv.Itoa(e.Status)+" "+e.Outcome)
		}
	}
	g, rv := keypool.NewKey(good).ID(), keypool.NewKey(revoked).ID()
	want := []string{string(g) + " unchecked > ready", string(rv) + " failover 401 revoked", string(rv) + " unchecked > revoked"}
	if !slices.Equal(seen, want) {
		t.Fatalf("events %q; want %q", seen, want)
	}
}

func TestFiles(t *testing.T) {
	r := newRig(t, status.Options{}, fakeopenai.Key{Secret: good})
	if w := r.get(t, "/status"); w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "status/" {
		t.Fatalf("/status: %d %v", w.Code, w.Header())
	}
	size := 0
	for path, ctype := range map[string]string{
		"/status/": "text/html; charset=utf-8", "/status/index.html": "text/html; charset=utf-8",
		"/status/app.js": "text/javascript; charset=utf-8", "/status/style.css": "text/css; charset=utf-8",
	} {
		w := r.get(t, path)
		if w.Code != 200 || w.Header().Get("Content-Type") != ctype || w.Body.Len() == 0 {
			t.Fatalf("%s: %d %q, %d bytes", path, w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
		if path != "/status/index.html" { // the same file as /status/
			size += w.Body.Len()
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
			t.Fatalf("%s: CSP %q", path, csp)
		}
		// A page open for a day asks again: it gets a 304, not the file.
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("If-None-Match", w.Header().Get("ETag"))
		again := httptest.NewRecorder()
		r.page.Handler().ServeHTTP(again, req)
		if again.Code != http.StatusNotModified {
			t.Fatalf("%s with its ETag: %d", path, again.Code)
		}
	}
	for _, path := range []string{"/status/nope.js", "/status/../go.mod", "/status/assets/app.js"} {
		if w := r.get(t, path); w.Code == http.StatusOK {
			t.Errorf("%s: %d", path, w.Code)
		}
	}
	if w := r.get(t, "/status/data"); w.Header().Get("X-Frame-Options") != "DENY" {
		t.Errorf("data without the page's headers: %v", w.Header())
	}
	// The bound: a few hundred KB at most.
	if size > 200<<10 {
		t.Errorf("the page's files are %d bytes", size)
	}
}

// stream is the client side of an event stream served into memory: each
// flush hands what was written since to the test. Its writes may be held
// (hold) to play a page that reads slowly.
type stream struct {
	header http.Header
	mu     sync.Mutex
	buf    bytes.Buffer
	frames chan []byte
	hold   chan struct{} // when not nil, each Write waits for a value
	code   int
}

func newStream() *stream {
	return &stream{header: http.Header{}, frames: make(chan []byte, 1000)}
}

func (s *stream) Header() http.Header { return s.header }
func (s *stream) WriteHeader(code int) {
	s.code = code
}

func (s *stream) Write(b []byte) (int, error) {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(b)
}

func (s *stream) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buf.Len() > 0 {
		s.frames <- bytes.Clone(s.buf.Bytes())
		s.buf.Reset()
	}
}

// open serves GET /status/events into a stream until ctx ends; done is
// closed when the handler returned.
func (r *rig) open(ctx context.Context) (s *stream, done chan struct{}) {
	s, done = newStream(), make(chan struct{})
	req := httptest.NewRequest("GET", "/status/events", nil).WithContext(ctx)
	go func() {
		defer close(done)
		r.page.Handler().ServeHTTP(s, req)
	}()
	return s, done
}

// snapshotOf reads the one snapshot event in frame.
func snapshotOf(t *testing.T, frame []byte) status.Snapshot {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(frame))
	sc.Buffer(nil, 1<<20)
	var data []byte
	for sc.Scan() {
		if line, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: ")); ok {
			if data != nil {
				t.Fatalf("two events in one flush: %s", frame)
			}
			data = bytes.Clone(line)
		}
	}
	if !bytes.HasPrefix(frame, []byte("event: snapshot\ndata: ")) || !bytes.HasSuffix(frame, []byte("\n\n")) || data == nil {
		t.Fatalf("not one snapshot event: %q", frame)
	}
	return decode(t, data)
}

// A key's change of state reaches an open page a moment after it
// happened (settle), not at the next interval.
func TestStreamShowsAStateChangeAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, status.Options{Interval: time.Hour},
			fakeopenai.Key{Secret: revoked, Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: good})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		ran := make(chan error)
		go func() { ran <- r.page.Run(ctx) }()
		s, done := r.open(ctx)
		first := snapshotOf(t, <-s.frames)
		if s.header.Get("Content-Type") != "text/event-stream" || stateOf(first, revoked) != "unchecked" {
			t.Fatalf("%v; first snapshot: revoked key %s", s.header, stateOf(first, revoked))
		}
		start := time.Now()
		r.chat(t)
		next := snapshotOf(t, <-s.frames)
		if waited := time.Since(start); stateOf(next, revoked) != "revoked" || waited != 250*time.Millisecond {
			t.Fatalf("after %v: revoked key %s", waited, stateOf(next, revoked))
		}
		synctest.Wait()
		if len(s.frames) != 0 {
			t.Fatalf("%d more snapshots for one change", len(s.frames))
		}
		cancel()
		<-done
		if err := <-ran; err != nil {
			t.Fatal(err)
		}
	})
}

// A page that reads slowly holds no queue of snapshots: when it reads
// again, it gets the latest one, and the server kept only that.
func TestSlowStreamGetsTheLatestOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, status.Options{Interval: time.Second}, fakeopenai.Key{Secret: good})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go r.page.Run(ctx)
		s, done := r.open(ctx)
		<-s.frames
		hold := make(chan struct{})
		s.mu.Lock()
		s.hold = hold
		s.mu.Unlock()
		time.Sleep(100 * time.Second) // 100 snapshots published; the stream is stuck writing the first of them
		synctest.Wait()
		s.mu.Lock()
		s.hold = nil
		s.mu.Unlock()
		hold <- struct{}{}
		<-s.frames // the snapshot it was writing
		synctest.Wait()
		latest := snapshotOf(t, <-s.frames)
		if len(s.frames) != 0 || time.Since(latest.Now) != 0 {
			t.Fatalf("after the stall: a snapshot of %v ago, %d more queued", time.Since(latest.Now), len(s.frames))
		}
		cancel()
		<-done
	})
}

func TestStreamsAreBoundedAndEndAtShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, status.Options{MaxStreams: 2}, fakeopenai.Key{Secret: good})
		ctx := t.Context()
		a, doneA := r.open(ctx)
		b, doneB := r.open(ctx)
		<-a.frames
		<-b.frames
		if w := r.get(t, "/status/events"); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Fatalf("a third stream: %d", w.Code)
		}
		r.page.Shutdown()
		<-doneA
		<-doneB
		if w := r.get(t, "/status/events"); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("a stream after Shutdown: %d", w.Code)
		}
		if w := r.get(t, "/status/data"); w.Code != 200 {
			t.Fatalf("data after Shutdown: %d", w.Code)
		}
	})
}

// A large pool's snapshot lists its first keys, and their budgets, only;
// the counts cover every key.
func TestSnapshotOfALargePool(t *testing.T) {
	var keys []fakeopenai.Key
	for i := range 2100 {
		keys = append(keys, fakeopenai.Key{Secret: fmt.Sprintf("sk-status-large-%04d-0123456789", i)})
	}
	r := newRig(t, status.Options{}, keys...)
	s := decode(t, r.get(t, "/status/data").Body.Bytes())
	if s.KeysTotal != 2100 || len(s.Keys) != 2000 || len(s.Budgets) != 2000 || s.Counts.States["unchecked"] != 2100 ||
		len(s.Upstreams) != 1 || s.Upstreams[0].Keys != 2100 {
		t.Fatalf("%d keys of %d listed, %d budgets, counts %v, upstreams %+v",
			len(s.Keys), s.KeysTotal, len(s.Budgets), s.Counts, s.Upstreams)
	}
}
