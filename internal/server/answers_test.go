package server_test

import (
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// keptRecords keeps the records it is given.
type keptRecords struct {
	mu   sync.Mutex
	recs []records.Record
}

func (k *keptRecords) Add(r records.Record) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.recs = append(k.recs, r)
	return true
}

// TestAnswersCounted: every answer is counted by client (a configured
// token's ID, none or invalid), route (never the path) and class, the
// proxy's own (401, 404, 413) with the upstreams'; and each request of an
// authorized client gets one access log line with its final key and
// attempts, beside its record.
func TestAnswersCounted(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: keyA}, fakeopenai.Key{Secret: keyB, Behavior: fakeopenai.Revoked})
	access := &syncBuffer{}
	sink := &keptRecords{}
	tr, err := keypool.New(keypool.WithUpstreams(
		keypool.Upstream{Name: "first", BaseURL: url, Keys: []keypool.Key{keypool.NewKey(keyB)}},
		keypool.Upstream{Name: "second", BaseURL: url, Keys: []keypool.Key{keypool.NewKey(keyA)}},
	))
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Options{
		Transport: tr, Tokens: []secret.String{secret.New(clientToken)}, MaxBody: 200, Records: sink,
		AccessLog: slog.New(slog.NewJSONHandler(access, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := newServer(t, s.Handler())
	big := strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", 300) + `"}]}`)
	for _, rq := range []struct {
		method, path, token string
		body                *strings.Reader
		status              int
	}{
		{"POST", "/v1/chat/completions", clientToken, strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`), 200},
		{"GET", "/v1/models", "", nil, 401},
		{"POST", "/v1/chat/completions", wrongToken, strings.NewReader(`{}`), 401},
		{"POST", "/v1/chat/completions", clientToken, big, 413},
		{"GET", "/v1/files/file-abc123/content", clientToken, nil, 404},
		{"GET", "/nowhere", "", nil, 404},
		{"GET", "/healthz", "", nil, 200},
	} {
		var resp *http.Response
		if rq.body != nil {
			resp, _ = send(t, rq.method, ts+rq.path, rq.token, rq.body)
		} else {
			resp, _ = send(t, rq.method, ts+rq.path, rq.token, nil)
		}
		if resp.StatusCode != rq.status {
			t.Fatalf("%s %s: %d, want %d", rq.method, rq.path, resp.StatusCode, rq.status)
		}
	}
	client := records.ClientID(clientToken)
	got := map[string]uint64{}
	s.Answers(func(client, route, class string, n uint64) { got[client+" "+route+" "+class] += n })
	want := map[string]uint64{
		client + " /v1/chat/completions 2xx": 1,
		"none /v1/models 4xx":                1,
		"invalid /v1/chat/completions 4xx":   1,
		client + " /v1/chat/completions 4xx": 1,
		client + " /v1/files 4xx":            1,
		"none other 4xx":                     1,
		"none /healthz 2xx":                  1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("answers\n%v\nwant\n%v", got, want)
	}

	var lines []map[string]any
	for line := range strings.Lines(access.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("%d access log lines, want 3 (the authorized client's):\n%s", len(lines), access.String())
	}
	first := lines[0]
	for k, v := range map[string]any{"client": client, "method": "POST", "route": "/v1/chat/completions", "model": "gpt-4o-mini",
		"status": 200.0, "key": string(keypool.NewKey(keyA).ID()), "attempts": 2.0} {
		if first[k] != v {
			t.Errorf("%s = %v, want %v: %v", k, first[k], v, first)
		}
	}
	if n, _ := first["input_tokens"].(float64); n <= 0 {
		t.Errorf("no input tokens: %v", first)
	}
	if l := lines[1]; l["status"] != 413.0 || l["attempts"] != 0.0 || l["key"] != "" {
		t.Errorf("413 line %v", l)
	}
	if l := lines[2]; l["route"] != "/v1/files" || strings.Contains(access.String(), "file-abc123") {
		t.Errorf("files line %v: the route, never the path", l)
	}
	// The record gathered the attempts beside the access log line.
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.recs) == 0 || len(sink.recs[0].Attempts) != 2 {
		t.Errorf("records %+v", sink.recs)
	}
	for _, sec := range secrets {
		if strings.Contains(access.String(), sec) {
			t.Errorf("a secret is in the access log:\n%s", access.String())
		}
	}
}

// TestRoutesBounded: whatever the path, the route label is one of Routes.
func TestRoutesBounded(t *testing.T) {
	tr, err := keypool.New(keypool.WithUpstream("http://up.invalid/v1", keyA),
		keypool.WithBase(roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 404, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		})))
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Options{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	ts := newServer(t, s.Handler())
	for _, p := range []string{"/v1/chat/completionsX", "/v1/chat", "/v1/", "/v1/a/b/c", "/v1/audio/speech", "/v1/modelsx", "/x/v1/models", "/v1/models/gpt-4o"} {
		send(t, "GET", ts+p, "", nil)
	}
	routes := map[string]uint64{}
	s.Answers(func(client, route, class string, n uint64) {
		if client != server.ClientNone || !slices.Contains(server.Routes[:], route) {
			t.Errorf("client %q route %q", client, route)
		}
		routes[route] += n
	})
	if want := map[string]uint64{"/v1/other": 5, "/v1/audio": 1, "/v1/models": 1, "other": 1}; !maps.Equal(routes, want) {
		t.Errorf("routes %v, want %v", routes, want)
	}
}

// newServer serves h on loopback until the test ends, and returns its URL.
func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}
