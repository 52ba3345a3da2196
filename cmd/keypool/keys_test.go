package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

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
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "IN FLIGHT") ||
		!strings.Contains(lines[0], "RPM") || !strings.Contains(lines[0], "MODELS") || !strings.Contains(lines[0], "LAST USED") {
		t.Fatalf("table:\n%s", out)
	}
	for i, k := range mixedPool {
		if !strings.HasPrefix(lines[i+1], id(k.Secret)) {
			t.Errorf("row %d is not key %s:\n%s", i, id(k.Secret), out)
		}
	}
	if f := strings.Fields(lines[1]); !strings.Contains(lines[1], "disabled: rotated") || f[4] != "disabled" || f[5] != "just" {
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
		{"no server", []string{"--server", "http://127.0.0.1:1", "--admin-token", keysAdminToken},
			"keys: cannot reach keypool serve at http://127.0.0.1:1: is it running? (dial tcp 127.0.0.1:1: "},
		{"credentials in the URL", []string{"--server", "http://user:hunter2secret@127.0.0.1:1"}, "http://user:[redacted]@127.0.0.1:1"},
		{"unknown key", []string{"--server", base, "--admin-token", keysAdminToken, "kp_0000000000000000"},
			"404 Not Found: No key with that ID in the pool"},
		{"unknown key: disable", []string{"disable", "kp_0000000000000000", "--server", base, "--admin-token", keysAdminToken},
			"404 Not Found: No key with that ID in the pool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := cli(t, append(secrets, "hunter2secret"), append([]string{"keys"}, tt.args...)...)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q, want 1 and %q", code, errOut, tt.want)
			}
		})
	}
	usage := []struct {
		name string
		args []string
		want string
	}{
		{"bad URL", []string{"--server", "not a url"}, "--server must be"},
		{"a key as the ID", []string{"disable", mixedPool[1].Secret}, "argument 1 is not a key ID"},
		{"no ID", []string{"enable"}, "keypool keys enable takes a key ID (kp_…), got 0 arguments"},
		{"two IDs", []string{"recheck", id(mixedPool[0].Secret), id(mixedPool[1].Secret)}, "takes at most one key ID"},
		{"misspelt command", []string{"disabel", id(mixedPool[0].Secret)}, "did you mean disable?"},
		{"unknown flag", []string{"--reason", "x"}, "unknown flag: --reason"},
	}
	for _, tt := range usage {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := cli(t, secrets, append([]string{"keys"}, tt.args...)...)
			if code != 2 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q, want 2 and %q", code, errOut, tt.want)
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

// TestKeysCommands drives disable, enable, recheck and the view of one key
// against a running admin API with a running checker.
func TestKeysCommands(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, mixedPool...)
	tr, err := keypool.New(keypool.WithUpstream(url, strings.Join(secretsOf(mixedPool), ",")))
	if err != nil {
		t.Fatal(err)
	}
	checker, err := keypool.NewChecker(tr, keypool.WithCheckRate(1000), keypool.WithRecheckEvery(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- checker.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; tr.CloseIdleConnections() })
	ts := httptest.NewServer(server.NewAdmin(server.AdminOptions{Transport: tr, Checker: checker, Token: secret.New(keysAdminToken)}))
	t.Cleanup(ts.Close)
	t.Setenv("KEYPOOL_SERVER", ts.URL)
	t.Setenv("KEYPOOL_ADMIN_TOKEN", keysAdminToken)
	secrets := append(secretsOf(mixedPool), keysAdminToken)
	paid, revoked := id(mixedPool[0].Secret), id(mixedPool[2].Secret)
	keyJSON := func(id string) keyRow {
		t.Helper()
		out, errOut, code := cli(t, secrets, "keys", id, "--json")
		var k keyRow
		if err := json.Unmarshal([]byte(out), &k); code != 0 || err != nil {
			t.Fatalf("keys %s --json: exit %d, %v\n%s%s", id, code, err, out, errOut)
		}
		return k
	}
	// The first pass checks every key; its result is what the views show.
	first := waitKey(t, keyJSON, paid, func(k keyRow) bool { return !k.LastChecked.IsZero() })
	waitKey(t, keyJSON, revoked, func(k keyRow) bool { return k.State == "revoked" })

	out, errOut, code := cli(t, secrets, "keys", paid)
	if code != 0 {
		t.Fatalf("keys ID: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"ID:            " + paid, "State:         ready, since ", "RPM, TPM:      ", "Models:        ", "gpt-4o-mini", "Last checked:  "} {
		if !strings.Contains(out, want) {
			t.Errorf("keys ID lacks %q:\n%s", want, out)
		}
	}

	out, errOut, code = cli(t, secrets, "keys", "disable", paid, "--reason", "leaked in a log")
	if code != 0 || !strings.Contains(out, paid) || !strings.Contains(out, "disabled: leaked in a log") {
		t.Fatalf("disable: exit %d\n%s%s", code, out, errOut)
	}
	if k := keyJSON(paid); k.State != "disabled" {
		t.Errorf("after disable: %+v", k)
	}
	out, errOut, code = cli(t, secrets, "keys", "enable", paid)
	if f := strings.Fields(lastLine(out)); code != 0 || len(f) < 5 || f[0] != paid || f[4] != "unchecked" {
		t.Fatalf("enable: exit %d\n%s%s", code, out, errOut)
	}

	out, errOut, code = cli(t, secrets, "keys", "recheck", paid)
	if code != 0 || out != "recheck of "+paid+" scheduled\n" {
		t.Fatalf("recheck ID: exit %d\n%s%s", code, out, errOut)
	}
	k := waitKey(t, keyJSON, paid, func(k keyRow) bool { return k.LastChecked.After(first.LastChecked) })
	if k.State != "ready" {
		t.Errorf("after its recheck: %+v", k)
	}
	if out, errOut, code := cli(t, secrets, "keys", "recheck"); code != 0 || out != "recheck of every key scheduled\n" {
		t.Errorf("recheck: exit %d\n%s%s", code, out, errOut)
	}

	// Shells complete the server's key IDs, with state and upstream.
	out, errOut, code = cli(t, secrets, cobra.ShellCompRequestCmd, "keys", "disable", "")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], paid+"\tready, ") || !strings.HasPrefix(lines[2], revoked+"\trevoked, ") {
		t.Errorf("completion of key IDs: exit %d\n%s%s", code, out, errOut)
	}
}

// waitKey polls the key's view until ok holds, for at most 10 s.
func waitKey(t *testing.T, view func(string) keyRow, id string, ok func(keyRow) bool) keyRow {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		k := view(id)
		if ok(k) {
			return k
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s never got there: %+v", id, k)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "-"},
		{now.Add(-300 * time.Millisecond), "just now"},
		{now.Add(700 * time.Millisecond), "just now"}, // now is the server's Date, to the second
		{now.Add(-45 * time.Second), "45s ago"},
		{now.Add(-3*time.Minute - 50*time.Second), "3m ago"},
		{now.Add(-5 * time.Hour), "5h ago"},
		{now.Add(-50 * time.Hour), "2d ago"},
		{now.Add(40 * time.Second), "in 40s"},
	} {
		if got := ago(tc.t, now); got != tc.want {
			t.Errorf("ago(now%+v) = %q, want %q", tc.t.Sub(now), got, tc.want)
		}
	}
}
