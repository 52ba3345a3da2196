package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
