package server_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// The status page is guarded as the admin API is: its data needs the admin
// token, or without one a loopback client; its page and files, which hold
// no data, are open when there is a token (the page asks for it).
func TestStatusIsGuardedAsTheAdminAPI(t *testing.T) {
	tr, err := keypool.New(keypool.WithUpstream("https://api.openai.com/v1", keyA))
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served = append(served, r.URL.Path)
	})
	for _, tt := range []struct {
		token, path, remote, auth string
		want                      int
	}{
		{adminToken, "/status/", "192.0.2.7:1000", "", 200},
		{adminToken, "/status", "192.0.2.7:1000", "", 200},
		{adminToken, "/status/app.js", "192.0.2.7:1000", "", 200},
		{adminToken, "/status/data", "192.0.2.7:1000", "", 401},
		{adminToken, "/status/data", "127.0.0.1:1000", "", 401},
		{adminToken, "/status/data", "192.0.2.7:1000", "Bearer " + wrongToken, 401},
		{adminToken, "/status/data", "192.0.2.7:1000", "Bearer " + adminToken, 200},
		{adminToken, "/status/events", "192.0.2.7:1000", "", 401},
		{adminToken, "/status/events", "192.0.2.7:1000", "Bearer " + adminToken, 200},
		{"", "/status/", "192.0.2.7:1000", "", 403},
		{"", "/status/app.js", "192.0.2.7:1000", "", 403},
		{"", "/status/data", "192.0.2.7:1000", "", 403},
		{"", "/status/events", "[::1]:1000", "", 200},
		{"", "/status/", "127.0.0.1:1000", "", 200},
		{"", "/status/data", "127.0.0.1:1000", "", 200},
	} {
		served = nil
		h := server.NewAdmin(server.AdminOptions{Transport: tr, Token: secret.New(tt.token), Status: page})
		req := httptest.NewRequest("GET", tt.path, nil)
		req.RemoteAddr = tt.remote
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tt.want || (tt.want == 200) != (len(served) == 1) {
			t.Errorf("token %t, GET %s from %s with a token %t: %d, page served %v; want %d",
				tt.token != "", tt.path, tt.remote, tt.auth != "", w.Code, served, tt.want)
		}
	}
}
