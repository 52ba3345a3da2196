package server_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/server"
)

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
