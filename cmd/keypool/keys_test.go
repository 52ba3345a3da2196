package main

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

const keysAdminToken = "tok-keys-admin-5555555555"

// adminServer serves the admin API of a pool of mixedPool's keys, guarded by
// keysAdminToken, with the first key disabled.
func adminServer(t *testing.T) string {
	t.Helper()
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, mixedPool...)
	keys, err := config.ParseKeyList(strings.Join(secretsOf(mixedPool), ","), "OPENAI_KEY")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: url, Keys: keys}))
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Pool().Disable(keypool.NewKey(mixedPool[0].Secret).ID(), "rotated"); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(server.NewAdmin(server.AdminOptions{Transport: tr, Token: secret.New(keysAdminToken)}))
	t.Cleanup(ts.Close)
	return ts.URL
}

func TestKeysTable(t *testing.T) {
	base := adminServer(t)
	secrets := append(secretsOf(mixedPool), keysAdminToken)
	t.Setenv("KEYPOOL_SERVER", "")
	t.Setenv("KEYPOOL_ADMIN_TOKEN", "")
	out, errOut, code := cli(t, secrets, "keys", "--server", base, "--admin-token", keysAdminToken)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "IN FLIGHT") {
		t.Fatalf("table:\n%s", out)
	}
	for i, k := range mixedPool {
		if !strings.HasPrefix(lines[i+1], id(k.Secret)) {
			t.Errorf("row %d is not key %s:\n%s", i, id(k.Secret), out)
		}
	}
	if f := strings.Fields(lines[1]); !strings.Contains(lines[1], "disabled: rotated") || f[5] != "disabled" {
		t.Errorf("the disabled key's row: %q", lines[1])
	}
	for i := range mixedPool {
		if f := strings.Fields(lines[i+1]); f[1] != fmt.Sprintf("OPENAI_KEY[%d]", i+1) {
			t.Errorf("row %d: source %q; want OPENAI_KEY[%d]", i, f[1], i+1)
		}
	}

	// The server and token from the environment.
	t.Setenv("KEYPOOL_SERVER", base)
	t.Setenv("KEYPOOL_ADMIN_TOKEN", keysAdminToken)
	if out2, errOut, code := cli(t, secrets, "keys"); code != 0 || out2 != out {
		t.Fatalf("from the environment: exit %d: %s\n%s", code, errOut, out2)
	}
}

func TestKeysJSON(t *testing.T) {
	base := adminServer(t)
	secrets := append(secretsOf(mixedPool), keysAdminToken)
	t.Setenv("KEYPOOL_ADMIN_TOKEN", keysAdminToken)
	out, errOut, code := cli(t, secrets, "keys", "--server", base+"/", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var keys []struct {
		ID     string `json:"id"`
		Source string `json:"source"`
		State  string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(keys) != 3 || keys[0].ID != id(mixedPool[0].Secret) || keys[0].State != "disabled" || keys[2].Source != "OPENAI_KEY[3]" {
		t.Errorf("keys: %+v", keys)
	}
}

func TestKeysFailures(t *testing.T) {
	base := adminServer(t)
	secrets := append(secretsOf(mixedPool), keysAdminToken, "tok-wrong-666666666666")
	t.Setenv("KEYPOOL_SERVER", "")
	t.Setenv("KEYPOOL_ADMIN_TOKEN", "")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no token", []string{"--server", base}, "401"},
		{"wrong token", []string{"--server", base, "--admin-token", "tok-wrong-666666666666"}, "401"},
		{"bad URL", []string{"--server", "not a url", "--admin-token", keysAdminToken}, "--server must be"},
		{"no server", []string{"--server", "http://127.0.0.1:1", "--admin-token", keysAdminToken}, "keys: http://127.0.0.1:1"},
		{"credentials in the URL", []string{"--server", "http://user:hunter2secret@127.0.0.1:1"}, "http://user:[redacted]@127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := cli(t, append(secrets, "hunter2secret"), append([]string{"keys"}, tt.args...)...)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q, want %q", code, errOut, tt.want)
			}
		})
	}
}

func TestKeysHelpHidesToken(t *testing.T) {
	t.Setenv("KEYPOOL_ADMIN_TOKEN", keysAdminToken)
	out, _, code := cli(t, []string{keysAdminToken}, "keys", "--help")
	if code != 0 || !strings.Contains(out, "--admin-token") {
		t.Errorf("help: exit %d\n%s", code, out)
	}
}
