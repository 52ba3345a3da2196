package server_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// TestPerUpstreamAccess keeps each client token on the upstreams that allow
// it: global tokens on upstreams without tokens of their own, an upstream's
// own tokens there only, anyone on noauth upstreams.
func TestPerUpstreamAccess(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-main"}, fakeopenai.Key{Secret: "sk-team"}, fakeopenai.Key{Secret: "sk-public"})
	tr, err := keypool.New(keypool.WithUpstreams(
		keypool.Upstream{Name: "main", BaseURL: base, Keys: []keypool.Key{keypool.NewKey("sk-main")}},
		keypool.Upstream{Name: "team", BaseURL: base, Keys: []keypool.Key{keypool.NewKey("sk-team")}},
		keypool.Upstream{Name: "public", BaseURL: base, Keys: []keypool.Key{keypool.NewKey("sk-public")}},
	))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{
		Transport: tr,
		Tokens:    []secret.String{secret.New("global-token")},
		Upstreams: []server.UpstreamAccess{{Name: "main"}, {Name: "team", Tokens: []secret.String{secret.New("team-token")}}, {Name: "public", NoAuth: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(srv.Handler())
	defer proxy.Close()
	tests := []struct {
		token  string
		status int
		served string
	}{
		{"global-token", 200, "sk-main"}, // every upstream, in priority order
		{"team-token", 200, "sk-team"},   // its upstream (and noauth ones), not main
		{"", 200, "sk-public"},           // noauth only
		{"wrong-token", 200, "sk-public"},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			fake.Reset()
			req, _ := http.NewRequest("POST", proxy.URL+"/v1/chat/completions",
				strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			recs := fake.Records()
			if resp.StatusCode != tt.status || len(recs) != 1 || recs[0].Key != tt.served {
				t.Fatalf("status %d, records %+v", resp.StatusCode, recs)
			}
		})
	}
	// With main's key disabled a global token goes to the noauth upstream,
	// never to team, which has tokens of its own.
	tr.Pool().Disable(keypool.NewKey("sk-main").ID(), "test")
	fake.Reset()
	req0, _ := http.NewRequest("POST", proxy.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","messages":[]}`))
	req0.Header.Set("Authorization", "Bearer global-token")
	resp0, err := http.DefaultClient.Do(req0)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp0.Body)
	resp0.Body.Close()
	if recs := fake.Records(); resp0.StatusCode != 200 || len(recs) != 1 || recs[0].Key != "sk-public" {
		t.Fatalf("global token with main disabled: status %d, records %+v", resp0.StatusCode, recs)
	}
	// With the noauth upstream's keys all revoked, a team token may still
	// not fall back to main.
	tr.Pool().Disable(keypool.NewKey("sk-team").ID(), "test")
	tr.Pool().Disable(keypool.NewKey("sk-public").ID(), "test")
	fake.Reset()
	req, _ := http.NewRequest("POST", proxy.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","messages":[]}`))
	req.Header.Set("Authorization", "Bearer team-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || len(fake.Records()) != 0 {
		t.Fatalf("team token with its upstreams down: status %d, records %+v", resp.StatusCode, fake.Records())
	}
}
