package records

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/keypool/keypool/internal/secret"
)

// Open returns the Store that typ and addr name, as the config's dbtype and
// dbaddr do:
//
//   - "sqlite" (or ""): addr is a file path ("" means "./db.sqlite", the
//     default of openai-api-route) or ":memory:", a database that lives as
//     long as the Store and is seen by it alone;
//   - "postgres": addr is a DSN, as a URL ("postgres://user:pass@host/db")
//     or as key=value pairs ("host=… user=… password=… dbname=…");
//   - "none": Open returns nil and ErrNone.
//
// Open checks its arguments but does not reach the database: a proxy can
// start while PostgreSQL is down. The first method call that reaches the
// database creates or migrates the schema; until one does, every call fails
// with an error saying why ("records: postgres: connect: …") and the next
// call tries again. No error and no %v of the Store holds the DSN's password.
func Open(typ string, addr secret.String) (Store, error) {
	var (
		s   *store
		err error
	)
	switch typ {
	case TypeSQLite, "":
		s, err = openSQLite(addr.Reveal())
	case TypePostgres:
		s, err = openPostgres(addr.Reveal())
	case TypeNone:
		return nil, ErrNone
	default:
		return nil, fmt.Errorf("records: unknown dbtype %q (want %s, %s or %s)", typ, TypeSQLite, TypePostgres, TypeNone)
	}
	if err != nil {
		return nil, err // not a Store holding a nil *store
	}
	return s, nil
}

// Limits of Recent: Limit 0 means defaultLimit; more than maxLimit is cut
// to maxLimit.
const (
	defaultLimit = 100
	maxLimit     = 10000
)

// dialect is all that differs between SQLite and PostgreSQL. The SQL in
// this file is written once, with ? placeholders, in what both speak.
type dialect struct {
	// name is the dbtype, as error messages name it.
	name string
	// idType and timeType are the column types of the row ID and of the
	// arrival time.
	idType, timeType string
	// lockSQL, if not empty, runs first in the migration's transaction to
	// keep other processes out until it commits.
	lockSQL string
	// numbered placeholders: $1, $2… instead of ?.
	numbered bool
	// rowsPerInsert is how many rows one INSERT statement carries.
	rowsPerInsert int
	// timeArg turns a UTC time, already cut to microseconds, into what the
	// time column takes.
	timeArg func(time.Time) any
	// window is an SQL expression for the start of the UTC minute, hour or
	// day ("minute", "hour" or "day") the time column falls in; it scans
	// into a scanTime.
	window func(unit string) string
	// text turns a string into one the text columns take.
	text func(string) string
	// scrub removes secrets from an error; it is the last thing every
	// error of a store goes through. nil: none to remove.
	scrub *secret.Scrubber
	// busy, if not nil, reports an error of a connection being opened
	// that a moment's wait may cure (another process holds a lock the
	// connection's setup needs).
	busy func(error) bool
}

// bind rewrites the ? placeholders of query for d. No query of this
// package has a ? anywhere else.
func (d *dialect) bind(query string) string {
	if !d.numbered {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// columns are the columns of keypool_requests but id, in the order Insert
// writes and Recent reads them.
var columns = []string{
	"time", "client", "ip", "method", "path", "model", "stream", "upstream", "key_id",
	"attempts", "status", "ttfb_us", "duration_us",
	"input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
	"error", "request_body", "response_body",
}

var columnList = strings.Join(columns, ", ")

// nullable are the text columns that are empty in most rows. Those hold NULL
// for "": a NULL costs the insert less than an empty string (no copy for
// the engine), and reads turn it back into "".
var nullable = map[string]bool{"client": true, "error": true, "request_body": true, "response_body": true}

// selectList is columnList for reading, with "" for NULL.
var selectList = func() string {
	out := make([]string, len(columns))
	for i, c := range columns {
		out[i] = c
		if nullable[c] {
			out[i] = "COALESCE(" + c + ", '')"
		}
	}
	return strings.Join(out, ", ")
}()

// orNull is s, or nil for "" (a nullable column's NULL).
func orNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// migrations[i] brings the schema from version i to i+1. Append new ones;
// never change one that has shipped.
var migrations = []func(d *dialect) []string{
	func(d *dialect) []string {
		return []string{
			`CREATE TABLE IF NOT EXISTS keypool_requests (
	id ` + d.idType + `,
	time ` + d.timeType + ` NOT NULL,
	client TEXT,
	ip TEXT NOT NULL DEFAULT '',
	method TEXT NOT NULL DEFAULT '',
	path TEXT NOT NULL DEFAULT '',
	model TEXT NOT NULL DEFAULT '',
	stream BOOLEAN NOT NULL DEFAULT FALSE,
	upstream TEXT NOT NULL DEFAULT '',
	key_id TEXT NOT NULL DEFAULT '',
	attempts TEXT NOT NULL DEFAULT '[]',
	status INTEGER NOT NULL DEFAULT 0,
	ttfb_us BIGINT NOT NULL DEFAULT 0,
	duration_us BIGINT NOT NULL DEFAULT 0,
	input_tokens BIGINT NOT NULL DEFAULT 0,
	output_tokens BIGINT NOT NULL DEFAULT 0,
	cached_tokens BIGINT NOT NULL DEFAULT 0,
	reasoning_tokens BIGINT NOT NULL DEFAULT 0,
	error TEXT,
	request_body TEXT,
	response_body TEXT
)`,
			// Every query has a time window (keypool records: the last 24 h
			// unless told otherwise), so one index on time serves them all:
			// the other filters and the groups read the window's rows. An
			// index per key or client cost every insert a fifth more CPU
			// (string compares in a b-tree), on the proxy's machine.
			`CREATE INDEX IF NOT EXISTS keypool_requests_time ON keypool_requests (time)`,
		}
	},
	// Key states, so that a restarted keypool serve starts from what it
	// knew (see keystates.go). The table is keypool's own, named as the
	// others are: another program's key_states is not ours to write.
	func(d *dialect) []string {
		return []string{
			`CREATE TABLE IF NOT EXISTS keypool_key_states (
	key_id TEXT PRIMARY KEY,
	upstream TEXT NOT NULL DEFAULT '',
	state TEXT NOT NULL,
	updated ` + d.timeType + ` NOT NULL
)`,
		}
	},
}

// store is the Store of both dialects.
type store struct {
	db   *sql.DB
	d    *dialect
	desc string // for String: where the store is, without secrets

	// migrating is a lock that a waiting caller can give up on: the
	// schema is migrated by one caller at a time, and migrated is set
	// once that succeeded.
	migrating chan struct{}
	migrated  atomic.Bool

	insertFull string // the INSERT of d.rowsPerInsert rows
}

func newStore(db *sql.DB, d *dialect, desc string) *store {
	return &store{
		db:         db,
		d:          d,
		desc:       desc,
		migrating:  make(chan struct{}, 1),
		insertFull: d.bind(insertSQL(d.rowsPerInsert)),
	}
}

// String describes the store without its secrets, so that %v of it is safe.
func (s *store) String() string { return "records." + s.d.name + "(" + s.desc + ")" }

// GoString makes %#v safe too.
func (s *store) GoString() string { return s.String() }

// fail turns err of op into the store's error: named, wrapped, redacted.
func (s *store) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	return s.d.scrub.Error(fmt.Errorf("records: %s: %s: %w", s.d.name, op, err))
}

// ready reaches the database and migrates the schema, unless that was done
// already. A caller whose ctx ends while another one migrates gives up.
func (s *store) ready(ctx context.Context) error {
	if s.migrated.Load() {
		return nil
	}
	select {
	case s.migrating <- struct{}{}:
	case <-ctx.Done():
		return s.fail("connect", ctx.Err())
	}
	defer func() { <-s.migrating }()
	if s.migrated.Load() {
		return nil
	}
	if err := s.connect(ctx); err != nil {
		return s.fail("connect", err)
	}
	if err := s.migrate(ctx); err != nil {
		return s.fail("migrate", err)
	}
	s.migrated.Store(true)
	return nil
}

// connect opens a first connection. While the dialect says the database
// is busy, it tries again, for up to connectPatience: SQLite's busy
// timeout does not cover a connection's own setup (its switch to WAL)
// while another process sets up the same new file.
func (s *store) connect(ctx context.Context) error {
	deadline := time.Now().Add(connectPatience)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		err := s.db.PingContext(ctx)
		if err == nil || s.d.busy == nil || !s.d.busy(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// connectPatience bounds how long connect waits for a busy database.
const connectPatience = 5 * time.Second

// migrate brings the schema to the newest version in one transaction, which
// keeps out other processes migrating the same database (the dialect's lock
// or SQLite's BEGIN IMMEDIATE). Running it again does nothing.
func (s *store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if s.d.lockSQL != "" {
		if _, err := tx.ExecContext(ctx, s.d.lockSQL); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS keypool_schema (version INTEGER PRIMARY KEY)`); err != nil {
		return err
	}
	var version int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM keypool_schema`).Scan(&version); err != nil {
		return err
	}
	// A newer schema than this binary knows is left as it is: migrations
	// only add, so an older keypool can still write.
	for v := version; v < len(migrations); v++ {
		for _, stmt := range migrations[v](s.d) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("to version %d: %w", v+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.d.bind(`INSERT INTO keypool_schema (version) VALUES (?)`), v+1); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Insert stores recs in one transaction, d.rowsPerInsert rows per
// statement. Inserting no records does nothing, not even reach the
// database. It does not set the records' IDs.
func (s *store) Insert(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	return s.fail("insert", s.insert(ctx, recs))
}

func (s *store) insert(ctx context.Context, recs []Record) error {
	// The driver's own connection: database/sql would convert every
	// argument of every row again (a slice of them a statement), which the
	// writer, inserting thousands of rows a second beside the proxy, cannot
	// afford.
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error { return s.insertRaw(ctx, dc, recs) })
}

// rawConn is what insertRaw needs of a driver's connection; both drivers
// have it.
type rawConn interface {
	driver.ConnBeginTx
	driver.ConnPrepareContext
}

func (s *store) insertRaw(ctx context.Context, dc any, recs []Record) (err error) {
	c, ok := dc.(rawConn)
	if !ok {
		return fmt.Errorf("records: %s driver cannot begin or prepare with a context", s.d.name)
	}
	tx, err := c.BeginTx(ctx, driver.TxOptions{})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	per := s.d.rowsPerInsert
	rows := 0            // since the last yield
	var full driver.Stmt // prepared once, for all full statements
	defer func() {
		if full != nil {
			full.Close()
		}
	}()
	vals := make([]any, 0, min(len(recs), per)*len(columns))
	args := make([]driver.NamedValue, 0, cap(vals))
	for len(recs) > 0 {
		n := min(len(recs), per)
		vals = vals[:0]
		for i := range recs[:n] {
			vals = s.appendValues(vals, &recs[i])
		}
		args = args[:0]
		for i, v := range vals {
			args = append(args, driver.NamedValue{Ordinal: i + 1, Value: v})
		}
		if n < per {
			err = execOnce(ctx, c, s.d.bind(insertSQL(n)), args)
		} else {
			if full == nil {
				if full, err = c.PrepareContext(ctx, s.insertFull); err != nil {
					return err
				}
			}
			err = exec(ctx, full, args)
		}
		if err != nil {
			return err
		}
		recs = recs[n:]
		// A batch takes milliseconds of CPU: let requests in now and
		// then rather than wait for the whole batch.
		if rows += n; rows >= 16 {
			rows = 0
			runtime.Gosched()
		}
	}
	return tx.Commit()
}

// execOnce prepares query on c, runs it with args and closes it.
func execOnce(ctx context.Context, c rawConn, query string, args []driver.NamedValue) error {
	st, err := c.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	defer st.Close()
	return exec(ctx, st, args)
}

func exec(ctx context.Context, st driver.Stmt, args []driver.NamedValue) error {
	se, ok := st.(driver.StmtExecContext)
	if !ok {
		return errors.New("records: the driver's statements cannot execute with a context")
	}
	_, err := se.ExecContext(ctx, args)
	return err
}

// insertSQL is an INSERT of n rows, with ? placeholders.
func insertSQL(n int) string {
	row := "(" + strings.Repeat("?, ", len(columns)-1) + "?)"
	var b strings.Builder
	b.WriteString("INSERT INTO keypool_requests (" + columnList + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	return b.String()
}

// appendValues appends the column values of r, in the order of columns.
func (s *store) appendValues(args []any, r *Record) []any {
	attempts := "[]"
	if len(r.Attempts) > 0 {
		attempts = string(appendAttempts(make([]byte, 0, 96*len(r.Attempts)), r.Attempts))
	}
	t := s.d.text
	return append(args,
		s.d.timeArg(r.Time.UTC().Truncate(time.Microsecond)),
		orNull(t(r.Client)), t(r.IP), t(r.Method), t(r.Path), t(r.Model), r.Stream,
		t(r.Upstream), t(r.Key), t(attempts), int64(r.Status),
		r.TTFB.Microseconds(), r.Duration.Microseconds(),
		r.InputTokens, r.OutputTokens, r.CachedTokens, r.ReasoningTokens,
		orNull(t(r.Error)), orNull(t(r.RequestBody)), orNull(t(r.ResponseBody)),
	)
}

// appendAttempts appends the JSON of attempts to b, as encoding/json would
// write it (the writer does this for every record, so without reflection).
func appendAttempts(b []byte, attempts []Attempt) []byte {
	b = append(b, '[')
	for i, a := range attempts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key":`...)
		b = appendJSONString(b, a.Key)
		b = append(b, `,"upstream":`...)
		b = appendJSONString(b, a.Upstream)
		b = append(b, `,"outcome":`...)
		b = appendJSONString(b, a.Outcome)
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(a.Status), 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as with encoding/json.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// where is the WHERE clause of q's filters (empty for none), and its
// arguments.
func (s *store) where(q Query) (string, []any) {
	var conds []string
	var args []any
	add := func(cond string, arg any) {
		conds = append(conds, cond)
		args = append(args, arg)
	}
	if !q.Since.IsZero() {
		add("time >= ?", s.d.timeArg(q.Since.UTC().Truncate(time.Microsecond)))
	}
	if !q.Until.IsZero() {
		add("time < ?", s.d.timeArg(q.Until.UTC().Truncate(time.Microsecond)))
	}
	for _, f := range []struct{ column, value string }{
		{"key_id", q.Key}, {"model", q.Model}, {"client", q.Client}, {"upstream", q.Upstream},
	} {
		if f.value != "" {
			add(f.column+" = ?", s.d.text(f.value))
		}
	}
	if q.Status != 0 {
		add("status = ?", q.Status)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// limit is the number of rows Recent returns for q.Limit.
func limit(n int) int {
	switch {
	case n <= 0:
		return defaultLimit
	case n > maxLimit:
		return maxLimit
	}
	return n
}

func (s *store) Recent(ctx context.Context, q Query) ([]Record, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	recs, err := s.recent(ctx, q)
	return recs, s.fail("recent", err)
}

func (s *store) recent(ctx context.Context, q Query) ([]Record, error) {
	where, args := s.where(q)
	args = append(args, limit(q.Limit))
	rows, err := s.db.QueryContext(ctx, s.d.bind(
		"SELECT id, "+selectList+" FROM keypool_requests"+where+" ORDER BY time DESC, id DESC LIMIT ?"), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var recs []Record
	for rows.Next() {
		var (
			r                  Record
			t                  scanTime
			attempts           string
			ttfbUS, durationUS int64
		)
		if err := rows.Scan(&r.ID, &t, &r.Client, &r.IP, &r.Method, &r.Path, &r.Model, &r.Stream,
			&r.Upstream, &r.Key, &attempts, &r.Status, &ttfbUS, &durationUS,
			&r.InputTokens, &r.OutputTokens, &r.CachedTokens, &r.ReasoningTokens,
			&r.Error, &r.RequestBody, &r.ResponseBody); err != nil {
			return nil, err
		}
		r.Time = time.Time(t)
		r.TTFB = time.Duration(ttfbUS) * time.Microsecond
		r.Duration = time.Duration(durationUS) * time.Microsecond
		if err := json.Unmarshal([]byte(attempts), &r.Attempts); err != nil {
			return nil, fmt.Errorf("record %d: attempts: %w", r.ID, err)
		}
		if len(r.Attempts) == 0 {
			r.Attempts = nil
		}
		recs = append(recs, r)
	}
	return recs, rows.Err()
}

// groupColumn is the SQL expression Aggregate groups by; from this fixed
// switch only, never from input.
func (s *store) groupColumn(by GroupBy) (string, bool) {
	switch by {
	case ByKey:
		return "key_id", true
	case ByModel:
		return "model", true
	case ByStatus:
		return "status", true
	case ByClient:
		return "COALESCE(client, '')", true
	case ByUpstream:
		return "upstream", true
	case ByError:
		return "COALESCE(error, '')", true
	case ByMinute:
		return s.d.window("minute"), true
	case ByHour:
		return s.d.window("hour"), true
	case ByDay:
		return s.d.window("day"), true
	}
	return "", false
}

func (s *store) Aggregate(ctx context.Context, q Query, by GroupBy) ([]Group, error) {
	column, ok := s.groupColumn(by)
	if !ok {
		return nil, fmt.Errorf("records: cannot group by %q", by)
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	groups, err := s.aggregate(ctx, q, by, column)
	return groups, s.fail("aggregate", err)
}

func (s *store) aggregate(ctx context.Context, q Query, by GroupBy, column string) ([]Group, error) {
	where, args := s.where(q)
	// SUM of BIGINT is NUMERIC in PostgreSQL: cast it back.
	rows, err := s.db.QueryContext(ctx, s.d.bind(`SELECT `+column+`, COUNT(*),
	CAST(SUM(CASE WHEN error <> '' THEN 1 ELSE 0 END) AS BIGINT),
	CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT),
	CAST(SUM(cached_tokens) AS BIGINT), CAST(SUM(reasoning_tokens) AS BIGINT),
	CAST(SUM(duration_us) AS BIGINT), CAST(SUM(ttfb_us) AS BIGINT)
FROM keypool_requests`+where+` GROUP BY 1`), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var groups []Group
	for rows.Next() {
		var (
			g                  Group
			text               string
			number             int64
			window             scanTime
			durationUS, ttfbUS int64
			value              any = &text
		)
		switch by {
		case ByStatus:
			value = &number
		case ByMinute, ByHour, ByDay:
			value = &window
		}
		if err := rows.Scan(value, &g.Requests, &g.Errors,
			&g.InputTokens, &g.OutputTokens, &g.CachedTokens, &g.ReasoningTokens,
			&durationUS, &ttfbUS); err != nil {
			return nil, err
		}
		switch by {
		case ByStatus:
			g.Group = strconv.FormatInt(number, 10)
		case ByMinute, ByHour, ByDay:
			g.Group = time.Time(window).Format(time.RFC3339)
		default:
			g.Group = text
		}
		g.AvgDuration = time.Duration(durationUS/g.Requests) * time.Microsecond
		g.AvgTTFB = time.Duration(ttfbUS/g.Requests) * time.Microsecond
		groups = append(groups, g)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sortGroups(groups, by)
	return groups, nil
}

// sortGroups puts time windows newest first, and other groups largest
// first, then by value (statuses as numbers). Sorting here, not in SQL,
// keeps the order free of the database's collation.
func sortGroups(groups []Group, by GroupBy) {
	slices.SortFunc(groups, func(a, b Group) int {
		switch by {
		case ByMinute, ByHour, ByDay:
			// RFC 3339 in UTC sorts as the time does.
			return strings.Compare(b.Group, a.Group)
		}
		if c := cmp.Compare(b.Requests, a.Requests); c != 0 {
			return c
		}
		if by == ByStatus {
			x, _ := strconv.Atoi(a.Group)
			y, _ := strconv.Atoi(b.Group)
			return cmp.Compare(x, y)
		}
		return strings.Compare(a.Group, b.Group)
	})
}

// pruneChunk bounds the rows one DELETE of Prune takes, so that inserts are
// not held up behind a long one.
var pruneChunk = 5000 // a variable for the tests

func (s *store) Prune(ctx context.Context, before time.Time) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	q := s.d.bind(`DELETE FROM keypool_requests WHERE id IN
	(SELECT id FROM keypool_requests WHERE time < ? ORDER BY time LIMIT ` + strconv.Itoa(pruneChunk) + `)`)
	t := s.d.timeArg(before.UTC().Truncate(time.Microsecond))
	var total int64
	for {
		res, err := s.db.ExecContext(ctx, q, t)
		if err != nil {
			return total, s.fail("prune", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, s.fail("prune", err)
		}
		total += n
		if n < int64(pruneChunk) {
			return total, nil
		}
	}
}

func (s *store) Ping(ctx context.Context) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	return s.fail("ping", s.db.PingContext(ctx))
}

func (s *store) Close() error {
	return s.fail("close", s.db.Close())
}

// scanTime scans the time column of either dialect (or a window of it):
// SQLite's integer microseconds or PostgreSQL's timestamp, as UTC.
type scanTime time.Time

func (t *scanTime) Scan(src any) error {
	switch v := src.(type) {
	case int64:
		*t = scanTime(time.UnixMicro(v).UTC())
	case time.Time:
		*t = scanTime(v.UTC())
	default:
		return fmt.Errorf("time column holds %T", src)
	}
	return nil
}
