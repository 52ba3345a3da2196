package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// These tests reproduce what a client with or without a token, and a broken
// upstream, could make the proxy do, and prove the limits that now stop it.
// Each is bounded in time and count and runs on loopback.

// countingSink counts the records the proxy hands over.
type countingSink struct {
	mu   sync.Mutex
	recs []records.Record
}

func (s *countingSink) Add(r records.Record) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r)
	return true
}

func (s *countingSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

// rawRequest sends text on a new connection and returns the answer read
// within 10 s (the test fails rather than hang), and the connection's
// reader for more.
func rawRequest(t *testing.T, addr, text string) (*http.Response, *bufio.Reader, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, text); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return resp, br, conn
}

// TestRefusedClientCostsLittle: a client without a token and a 900 KiB path
// gets its 401 with nothing recorded, a few hundred bytes of log at most
// once per 10 s, and a closed connection, whatever it keeps sending.
func TestRefusedClientCostsLittle(t *testing.T) {
	var logs syncBuffer
	sink := &countingSink{}
	tr, _ := keypool.New(keypool.WithUpstream("https://up.invalid/v1", keyA), keypool.WithBase(&pathRecorder{}))
	// The clock stands still: however slowly a loaded machine sends the 50
	// requests, they fall in one 10 s window of the refusal log.
	still := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	srv, err := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New(clientToken)}, Records: sink,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return still }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	path := "/v1/" + strings.Repeat("a", 900<<10)
	for range 50 {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if n := sink.len(); n != 0 {
		t.Errorf("%d records of refused requests", n)
	}
	if l := logs.String(); len(l) > 1024 || strings.Count(l, "client refused") != 1 {
		t.Errorf("%d bytes of log for 50 refusals:\n%.2000s", len(l), l)
	}
	if got := srv.Stats()["unauthorized"]; got != 50 {
		t.Errorf("unauthorized count %d, want 50", got)
	}
	// A chunked body sent without a token: the 401 comes at once and the
	// connection closes; nothing waits for the rest of the body.
	resp, _, conn := rawRequest(t, ts.Listener.Addr().String(),
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n")
	if resp.StatusCode != 401 || !resp.Close {
		t.Fatalf("status %d, close %v", resp.StatusCode, resp.Close)
	}
	io.Copy(io.Discard, resp.Body)
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection stayed open for the rest of the body")
	}
}

// TestStalledBodyIsCutOff: a client with a token that stops sending its
// body, or asks "Expect: 100-continue" and then sends nothing, gets a 408
// once BodyIdle passes; the key is never used.
func TestStalledBodyIsCutOff(t *testing.T) {
	up := &pathRecorder{}
	tr, _ := keypool.New(keypool.WithUpstream("https://up.invalid/v1", keyA), keypool.WithBase(up))
	srv, _ := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New(clientToken)}, BodyIdle: 200 * time.Millisecond})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for _, tc := range []struct{ name, text string }{
		{"trickle then silence", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + clientToken +
			"\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n"},
		{"expect 100-continue", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + clientToken +
			"\r\nContent-Length: 20\r\nExpect: 100-continue\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, br, _ := rawRequest(t, ts.Listener.Addr().String(), tc.text)
			if resp.StatusCode == http.StatusContinue {
				var err error
				if resp, err = http.ReadResponse(br, nil); err != nil {
					t.Fatal(err)
				}
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestTimeout || !bytes.Contains(b, []byte("request_timeout")) {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
		})
	}
	if len(up.paths) != 0 {
		t.Fatalf("the upstream was sent %v", up.paths)
	}
	if got := srv.Stats()["body_idle"]; got != 2 {
		t.Fatalf("body_idle count %d", got)
	}
}

// holdUpstream answers after release, so that request bodies stay in memory.
type holdUpstream struct {
	release chan struct{}
	started chan struct{}
}

func (h *holdUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	h.started <- struct{}{}
	select {
	case <-h.release:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
}

// TestBodyMemoryIsBounded: bodies kept for failover count against
// BodyMemory while their answers run; past it a request gets 503 with
// Retry-After instead of more memory, and the budget comes back after.
func TestBodyMemoryIsBounded(t *testing.T) {
	up := &holdUpstream{release: make(chan struct{}), started: make(chan struct{}, 4)}
	tr, _ := keypool.New(keypool.WithUpstream("https://up.invalid/v1", keyA+","+keyB), keypool.WithBase(up))
	srv, _ := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New(clientToken)}, BodyMemory: 1 << 20})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	var once sync.Once
	release := func() { once.Do(func() { close(up.release) }) }
	defer release() // before ts.Close, which waits for the held request, on a failure too
	body := `{"model":"gpt-4o","pad":"` + strings.Repeat("p", 700<<10) + `"}`
	post := func() *http.Response {
		req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+clientToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	first := make(chan *http.Response, 1)
	go func() { first <- post() }()
	<-up.started // the first body is held
	resp := post()
	if resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("second request while the first holds its body: %+v", resp)
	}
	release()
	if r := <-first; r == nil || r.StatusCode != 200 {
		t.Fatalf("first request: %+v", r)
	}
	if resp := post(); resp == nil || resp.StatusCode != 200 {
		t.Fatalf("after the first ended: %+v", resp)
	}
	if got := srv.Stats()["body_memory"]; got != 1 {
		t.Fatalf("body_memory count %d", got)
	}
}

// TestLimitListener: past n open connections, a new one waits until one
// closes.
func TestLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go hs.Serve(server.LimitListener(ln, 1))
	defer hs.Close()
	addr := ln.Addr().String()
	first, _, _ := rawRequest(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // keeps its connection open
	io.Copy(io.Discard, first.Body)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("a second connection was served while the first was open")
	}
	hs.SetKeepAlivesEnabled(false) // the first connection closes once idle
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the second connection after the first closed: %v", err)
	}
}

// headerEcho is an upstream that answers with every header a careless
// upstream could send, and remembers the request headers it got.
type headerEcho struct {
	mu   sync.Mutex
	seen http.Header
}

func (h *headerEcho) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	h.mu.Lock()
	h.seen = r.Header.Clone()
	h.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{
		"Content-Type": {"application/json"}, "X-Fake-Key": {"sk-leaked"}, "Openai-Organization": {"acme"},
		"Openai-Project": {"proj_1"}, "Set-Cookie": {"s=1"}, "Access-Control-Allow-Origin": {"https://evil"},
		"X-Ratelimit-Remaining-Requests": {"9"}, "X-Request-Id": {"req_1"}, "Openai-Processing-Ms": {"12"},
		"Server": {"cloudflare"}, "Cf-Ray": {"abc"}},
		Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
}

// TestHeadersCrossOnAnAllowlist: only the headers the API reads go
// upstream, and only those the SDKs read come back.
func TestHeadersCrossOnAnAllowlist(t *testing.T) {
	up := &headerEcho{}
	tr, _ := keypool.New(keypool.WithUpstream("https://up.invalid/v1", keyA), keypool.WithBase(up))
	srv, _ := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New(clientToken)}})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
	for k, v := range map[string]string{
		"Authorization": "Bearer " + clientToken, "X-Api-Key": clientToken, "Api-Key": clientToken, "Cookie": "c=1",
		"X-Real-Ip": "10.0.0.1", "X-Forwarded-For": "10.0.0.2", "Openai-Beta": "assistants=v2",
		"X-Stainless-Retry-Count": "0", "Content-Type": "application/json", "Idempotency-Key": "k1", "Via": "x",
	} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	up.mu.Lock()
	seen := up.seen
	up.mu.Unlock()
	for _, gone := range []string{"X-Api-Key", "Api-Key", "Cookie", "X-Real-Ip", "X-Forwarded-For", "Via"} {
		if seen.Get(gone) != "" {
			t.Errorf("%s went upstream", gone)
		}
	}
	if seen.Get("Authorization") != "Bearer "+keyA || seen.Get("Openai-Beta") != "assistants=v2" ||
		seen.Get("X-Stainless-Retry-Count") != "0" || seen.Get("Idempotency-Key") != "k1" {
		t.Errorf("the upstream got %v", seen)
	}
	for _, gone := range []string{"X-Fake-Key", "Openai-Organization", "Openai-Project", "Set-Cookie",
		"Access-Control-Allow-Origin", "Server", "Cf-Ray"} {
		if resp.Header.Get(gone) != "" {
			t.Errorf("%s reached the client", gone)
		}
	}
	for _, kept := range []string{"X-Ratelimit-Remaining-Requests", "X-Request-Id", "Openai-Processing-Ms", "Content-Type"} {
		if resp.Header.Get(kept) == "" {
			t.Errorf("%s did not reach the client", kept)
		}
	}
}

// TestCompressingUpstreamThroughTheProxy: an SDK asks for gzip, the
// upstream compresses everything; the pool still sees a revoked key, counts
// usage, and the client gets plain JSON with its content type; a stream
// compressed upstream arrives event by event within its stream timeout.
func TestCompressingUpstreamThroughTheProxy(t *testing.T) {
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: keyA, Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: keyB, StreamInterval: 300 * time.Millisecond})
	sink := &countingSink{}
	tr, _ := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: url, StreamTimeout: time.Second,
		Keys: []keypool.Key{keypool.NewKey(keyA), keypool.NewKey(keyB)}}), keypool.WithTrialsFirst(false))
	srv, _ := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New(clientToken)}, Records: sink})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}} // asks by hand, as Node and Python do
	send := func(body io.Reader) (*http.Response, []byte) {
		req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", body)
		req.Header.Set("Authorization", "Bearer "+clientToken)
		req.Header.Set("Accept-Encoding", "gzip, deflate")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}
	resp, b := send(chatBody(false))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "" || !bytes.HasPrefix(b, []byte("{")) ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d, headers %v, body %.200q", resp.StatusCode, resp.Header, b)
	}
	if rs := fake.Records(); len(rs) != 2 || rs[0].Encoding != "gzip" || rs[1].Encoding != "gzip" {
		t.Fatalf("the upstream did not compress: %+v", rs)
	}
	if k := tr.Snapshot()[0]; k.State != keypool.StateRevoked {
		t.Fatalf("the revoked key is %s", k.State)
	}
	if r := sink.recs[0]; r.InputTokens == 0 || r.OutputTokens == 0 {
		t.Fatalf("usage lost: %+v", r)
	}
	// A stream of 8 events 300 ms apart with a 1 s stream timeout: it only
	// passes when the first event is decoded as it arrives.
	req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", chatBody(true))
	req.Header.Set("Authorization", "Bearer "+clientToken)
	req.Header.Set("Accept-Encoding", "gzip")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, _ := gzip.NewReader(resp.Body)
		r = zr
	}
	first, _ := bufio.NewReader(r).ReadString('\n')
	if resp.StatusCode != 200 || !strings.HasPrefix(first, "data: ") {
		t.Fatalf("status %d, first line %q", resp.StatusCode, first)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the first event took %v", took)
	}
	fmt.Fprint(io.Discard, r)
}

// TestUnknownModelIsTheClientsMistake: a model no upstream allows, or that
// every key answered model_not_found for, gets 404 model_not_found (as the
// API answers a typo), not a 5xx that would page someone; the second time
// without asking the upstream.
func TestUnknownModelIsTheClientsMistake(t *testing.T) {
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA}, fakeopenai.Key{Secret: keyB})
	tr, _ := keypool.New(keypool.WithUpstreams(
		keypool.Upstream{Name: "main", BaseURL: url, Keys: []keypool.Key{keypool.NewKey(keyA)}, Allow: []string{"gpt-4o*", "gpt-typo*"}},
		keypool.Upstream{Name: "backup", BaseURL: url, Keys: []keypool.Key{keypool.NewKey(keyB)}, Allow: []string{"gpt-4o*", "gpt-typo*"}}))
	srv, _ := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New(clientToken)}})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	ask := func(model string) (int, string) {
		req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+clientToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if code, b := ask("o3-mini"); code != 404 || !strings.Contains(b, `"model_not_found"`) || len(fake.Records()) != 0 {
		t.Fatalf("not allowed: %d %s", code, b)
	}
	// Allowed, but no key has it: each upstream's key says so once.
	if code, b := ask("gpt-typo-1"); code != 404 || !strings.Contains(b, `"model_not_found"`) || strings.Contains(b, keyA) {
		t.Fatalf("no key has it: %d %s", code, b)
	}
	asked := len(fake.Records())
	if code, b := ask("gpt-typo-1"); code != 404 || len(fake.Records()) != asked {
		t.Fatalf("again: %d %s, %d more upstream requests", code, b, len(fake.Records())-asked)
	}
	if code, _ := ask("gpt-4o"); code != 200 {
		t.Fatalf("a real model: %d", code)
	}
}

// pathRecorder is an upstream that records what it was sent.
type pathRecorder struct {
	mu    sync.Mutex
	paths []string
}

func (p *pathRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	p.mu.Lock()
	p.paths = append(p.paths, r.URL.String())
	p.mu.Unlock()
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{
		"Content-Type": {"application/json"}, "Openai-Organization": {"acme-org"}, "Set-Cookie": {"session=1"}},
		Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
}

// TestPathCannotClimbOutOfTheBase sends dot segments, plain and
// percent-encoded, on a raw request line: none reaches the upstream.
func TestPathCannotClimbOutOfTheBase(t *testing.T) {
	rec := &pathRecorder{}
	tr, err := keypool.New(keypool.WithUpstream("https://up.invalid/openai/v1", "sk-path-key"), keypool.WithBase(rec))
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := server.New(server.Options{Transport: tr})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for _, target := range []string{"/v1/..%2F..%2Fdashboard/billing", "/v1/%2e%2e/%2e%2e/dashboard/billing", "/v1/models/%2E/x"} {
		conn, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		if resp.StatusCode < 300 {
			t.Errorf("%s: status %d %s", target, resp.StatusCode, b)
		}
	}
	for _, p := range rec.paths {
		t.Errorf("the upstream was sent %s", p)
	}
}

func TestOperatorHeadersStripped(t *testing.T) {
	tr, _ := keypool.New(keypool.WithUpstream("https://up.invalid/v1", "sk-hdr-key"), keypool.WithBase(&pathRecorder{}))
	srv, _ := server.New(server.Options{Transport: tr})
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/v1/models", nil))
	if w.Code != 200 || w.Header().Get("Openai-Organization") != "" || w.Header().Get("Set-Cookie") != "" {
		t.Fatalf("status %d headers %v", w.Code, w.Header())
	}
}

func TestHugeModelIsNotEchoed(t *testing.T) {
	var logs strings.Builder
	tr, _ := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: "https://up.invalid/v1",
		Keys: []keypool.Key{keypool.NewKey("sk-huge-key")}, Allow: []string{"gpt-4o"}}), keypool.WithBase(&pathRecorder{}))
	srv, _ := server.New(server.Options{Transport: tr, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	model := strings.Repeat("x", 1<<20)
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{"model":"`+model+`"}`)))
	if w.Code != 400 || logs.Len() > 4<<10 || w.Body.Len() > 4<<10 {
		t.Fatalf("status %d: a 1 MiB model made %d bytes of log and a %d-byte body", w.Code, logs.Len(), w.Body.Len())
	}
}
