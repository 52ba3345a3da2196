package main

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// cli runs keypool in-process with args and returns what it printed and its
// exit status. It fails the test if any of secrets shows in either stream.
func cli(t *testing.T, secrets []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut)
	for _, s := range secrets {
		if strings.Contains(out.String(), s) || strings.Contains(errOut.String(), s) {
			t.Errorf("secret %q printed:\nstdout:\n%s\nstderr:\n%s", s, out.String(), errOut.String())
		}
	}
	return out.String(), errOut.String(), code
}

// unsetEnv unsets the variables names for the test (t.Setenv restores
// them when it ends).
func unsetEnv(t *testing.T, names ...string) {
	for _, name := range names {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
}

func id(secret string) string { return string(keypool.NewKey(secret).ID()) }

// noEnv clears the environment check reads, so that the host's own
// OPENAI_KEY cannot leak into a test.
func noEnv(t *testing.T) {
	t.Setenv("OPENAI_KEY", "")
	t.Setenv("OPENAI_BASE_URL", "")
}

// mixedPool is a paid key, a trial key and a revoked one.
var mixedPool = []fakeopenai.Key{
	{Secret: "sk-paid-0123456789abcdef"},
	{Secret: "sk-trial-0123456789abcdef", Trial: true},
	{Secret: "sk-revoked-0123456789abcdef", Behavior: fakeopenai.Revoked},
}

func secretsOf(keys []fakeopenai.Key) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.Secret)
	}
	return out
}

// tableRows maps each table row's first column (the key ID) to its columns.
func tableRows(t *testing.T, table string) map[string][]string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) == 0 || !slices.Equal(strings.Fields(lines[0]), []string{"ID", "SOURCE", "UPSTREAM", "ORG", "SCOPE", "STATE", "TRIAL", "RPM", "TPM", "MODELS", "REASON"}) {
		t.Fatalf("no table header:\n%s", table)
	}
	rows := map[string][]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		rows[f[0]] = f
	}
	return rows
}

func TestCheckTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flagURL bool // --base-url; otherwise OPENAI_BASE_URL
	}{
		{"base-url flag", true},
		{"OPENAI_BASE_URL", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noEnv(t)
			fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, mixedPool...)
			secrets := secretsOf(mixedPool)
			t.Setenv("OPENAI_KEY", strings.Join(secrets, ", "))
			args := []string{"check", "--rate", "1000"}
			if tc.flagURL {
				args = append(args, "--base-url", base)
			} else {
				t.Setenv("OPENAI_BASE_URL", base)
			}
			out, errOut, code := cli(t, secrets, args...)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, errOut)
			}
			rows := tableRows(t, out)
			if len(rows) != 3 {
				t.Fatalf("%d rows, want 3:\n%s", len(rows), out)
			}
			paid, trial, revoked := rows[id(secrets[0])], rows[id(secrets[1])], rows[id(secrets[2])]
			// ID SOURCE UPSTREAM ORG SCOPE STATE TRIAL RPM TPM MODELS REASON
			if paid == nil || paid[1] != "OPENAI_KEY[1]" || paid[4] == "-" || paid[5] != "ready" || paid[6] != "no" || paid[7] != "3000" || paid[8] != "150000" || paid[9] != "36" {
				t.Errorf("paid row %q", paid)
			}
			if trial == nil || trial[1] != "OPENAI_KEY[2]" || trial[5] != "ready" || trial[6] != "yes" || trial[7] != "200" {
				t.Errorf("trial row %q", trial)
			}
			if revoked == nil || revoked[1] != "OPENAI_KEY[3]" || revoked[5] != "revoked" {
				t.Errorf("revoked row %q", revoked)
			}
			// Progress: plain lines, since stderr is not a terminal.
			for _, s := range secrets {
				if !strings.Contains(errOut, "checked "+id(s)+" ") {
					t.Errorf("no progress line for %s:\n%s", id(s), errOut)
				}
			}
			if !strings.Contains(errOut, "(3/3)") || !strings.Contains(errOut, "checked 3 keys: ") || strings.Contains(errOut, "\r") {
				t.Errorf("progress:\n%s", errOut)
			}
			for _, s := range secrets {
				if n := fake.Completions(s); n != 0 {
					t.Errorf("checking spent %d completions of %s", n, id(s))
				}
			}
		})
	}
}

func TestCheckJSON(t *testing.T) {
	noEnv(t)
	multi := fakeopenai.Key{Secret: "sk-multi-0123456789abcdef", Orgs: []fakeopenai.Org{
		{ID: "org-home", Title: "Home", Default: true},
		{ID: "org-work", Title: "Work", RPM: 5},
	}}
	keys := append(slices.Clone(mixedPool), multi)
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	secrets := secretsOf(keys)
	t.Setenv("OPENAI_KEY", strings.Join(secrets, ","))
	out, errOut, code := cli(t, secrets, "check", "--json", "--base-url", base, "--rate", "1000", "--concurrency", "2")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	var rows []checkRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	var got []string
	for _, r := range rows {
		got = append(got, string(r.ID))
	}
	work := string(keypool.NewKey(multi.Secret).WithOrganization("org-work").ID())
	want := []string{id(secrets[0]), id(secrets[1]), id(secrets[2]), id(multi.Secret), work}
	if !slices.Equal(got, want) {
		t.Fatalf("rows %v, want %v (config order, the clone after its parent)", got, want)
	}
	if r := rows[0]; r.State != "ready" || r.Trial || r.RPM != 3000 || r.TPM != 150000 || r.ModelCount != len(r.Models) || !slices.Contains(r.Models, "gpt-4o") {
		t.Errorf("paid %+v", r)
	}
	if r := rows[1]; r.State != "ready" || !r.Trial || r.RPM != 200 {
		t.Errorf("trial %+v", r)
	}
	if r := rows[2]; r.State != "revoked" || r.Reason == "" {
		t.Errorf("revoked %+v", r)
	}
	if r := rows[3]; r.Organization != "org-home" || r.Clone || r.State != "ready" {
		t.Errorf("multi-org parent %+v", r)
	}
	if r := rows[4]; r.Organization != "org-work" || !r.Clone || r.State != "ready" || r.RPM != 5 {
		t.Errorf("clone %+v", r)
	}
	// Each key's place in OPENAI_KEY, from 1; the clone's is its key's.
	for i, want := range []string{"OPENAI_KEY[1]", "OPENAI_KEY[2]", "OPENAI_KEY[3]", "OPENAI_KEY[4]", "OPENAI_KEY[4]"} {
		if rows[i].Source != want {
			t.Errorf("row %d: source %q; want %q", i, rows[i].Source, want)
		}
	}
	// The total grew when the clone was found.
	if !strings.Contains(errOut, "(5/5)") {
		t.Errorf("progress never reached 5/5:\n%s", errOut)
	}
}

func TestCheckKeysFile(t *testing.T) {
	noEnv(t)
	keys := mixedPool[:2]
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	secrets := secretsOf(keys)
	file := filepath.Join(t.TempDir(), "keys.txt")
	text := "# my keys\n" + secrets[0] + "\n\n" + secrets[1] + "  # the trial one\n"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// A flag wins over OPENAI_KEY, which would fail here.
	t.Setenv("OPENAI_KEY", "sk-unknown-0123456789abcdef")
	out, errOut, code := cli(t, append(secrets, "sk-unknown-0123456789abcdef"), "check", "--keys-file", file, "--base-url", base, "--rate", "1000")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	rows := tableRows(t, out)
	if len(rows) != 2 || rows[id(secrets[0])] == nil || rows[id(secrets[1])][6] != "yes" {
		t.Fatalf("table:\n%s", out)
	}
	if rows[id(secrets[0])][1] != file+":2" || rows[id(secrets[1])][1] != file+":4" {
		t.Errorf("sources %q, %q; want lines 2 and 4 of %s", rows[id(secrets[0])][1], rows[id(secrets[1])][1], file)
	}
}

func TestCheckConfig(t *testing.T) {
	noEnv(t)
	keys := []fakeopenai.Key{
		{Secret: "sk-main-0123456789abcdef"},
		{Secret: "sk-backup-0123456789abcdef", Behavior: fakeopenai.OverQuota},
	}
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	t.Setenv("KP_TEST_BACKUP_KEY", keys[1].Secret)
	// Tokens from variables this shell lacks are serve's business: check
	// reads only the upstreams and the checker.
	unsetEnv(t, "KP_TEST_UNSET_ADMIN", "KP_TEST_UNSET_CLIENT")
	cfg := `authorization: client-token-0123456789
admin_token: ${KP_TEST_UNSET_ADMIN}
checker:
  rate: 1000
upstreams:
  - name: main
    sk: ` + keys[0].Secret + `
    endpoint: ` + base + `
  - name: backup
    sk: ${KP_TEST_BACKUP_KEY}
    endpoint: ` + base + `
    type: openai
    authorization: ${KP_TEST_UNSET_CLIENT}
`
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cli(t, append(secretsOf(keys), "client-token-0123456789"), "check", "--config", file, "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	var rows []checkRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(rows) != 2 || rows[0].Upstream != "main" || rows[0].State != "ready" ||
		rows[1].Upstream != "backup" || rows[1].State != "over_quota" {
		t.Errorf("rows %+v", rows)
	}
	if len(rows) == 2 && (rows[0].Source != file+":7" || rows[1].Source != file+":10") {
		t.Errorf("sources %q, %q; want lines 7 and 10 of %s", rows[0].Source, rows[1].Source, file)
	}
}

func TestCheckFailures(t *testing.T) {
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badConfig, []byte("upstreams:\n  - sk: sk-typo-0123456789abcdef\n    endpiont: https://api.openai.com/v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(emptyFile, []byte("# none yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	closed := httptest.NewServer(nil)
	closed.Close() // nothing listens there any more

	revoked := []fakeopenai.Key{
		{Secret: "sk-gone1-0123456789abcdef", Behavior: fakeopenai.Revoked},
		{Secret: "sk-gone2-0123456789abcdef", Behavior: fakeopenai.Terminated},
	}
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, revoked...)
	secrets := append(secretsOf(revoked), "sk-typo-0123456789abcdef", "sk-net-0123456789abcdef")

	for _, tc := range []struct {
		name      string
		openaiKey string
		args      []string
		stderr    []string // each must show on stderr
		stdout    string
		usage     bool // a mistake in the command line: exit 2, not 1
	}{
		{name: "every key revoked", openaiKey: revoked[0].Secret + "," + revoked[1].Secret,
			args:   []string{"--base-url", base},
			stderr: []string{"keypool: no usable key: 2 keys: 2 revoked\n"}, stdout: id(revoked[1].Secret)},
		{name: "upstream unreachable", openaiKey: "sk-net-0123456789abcdef",
			args:   []string{"--base-url", closed.URL + "/v1"},
			stderr: []string{"keypool: no usable key: 1 key: 1 unreachable"}, stdout: "not checked: "},
		{name: "no key source", stderr: []string{"keypool: no keys to check: set OPENAI_KEY, or pass --keys-file FILE or --config FILE"}},
		{name: "config error", args: []string{"--config", badConfig},
			stderr: []string{badConfig + `:3: unknown field "endpiont" in upstream 1 (did you mean "endpoint"?)`}},
		{name: "missing config", args: []string{"--config", filepath.Join(dir, "none.yaml")}, stderr: []string{"keypool: config: open "}},
		{name: "empty keys file", args: []string{"--keys-file", emptyFile}, stderr: []string{"empty.txt holds no key"}},
		{name: "config and keys file", args: []string{"--config", badConfig, "--keys-file", emptyFile}, stderr: []string{"[config keys-file]"}, usage: true},
		{name: "bad rate", openaiKey: "sk-x", args: []string{"--rate", "0"}, stderr: []string{"--rate must be positive"}, usage: true},
		{name: "bad timeout", openaiKey: "sk-x", args: []string{"--timeout", "0s"}, stderr: []string{"--timeout must be positive"}, usage: true},
		{name: "a key as an argument", args: []string{"sk-net-0123456789abcdef"}, stderr: []string{"check takes no arguments"}, usage: true},
		{name: "a key as a flag value", args: []string{"--concurrency", "sk-net-0123456789abcdef"}, stderr: []string{"invalid argument"}, usage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noEnv(t)
			t.Setenv("OPENAI_KEY", tc.openaiKey)
			out, errOut, code := cli(t, secrets, append([]string{"check", "--rate", "1000"}, tc.args...)...)
			if want := map[bool]int{false: 1, true: 2}[tc.usage]; code != want {
				t.Errorf("exit %d, want %d", code, want)
			}
			for _, want := range tc.stderr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr:\n%s\nwant it to contain %q", errOut, want)
				}
			}
			if !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout:\n%s\nwant it to contain %q", out, tc.stdout)
			}
		})
	}
}

func TestCheckHelp(t *testing.T) {
	out, _, code := cli(t, nil, "check", "--help")
	if code != 0 || !strings.Contains(out, "--keys-file") || !strings.Contains(out, "No completion is ever spent") {
		t.Errorf("exit %d, help:\n%s", code, out)
	}
}
