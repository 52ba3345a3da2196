package app

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/secret"
)

// TestServeRecordsNeverLogsDSNPassword: `keypool serve --dbtype
// sqlite` with a config whose dbaddr is a PostgreSQL DSN opens the DSN as a
// SQLite file, and logs the store (its path, the whole DSN) with the
// password.
func TestServeRecordsNeverLogsDSNPassword(t *testing.T) {
	const password = "Pg-S3cret-review-passw0rd"
	t.Chdir(t.TempDir())
	cfg := &config.Config{DBType: "sqlite", DBAddr: secret.New("postgres://keypool:" + password + "@127.0.0.1:1/keypool")}
	var logs bytes.Buffer
	r, err := newRecords(cfg, time.Second, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err = r.Run(ctx)
	}
	if all := logs.String() + fmt.Sprint(err); strings.Contains(all, password) {
		t.Fatalf("the DSN's password was logged:\n%s", all)
	}
}
