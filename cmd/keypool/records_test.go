package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
)

func TestPointInTime(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{"", time.Time{}, false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"7d", now.AddDate(0, 0, -7), false},
		{"2026-11-01T00:00:00Z", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), false},
		{"-1h", time.Time{}, true},
		{"-3d", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	} {
		got, err := pointInTime(tc.in, now)
		if (err != nil) != tc.bad || !got.Equal(tc.want) {
			t.Errorf("%q: %v, %v", tc.in, got, err)
		}
	}
}

func TestRecordsCommand(t *testing.T) {
	noEnv(t)
	db := filepath.Join(t.TempDir(), "r.sqlite")
	st, err := records.Open(records.TypeSQLite, secret.New(db))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var recs []records.Record
	for i := range 5 {
		recs = append(recs, records.Record{Time: now.Add(-time.Duration(i) * time.Hour), Method: "POST", Path: "/v1/chat/completions",
			Model: "gpt-4o", Key: "kp_00000000000000a" + string(rune('0'+i%2)), Status: 200, InputTokens: 10, OutputTokens: 5})
	}
	if err := st.Insert(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	st.Close()

	runOut := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"records", "--dbaddr", db}, args...), &out, &errOut)
		return out.String(), errOut.String(), code
	}
	if out, _, code := runOut("--since", "150m"); code != 0 || strings.Count(out, "/v1/chat/completions") != 3 {
		t.Errorf("--since 150m: exit %d\n%s", code, out)
	}
	if out, _, code := runOut("--since", "", "--limit", "2"); code != 0 || strings.Count(out, "gpt-4o") != 2 {
		t.Errorf("--limit 2: exit %d\n%s", code, out)
	}
	if out, _, code := runOut("--since", "1d", "--by", "key"); code != 0 || !strings.Contains(out, "kp_00000000000000a0  3 ") || !strings.Contains(out, "kp_00000000000000a1  2 ") {
		t.Errorf("--by key: exit %d\n%s", code, out)
	}
	if out, _, code := runOut("--model", "o3"); code != 0 || !strings.Contains(out, "(no records match)") {
		t.Errorf("no match: exit %d\n%s", code, out)
	}
	for _, tc := range []struct {
		args, want string
		code       int
	}{
		{"--by colour", `invalid argument "colour" for "--by" flag: must be one of key, model, status, client, upstream, error, minute, hour, day`, 2},
		{"--limit 0", "--limit must be between 1 and 10000", 2},
		{"--since soon", `--since: "soon" is neither`, 2},
		{"--dbtype none", "must be one of sqlite, postgres", 2},
		{"--dbtype mysql", `invalid argument "mysql" for "--dbtype"`, 2},
		{"--dbtype postgres --timeout 1s", "records", 1}, // no DSN: a runtime failure
	} {
		if _, errOut, code := runOut(strings.Fields(tc.args)...); code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, %q, want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

// TestRecordsDBTypeOverrideHidesDSNPassword: with a config whose store
// is PostgreSQL, `keypool records --dbtype sqlite` takes the config's DSN as
// the SQLite file and prints it, password and all, in its error.
func TestRecordsDBTypeOverrideHidesDSNPassword(t *testing.T) {
	const password = "Pg-S3cret-review-passw0rd"
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	yaml := "dbtype: postgres\ndbaddr: \"postgres://keypool:" + password + "@127.0.0.1:1/keypool\"\n" +
		"upstreams:\n  - sk: \"sk-review-aaaaaaaaaaaaaaaa\"\n    endpoint: http://127.0.0.1:1/v1\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"records", "--config", file, "--dbtype", "sqlite"}, &out, &errOut)
	if code == 0 {
		t.Fatalf("records succeeded: %s", out.String())
	}
	if all := out.String() + errOut.String(); strings.Contains(all, password) {
		t.Fatalf("the DSN's password was printed:\n%s", all)
	}
}

// TestRecordsKeySources: records name keys by ID; the table and the JSON
// add where each key is written, joined from the config (here
// OPENAI_KEY) at the time they are shown, and a config that cannot be
// read leaves the sources out with a note, not the records.
func TestRecordsKeySources(t *testing.T) {
	noEnv(t)
	t.Chdir(t.TempDir()) // no config.yaml
	keyA, keyB := "sk-rec-SOURCEA-1111", "sk-rec-SOURCEB-2222"
	db := filepath.Join(t.TempDir(), "r.sqlite")
	st, err := records.Open(records.TypeSQLite, secret.New(db))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	gone := "kp_00000000000000ff" // a key no longer configured
	var recs []records.Record
	for i, k := range []string{id(keyA), id(keyB), id(keyB), gone} {
		recs = append(recs, records.Record{Time: now.Add(-time.Duration(i) * time.Minute), Method: "POST", Path: "/v1/chat/completions",
			Model: "gpt-4o", Key: k, Status: 200})
	}
	if err := st.Insert(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	st.Close()
	t.Setenv("OPENAI_KEY", keyB+","+keyA)
	hidden := []string{"SOURCEA", "SOURCEB"}
	runOut := func(args ...string) (string, string) {
		t.Helper()
		out, errOut, code := cli(t, hidden, append([]string{"records", "--dbaddr", db, "--since", ""}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		return out, errOut
	}

	out, _ := runOut()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], " KEY ") || !strings.Contains(lines[0], " SOURCE ") {
		t.Fatalf("table:\n%s", out)
	}
	wantRow := map[string]string{id(keyA): "OPENAI_KEY[2]", id(keyB): "OPENAI_KEY[1]", gone: "-"}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		for i := range f[:len(f)-1] {
			if w, ok := wantRow[f[i]]; ok && f[i+1] != w {
				t.Errorf("row %q: source %q; want %q", l, f[i+1], w)
			}
		}
	}

	out, _ = runOut("--by", "key")
	for key, w := range wantRow {
		if !regexp.MustCompile(`(?m)^` + key + ` +` + regexp.QuoteMeta(w) + ` +\d`).MatchString(out) {
			t.Errorf("--by key: no row %s %s:\n%s", key, w, out)
		}
	}

	out, _ = runOut("--json")
	var js []struct {
		Key       string `json:"key"`
		KeySource string `json:"key_source"`
		Model     string `json:"model"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || len(js) != 4 || js[0].Model != "gpt-4o" {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	for _, r := range js {
		if w := strings.Trim(wantRow[r.Key], "-"); r.KeySource != w {
			t.Errorf("--json: %s: key_source %q; want %q", r.Key, r.KeySource, w)
		}
	}

	out, _ = runOut("--json", "--by", "key")
	var groups []struct {
		Group    string `json:"group"`
		Source   string `json:"source"`
		Requests int    `json:"requests"`
	}
	if err := json.Unmarshal([]byte(out), &groups); err != nil || len(groups) != 3 {
		t.Fatalf("--json --by key: %v\n%s", err, out)
	}
	for _, g := range groups {
		if w := strings.Trim(wantRow[g.Group], "-"); g.Source != w || g.Requests == 0 {
			t.Errorf("--json --by key: %+v; want source %q", g, w)
		}
	}

	// No sources known: no SOURCE column. A config that cannot be read: a note.
	t.Setenv("OPENAI_KEY", "")
	if out, errOut := runOut(); strings.Contains(out, "SOURCE") || errOut != "" {
		t.Errorf("without sources:\n%s\n%s", out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(bad, []byte("upstreams:\n  - keys_file: missing.txt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut := runOut("--config", bad)
	if strings.Contains(out, "SOURCE") || strings.Count(out, "/v1/chat/completions") != 4 || !strings.Contains(errOut, "note: key sources not shown: ") {
		t.Errorf("with a broken config:\n%s\n%s", out, errOut)
	}
}

// TestRecordsReadsOnlyTheDatabase: records reads the config's dbtype and
// dbaddr and nothing else, so a token from a variable this shell lacks does
// not stop it; an unset variable in dbaddr does, at its line.
func TestRecordsReadsOnlyTheDatabase(t *testing.T) {
	noEnv(t)
	unsetEnv(t, "KP_TEST_UNSET_ADMIN", "KP_TEST_UNSET_DB")
	dir := t.TempDir()
	db := filepath.Join(dir, "r.sqlite")
	st, err := records.Open(records.TypeSQLite, secret.New(db))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Insert(context.Background(), []records.Record{{Time: time.Now(), Method: "POST",
		Path: "/v1/embeddings", Model: "text-embedding-3-small", Status: 200}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	write := func(name, yaml string) string {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	good := write("good.yaml", "admin_token: ${KP_TEST_UNSET_ADMIN}\ndbaddr: "+db+
		"\nupstreams:\n  - sk: sk-rec-0123456789abcdef\n    authorization: ${KP_TEST_UNSET_ADMIN}\n")
	out, errOut, code := cli(t, nil, "records", "--config", good)
	if code != 0 || !strings.Contains(out, "text-embedding-3-small") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	bad := write("bad.yaml", "admin_token: ${KP_TEST_UNSET_ADMIN}\ndbaddr: ${KP_TEST_UNSET_DB}\n")
	_, errOut, code = cli(t, nil, "records", "--config", bad)
	if want := bad + ":2: dbaddr"; code != 1 || !strings.Contains(errOut, want) || strings.Contains(errOut, "admin_token") {
		t.Errorf("exit %d, stderr %q, want exit 1 and %q only", code, errOut, want)
	}
}
