package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/secret"
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

// TestServeRecordsNeverLogsDSNPassword: `keypool serve --dbtype
// sqlite` with a config whose dbaddr is a PostgreSQL DSN opens the DSN as a
// SQLite file, and logs the store (its path, the whole DSN) with the
// password.
func TestServeRecordsNeverLogsDSNPassword(t *testing.T) {
	const password = "Pg-S3cret-review-passw0rd"
	t.Chdir(t.TempDir())
	cfg := &config.Config{DBType: "sqlite", DBAddr: secret.New("postgres://keypool:" + password + "@127.0.0.1:1/keypool")}
	var logs bytes.Buffer
	r, err := startRecords(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil {
		r.close(slog.New(slog.NewTextHandler(&logs, nil)), time.Second, nil)
	}
	if all := logs.String() + fmt.Sprint(err); strings.Contains(all, password) {
		t.Fatalf("the DSN's password was logged:\n%s", all)
	}
}
