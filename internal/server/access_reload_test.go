package server_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// TestSetAccess: new client tokens and limits take effect for the next
// request; rules that do not fit the transport are refused and change
// nothing.
func TestSetAccess(t *testing.T) {
	tr, err := keypool.New(keypool.WithBase(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
	})), keypool.WithUpstreams(keypool.Upstream{Name: "main", BaseURL: "https://api.example/v1", Keys: []keypool.Key{keypool.NewKey(keyA)}}))
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New(clientToken)}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(token, body string) int {
		req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	const chat = `{"model":"gpt-4o","messages":[]}`
	if code := send(clientToken, chat); code != 200 {
		t.Fatalf("before: %d", code)
	}
	if err := s.SetAccess(server.Options{Tokens: []secret.String{secret.New(upToken)}, MaxBody: 64}); err != nil {
		t.Fatal(err)
	}
	if code := send(clientToken, chat); code != 401 {
		t.Fatalf("a token the reload removed: %d", code)
	}
	if code := send(upToken, chat); code != 200 {
		t.Fatalf("a token the reload added: %d", code)
	}
	if code := send(upToken, `{"model":"gpt-4o","messages":[],"pad":"`+strings.Repeat("x", 100)+`"}`); code != 413 {
		t.Fatalf("a body past the new limit: %d", code)
	}
	two := []server.UpstreamAccess{{Name: "main"}, {Name: "gone"}}
	if err := s.SetAccess(server.Options{Tokens: []secret.String{secret.New(wrongToken)}, Upstreams: two}); err == nil {
		t.Fatal("rules for two upstreams over one were taken")
	}
	if code := send(upToken, chat); code != 200 {
		t.Fatalf("after refused rules: %d", code)
	}
	// The answers of the token the reload added count under its ID; those
	// of the removed one keep theirs.
	counts := map[string]uint64{}
	s.Answers(func(client, route, class string, n uint64) {
		if route == "/v1/chat/completions" {
			counts[client+" "+class] += n
		}
	})
	old, added := records.ClientID(clientToken), records.ClientID(upToken)
	if counts[old+" 2xx"] != 1 || counts[added+" 2xx"] != 2 || counts[added+" 4xx"] != 1 || counts[server.ClientInvalid+" 4xx"] != 1 {
		t.Fatalf("answers by client %v", counts)
	}
}
