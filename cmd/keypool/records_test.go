package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
		{"--by colour", `invalid argument "colour" for "--by" flag: must be one of key, model, status, client, upstream, error, hour, day`, 2},
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
