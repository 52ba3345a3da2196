package records

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// postgresLock is the pg_advisory_xact_lock key that serializes keypool
// migrations across processes: "keypool" in ASCII.
const postgresLock = 30229394759839596

func postgresDialect(secrets []string) *dialect {
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
		text:   postgresText,
		redact: func(err error) error { return redact(err, secrets) },
	}
}

// openPostgres checks dsn and prepares a pool that connects on first use.
//
// Insert uses database/sql with multi-row INSERTs in a transaction, not
// pgx's CopyFrom: one round trip per 500 rows is close to COPY for the
// writer's batches, and it keeps one SQL path for both dialects.
func openPostgres(dsn string) (*store, error) {
	secrets := dsnSecrets(dsn)
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New("records: postgres: empty address (want a DSN such as postgres://user:password@host:5432/dbname)")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, redact(fmt.Errorf("records: postgres: bad address: %w", err), secrets)
	}
	secrets = append(secrets, cfg.Password)
	desc := cfg.User + "@" + cfg.Host + ":" + strconv.Itoa(int(cfg.Port)) + "/" + cfg.Database
	return newStore(stdlib.OpenDB(*cfg), postgresDialect(secrets), desc), nil
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

// kvPassword finds the passwords of a key=value DSN, quoted or not.
var kvPassword = regexp.MustCompile(`(?:^|\s)(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|\S*)`)

// dsnSecrets returns, best effort, the passwords in dsn as written and
// decoded, even when dsn does not parse: errors quote DSNs.
func dsnSecrets(dsn string) []string {
	var secrets []string
	add := func(s string) {
		secrets = append(secrets, s)
		if u, err := url.PathUnescape(s); err == nil {
			secrets = append(secrets, u)
		}
		if u, err := url.QueryUnescape(s); err == nil {
			secrets = append(secrets, u)
		}
	}
	if rest, ok := strings.CutPrefix(dsn, "postgres://"); ok || strings.HasPrefix(dsn, "postgresql://") {
		if !ok {
			rest = strings.TrimPrefix(dsn, "postgresql://")
		}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				add(pw)
			}
		}
		if _, query, ok := strings.Cut(rest, "?"); ok {
			values, _ := url.ParseQuery(query)
			for _, key := range []string{"password", "sslpassword"} {
				for _, v := range values[key] {
					add(v)
				}
			}
		}
		return secrets
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		add(m[1])
		if unquoted, ok := strings.CutPrefix(m[1], "'"); ok {
			unquoted = strings.TrimSuffix(unquoted, "'")
			add(strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(unquoted))
		}
	}
	return secrets
}

// redact returns err with every secret in its text replaced by "xxxxx",
// and its chain hidden (see redactedError). Without secrets, err is
// returned as it is.
func redact(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	secrets = slices.DeleteFunc(slices.Clone(secrets), func(s string) bool { return s == "" })
	if len(secrets) == 0 {
		return err
	}
	// Longest first, so that a secret inside another goes with it.
	slices.SortFunc(secrets, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	msg := err.Error()
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return &redactedError{msg: msg, err: err}
}
