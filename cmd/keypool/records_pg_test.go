package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
)

// pgSchemaDSN returns a DSN of KEYPOOL_TEST_POSTGRES's database that works in
// a fresh schema of its own, dropped when the test ends; it skips the test
// without KEYPOOL_TEST_POSTGRES (CI sets it).
func pgSchemaDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("KEYPOOL_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("PostgreSQL test SKIPPED: set KEYPOOL_TEST_POSTGRES=postgres://... (CI sets it)")
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	schema := fmt.Sprintf("kp_serve_%d", time.Now().UnixNano())
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("KEYPOOL_TEST_POSTGRES is set but PostgreSQL does not answer: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", dsn)
		if err == nil {
			db.Exec("DROP SCHEMA " + schema + " CASCADE")
			db.Close()
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}

// TestServeRecordsPostgres: serve records into PostgreSQL, and keypool
// records reads them back from it.
func TestServeRecordsPostgres(t *testing.T) {
	dsn := pgSchemaDSN(t)
	key := "sk-serve-pppppppppppppppp"
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key})
	noEnv(t)
	t.Setenv("OPENAI_KEY", key)
	t.Setenv("OPENAI_BASE_URL", url)
	t.Chdir(t.TempDir())
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--listen", "127.0.0.1:0", "--dbtype", "postgres", "--dbaddr", dsn)
	for range 2 {
		if code, body := post(t, base+"/v1/chat/completions", "", chatRequest); code != 200 {
			t.Fatalf("chat: %d %s", code, body)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"records", "--dbtype", "postgres", "--dbaddr", dsn, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("records: exit %d: %s\nserve log:\n%s", code, errOut.String(), stderr.String())
	}
	var recs []records.Record
	if err := json.Unmarshal(out.Bytes(), &recs); err != nil || len(recs) != 2 || recs[0].Model != "gpt-4o-mini" || recs[0].Status != 200 {
		t.Fatalf("records (%v): %s", err, out.String())
	}
	assertNoSecret(t, stderr.String()+out.String()+errOut.String(), key)
}
