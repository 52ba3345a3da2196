package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// Secrets of the tests: none may appear in a log line.
const (
	keyA        = "sk-test-aaaaaaaaaaaaaaaaaaaa"
	keyB        = "sk-test-bbbbbbbbbbbbbbbbbbbb"
	clientToken = "tok-client-1111111111"
	upToken     = "tok-upstream-2222222222"
	wrongToken  = "tok-wrong-3333333333"
)

var secrets = []string{keyA, keyB, clientToken, upToken, wrongToken}

// syncBuffer is a log sink the handlers of several goroutines write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proxy starts the server with opts over a transport built from topts, and
// checks when the test ends that no secret reached the log.
func proxy(t *testing.T, opts server.Options, topts ...keypool.Option) (*keypool.Transport, string) {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr, err := keypool.New(append(topts, keypool.WithLogger(logger))...)
	if err != nil {
		t.Fatal(err)
	}
	opts.Transport, opts.Logger = tr, logger
	s, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ts.Close()
		tr.CloseIdleConnections()
		out := logs.String()
		for _, sec := range secrets {
			if strings.Contains(out, sec) {
				t.Errorf("a secret is in the log:\n%s", out)
			}
		}
	})
	return tr, ts.URL
}

func send(t *testing.T, method, url, token string, body io.Reader, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    any     `json:"code"`
	} `json:"error"`
}

func decodeError(t *testing.T, b []byte) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an OpenAI error body (%v): %s", err, b)
	}
	return e
}

func chatBody(stream bool) io.Reader {
	return strings.NewReader(`{"model":"gpt-4o-mini","stream":` + strconv.FormatBool(stream) +
		`,"messages":[{"role":"user","content":"hello"}]}`)
}

func TestNewNeedsTransport(t *testing.T) {
	if _, err := server.New(server.Options{}); err == nil {
		t.Fatal("New without a transport: no error")
	}
}

func TestHealthz(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA})
	_, base := proxy(t, server.Options{Tokens: []secret.String{secret.New(clientToken)}}, keypool.WithUpstream(url, keyA))
	resp, b := send(t, "GET", base+"/healthz", "", nil)
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, b)
	}
	resp, b = send(t, "GET", base+"/nowhere", clientToken, nil)
	if resp.StatusCode != 404 {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
	decodeError(t, b)
}

func TestAuth(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA})
	restricted := server.Options{
		Tokens:    []secret.String{secret.New(clientToken)},
		Upstreams: []server.UpstreamAccess{{Name: "main", Tokens: []secret.String{secret.New(upToken)}}},
	}
	inherits := server.Options{
		Tokens:    []secret.String{secret.New(clientToken)},
		Upstreams: []server.UpstreamAccess{{Name: "main", Tokens: []secret.String{secret.New(upToken)}, InheritTokens: true}},
	}
	openToAll := server.Options{
		Tokens:    []secret.String{secret.New(clientToken)},
		Upstreams: []server.UpstreamAccess{{Name: "free", NoAuth: true}},
	}
	for _, tc := range []struct {
		name   string
		opts   server.Options
		header string // Authorization
		want   int
	}{
		{"missing", restricted, "", 401},
		{"wrong", restricted, "Bearer " + wrongToken, 401},
		{"prefix of a token", restricted, "Bearer " + clientToken[:len(clientToken)-1], 401},
		{"not bearer", restricted, "Basic " + clientToken, 401},
		// openai-api-route's rule: an upstream with tokens of its own
		// takes only those.
		{"global token, upstream with its own", restricted, "Bearer " + clientToken, 403},
		{"global token, upstream inherits", inherits, "Bearer " + clientToken, 200},
		{"lower-case scheme", inherits, "bearer " + clientToken, 200},
		{"upstream token", restricted, "Bearer " + upToken, 200},
		{"upstream token, inherits", inherits, "Bearer " + upToken, 200},
		{"bare token", restricted, upToken, 200},
		{"bare token, spaces", restricted, "  " + upToken + " ", 200},
		{"noauth upstream, no token", openToAll, "", 200},
		{"noauth upstream, wrong token", openToAll, "Bearer " + wrongToken, 200},
		{"no token configured", server.Options{}, "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, base := proxy(t, tc.opts, keypool.WithUpstream(url, keyA))
			resp, b := send(t, "GET", base+"/v1/models", "", nil, "Authorization", tc.header)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, b)
			}
			if tc.want == 403 {
				e := decodeError(t, b)
				if e.Error.Code != "upstream_not_permitted" || bytes.Contains(b, []byte(clientToken)) {
					t.Errorf("error body %s", b)
				}
			}
			if tc.want != 401 {
				return
			}
			e := decodeError(t, b)
			if e.Error.Type != "invalid_request_error" || e.Error.Code != "invalid_api_key" || e.Error.Param != nil {
				t.Errorf("error body %s", b)
			}
			if !strings.HasPrefix(e.Error.Message, "Incorrect API key provided") {
				t.Errorf("message %q", e.Error.Message)
			}
			for _, sec := range secrets {
				if bytes.Contains(b, []byte(sec)) {
					t.Errorf("the answer echoes a token: %s", b)
				}
			}
		})
	}
}

func TestChatJSON(t *testing.T) {
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA}, fakeopenai.Key{Secret: keyB})
	_, base := proxy(t, server.Options{Tokens: []secret.String{secret.New(clientToken)}}, keypool.WithUpstream(url, keyA+","+keyB))
	resp, b := send(t, "POST", base+"/v1/chat/completions", clientToken, chatBody(false), "Content-Type", "application/json")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var out struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Object != "chat.completion" || len(out.Choices) == 0 {
		t.Fatalf("answer %s (%v)", b, err)
	}
	recs := fake.Records()
	if len(recs) != 1 {
		t.Fatalf("the fake saw %d requests, want 1", len(recs))
	}
	if k := recs[0].Key; k != keyA && k != keyB {
		t.Errorf("the upstream got key %q, want a pool key (the client's token must not travel)", k)
	}
	if recs[0].Path != "/v1/chat/completions" || !recs[0].Spent {
		t.Errorf("record %+v", recs[0])
	}
}

func TestStreamThroughProxy(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA})
	_, base := proxy(t, server.Options{Tokens: []secret.String{secret.New(clientToken)}}, keypool.WithUpstream(url, keyA))
	resp, b := send(t, "POST", base+"/v1/chat/completions", clientToken, chatBody(true), "Content-Type", "application/json")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q", ct)
	}
	if !bytes.HasSuffix(bytes.TrimSpace(b), []byte("data: [DONE]")) || bytes.Count(b, []byte("data: ")) < 3 {
		t.Errorf("stream:\n%s", b)
	}
}

// TestStreamFlushedPerEvent checks that an event reaches the client while the
// upstream is still holding the rest of the stream back.
func TestStreamFlushedPerEvent(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"first"}}]}`+"\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(unblock) // runs before up.Close
	_, base := proxy(t, server.Options{Tokens: []secret.String{secret.New(clientToken)}}, keypool.WithUpstream(up.URL+"/v1", keyA))

	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", chatBody(true))
	req.Header.Set("Authorization", "Bearer "+clientToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.Contains(line, `"first"`) {
		t.Fatalf("first event %q, %v", line, err)
	}
	unblock()
	rest, err := io.ReadAll(rd)
	if err != nil || !strings.Contains(string(rest), "data: [DONE]") {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

func TestMultipartTranscription(t *testing.T) {
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA})
	_, base := proxy(t, server.Options{Tokens: []secret.String{secret.New(clientToken)}}, keypool.WithUpstream(url, keyA))
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("model", "whisper-1")
	fw, _ := mw.CreateFormFile("file", "hello.mp3")
	fw.Write(bytes.Repeat([]byte{0xff, 0xfb, 0x90, 0x00}, 4096))
	mw.Close()
	resp, b := send(t, "POST", base+"/v1/audio/transcriptions", clientToken, &body, "Content-Type", mw.FormDataContentType())
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var out struct{ Text string }
	if err := json.Unmarshal(b, &out); err != nil || out.Text == "" {
		t.Fatalf("answer %s (%v)", b, err)
	}
	recs := fake.Records()
	if len(recs) != 1 || recs[0].Path != "/v1/audio/transcriptions" || recs[0].Model != "whisper-1" {
		t.Fatalf("records %+v", recs)
	}
}

func TestBodyLimit(t *testing.T) {
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA})
	_, base := proxy(t, server.Options{Tokens: []secret.String{secret.New(clientToken)}, MaxBody: 1024}, keypool.WithUpstream(url, keyA))
	big := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", 2048) + `"}]}`
	for _, tc := range []struct {
		name string
		body io.Reader
	}{
		{"content-length", strings.NewReader(big)},
		{"chunked", io.MultiReader(strings.NewReader(big))}, // length unknown to the client
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := send(t, "POST", base+"/v1/chat/completions", clientToken, tc.body, "Content-Type", "application/json")
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if e := decodeError(t, b); e.Error.Type != "invalid_request_error" {
				t.Errorf("error body %s", b)
			}
		})
	}
	if n := len(fake.Records()); n != 0 {
		t.Errorf("the fake saw %d requests", n)
	}
	// A body within the limit goes through.
	resp, b := send(t, "POST", base+"/v1/chat/completions", clientToken, chatBody(false))
	if resp.StatusCode != 200 {
		t.Fatalf("small body: %d %s", resp.StatusCode, b)
	}
}

// roundTripFunc is a base RoundTripper made of a func.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNoKeyAnswers(t *testing.T) {
	rateLimited := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		body := `{"error":{"message":"Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
		h := http.Header{"Content-Type": {"application/json"}, "Retry-After": {"20"},
			"X-Ratelimit-Remaining-Requests": {"0"}, "X-Ratelimit-Reset-Requests": {"20s"}}
		return &http.Response{StatusCode: 429, Header: h, Body: io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: r}, nil
	})
	unreachable := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errors.New("dial tcp: connection refused")
	})

	t.Run("429 when a key frees up soon", func(t *testing.T) {
		_, base := proxy(t, server.Options{}, keypool.WithUpstream("http://up.invalid/v1", keyA),
			keypool.WithBase(rateLimited), keypool.WithMaxWait(0))
		// The first answer is the upstream's 429, told in keypool's words
		// (the upstream's would name the operator's organization) with its
		// Retry-After; it teaches the pool that the key cools down.
		resp, b := send(t, "POST", base+"/v1/chat/completions", "", chatBody(false))
		if e := decodeError(t, b); resp.StatusCode != 429 || e.Error.Code != "rate_limit_exceeded" ||
			!strings.Contains(e.Error.Message, "every key of the pool") || resp.Header.Get("Retry-After") != "20" {
			t.Fatalf("first: %d %v %s", resp.StatusCode, resp.Header, b)
		}
		resp, b = send(t, "POST", base+"/v1/chat/completions", "", chatBody(false))
		if resp.StatusCode != 429 {
			t.Fatalf("second: %d %s", resp.StatusCode, b)
		}
		ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 60 {
			t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
		}
		if e := decodeError(t, b); e.Error.Code != "rate_limit_exceeded" || !strings.Contains(e.Error.Message, "frees up") {
			t.Errorf("body %s", b)
		}
	})

	t.Run("503 when no key will free up", func(t *testing.T) {
		tr, base := proxy(t, server.Options{}, keypool.WithUpstream("http://up.invalid/v1", keyA),
			keypool.WithBase(rateLimited), keypool.WithMaxWait(0))
		for _, k := range tr.Snapshot() {
			if err := tr.Pool().Disable(k.ID, "maintenance"); err != nil {
				t.Fatal(err)
			}
		}
		resp, b := send(t, "POST", base+"/v1/chat/completions", "", chatBody(false))
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "" || resp.Header.Get("X-Should-Retry") != "false" {
			t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
		}
		if e := decodeError(t, b); e.Error.Code != "no_key_available" || !strings.Contains(e.Error.Message, "gpt-4o-mini") {
			t.Errorf("body %s", b)
		}
	})

	t.Run("502 when every attempt failed", func(t *testing.T) {
		_, base := proxy(t, server.Options{}, keypool.WithUpstream("http://up.invalid/v1", keyA),
			keypool.WithBase(unreachable), keypool.WithMaxAttempts(1))
		resp, b := send(t, "POST", base+"/v1/chat/completions", "", chatBody(false))
		if resp.StatusCode != 502 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		if e := decodeError(t, b); e.Error.Type != "server_error" {
			t.Errorf("body %s", b)
		}
	})
}

// TestClientDisconnectCancelsUpstream checks that a client that goes away
// ends the upstream request it was waiting for.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: keyA, Behavior: fakeopenai.SlowHeaders, Delay: time.Hour})
	entered, left := make(chan struct{}, 1), make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		fake.ServeHTTP(w, r)
		left <- struct{}{}
	}))
	t.Cleanup(func() { fake.Close(); up.Close() })
	_, base := proxy(t, server.Options{}, keypool.WithUpstream(up.URL+"/v1", keyA))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", chatBody(false))
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	// The fake holds the request for an hour (SlowHeaders): its handler
	// returns only if the client's leaving cancels the upstream call.
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the cancelled request got an answer")
	}
	select {
	case <-left:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not cancelled")
	}
	if n := fake.InFlight(); n != 0 {
		t.Fatalf("in flight upstream after the client left: %d", n)
	}
}
