package records

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/keypool/keypool/internal/secret"
)

// postgresLock is the pg_advisory_xact_lock key that serializes keypool
// migrations across processes: "keypool" in ASCII.
const postgresLock = 30229394759839596

func postgresDialect(scrub *secret.Scrubber) *dialect {
	return &dialect{
		name:     TypePostgres,
		idType:   "BIGSERIAL PRIMARY KEY",
		timeType: "TIMESTAMPTZ",
		lockSQL:  "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(postgresLock, 10) + ")",
		numbered: true,
		// One round trip per 500 rows; 500 rows of 20 columns stay well
		// below the 65535 parameters of a statement.
		rowsPerInsert: 500,
		timeArg:       func(t time.Time) any { return t },
		window: func(unit string) string {
			// unit comes from groupColumn's switch, never from input.
			return "date_trunc('" + unit + "', time AT TIME ZONE 'UTC')"
		},
		text:  postgresText,
		scrub: scrub,
	}
}

// openPostgres checks dsn and prepares a pool that connects on first use.
//
// Insert uses database/sql with multi-row INSERTs in a transaction, not
// pgx's CopyFrom: one round trip per 500 rows is close to COPY for the
// writer's batches, and it keeps one SQL path for both dialects.
func openPostgres(dsn string) (*store, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New("records: postgres: empty address (want a DSN such as postgres://user:password@host:5432/dbname)")
	}
	_, hidden := maskDSN(dsn)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx quotes the DSN, its passwords masked best effort: it is
		// given the DSN as RedactAddr shows it instead, and whatever that
		// hid is scrubbed from pgx's reason too.
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) {
			shown := *pe
			shown.ConnString = RedactAddr(dsn)
			err = &shown
		}
		return nil, secret.NewScrubber(hidden...).Error(fmt.Errorf("records: postgres: bad address: %w", err))
	}
	// The password pgx reads (it decodes it, and may take it from
	// PGPASSWORD or the passfile), as a DSN may write it, and as written.
	scrub := secret.NewScrubber(append(hidden, cfg.Password, url.QueryEscape(cfg.Password), url.PathEscape(cfg.Password))...)
	desc := cfg.User + "@" + cfg.Host + ":" + strconv.Itoa(int(cfg.Port)) + "/" + cfg.Database
	return newStore(stdlib.OpenDB(*cfg), postgresDialect(scrub), desc), nil
}

// postgresText makes s fit a PostgreSQL text column, which holds neither
// NUL nor invalid UTF-8: both become U+FFFD. Without it, one client sending
// a model name with \u0000 would fail the whole batch it is in.
func postgresText(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
