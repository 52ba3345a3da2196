package server_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// TestAdminKey: GET /admin/keys/{id} answers one key's state, a 404 that
// does not repeat the ID for a key the pool does not hold, and a 401
// without the token.
func TestAdminKey(t *testing.T) {
	f := newAdmin(t, adminToken)
	idB := string(keypool.NewKey(keyB).ID())
	code, body := f.do(t, "GET", "/admin/keys/"+idB, remote, adminToken, "")
	var info keypool.KeyInfo
	if err := json.Unmarshal([]byte(body), &info); code != 200 || err != nil || string(info.ID) != idB || info.State != keypool.StateUnchecked {
		t.Errorf("known key: %d %s (%v)", code, body, err)
	}
	tests := []struct {
		name, id, token string
		want            int
		contains        string
	}{
		{"unknown key", "kp_0000000000000000", adminToken, 404, "key_not_found"},
		{"a secret as the ID", keyA, adminToken, 404, "key_not_found"},
		{"no token", idB, "", 401, "invalid_api_key"},
		{"wrong token", idB, wrongToken, 401, "invalid_api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := f.do(t, "GET", "/admin/keys/"+tt.id, remote, tt.token, "")
			if code != tt.want || !strings.Contains(body, tt.contains) || strings.Contains(body, tt.id) {
				t.Errorf("%d %s, want %d with %q and without the ID", code, body, tt.want, tt.contains)
			}
		})
	}
}

// TestAdminRecheckKey: POST /admin/keys/{id}/recheck hands one key to a
// real checker (202), refuses an unknown one (404), and answers 503 when
// the checker cannot check one key.
func TestAdminRecheckKey(t *testing.T) {
	f := newAdmin(t, adminToken)
	checker, err := keypool.NewChecker(f.tr)
	if err != nil {
		t.Fatal(err)
	}
	h := server.NewAdmin(server.AdminOptions{Transport: f.tr, Checker: checker, Token: secret.New(adminToken),
		Logger: slog.New(slog.NewTextHandler(f.logs, nil))})
	f.handler = h
	idA := string(keypool.NewKey(keyA).ID())
	if code, body := f.do(t, "POST", "/admin/keys/"+idA+"/recheck", remote, adminToken, ""); code != 202 || !strings.Contains(body, idA) {
		t.Errorf("known key: %d %s", code, body)
	}
	if !strings.Contains(f.logs.String(), "key recheck asked") || !strings.Contains(f.logs.String(), idA) {
		t.Errorf("the recheck was not logged by key ID:\n%s", f.logs.String())
	}
	if code, body := f.do(t, "POST", "/admin/keys/kp_0000000000000000/recheck", remote, adminToken, ""); code != 404 || !strings.Contains(body, "key_not_found") {
		t.Errorf("unknown key: %d %s", code, body)
	}
	f.handler = server.NewAdmin(server.AdminOptions{Transport: f.tr, Checker: f.checker, Token: secret.New(adminToken)})
	if code, body := f.do(t, "POST", "/admin/keys/"+idA+"/recheck", remote, adminToken, ""); code != 503 || !strings.Contains(body, "no_checker") {
		t.Errorf("a checker of passes only: %d %s", code, body)
	}
}
