package records

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keypool/keypool/internal/secret"
)

// postgresEnv names the DSN of a PostgreSQL the tests may create schemas
// in. CI sets it (see .ci/postgres); without it the PostgreSQL tests skip.
const postgresEnv = "KEYPOOL_TEST_POSTGRES"

const postgresSkipped = "PostgreSQL tests SKIPPED: set " + postgresEnv + "=postgres://... (CI sets it)"

func TestMain(m *testing.M) {
	if os.Getenv(postgresEnv) == "" {
		// go test ./... shows a passing package's output only with -v:
		// the terminal, when there is one, sees the skip all the same.
		if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
			fmt.Fprintln(tty, postgresSkipped)
			tty.Close()
		} else {
			fmt.Fprintln(os.Stderr, postgresSkipped)
		}
	}
	os.Exit(m.Run())
}

// backend makes new, empty databases of one type.
type backend struct {
	name, typ string
	// newAddr returns the address of a new, empty database.
	newAddr func(t *testing.T) string
	// shared reports whether two Opens of one address share the database.
	shared bool
}

var backends = []backend{
	{name: "sqlite", typ: TypeSQLite, shared: true, newAddr: func(t *testing.T) string {
		return filepath.Join(t.TempDir(), "db.sqlite")
	}},
	{name: "sqlite-memory", typ: TypeSQLite, newAddr: func(*testing.T) string { return ":memory:" }},
	{name: "postgres", typ: TypePostgres, shared: true, newAddr: func(t *testing.T) string { return postgresAddr(t) }},
}

// postgresAddr returns a DSN of the test PostgreSQL whose search_path is a
// schema of its own, dropped when t ends; it skips t without one.
func postgresAddr(t testing.TB) string {
	t.Helper()
	base := os.Getenv(postgresEnv)
	if base == "" {
		t.Skip(postgresSkipped)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("%s: %v", postgresEnv, err)
	}
	defer admin.Close()
	schema := "keypool_test_" + strings.ToLower(rand.Text())
	if _, err := admin.ExecContext(t.Context(), `CREATE SCHEMA "`+schema+`"`); err != nil {
		t.Fatalf("%s is set but PostgreSQL cannot be used: %v", postgresEnv, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec(`DROP SCHEMA "` + schema + `" CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return postgresParam(base, "search_path", schema)
}

// postgresParam returns dsn with key set to value, in either form of DSN.
func postgresParam(dsn, key, value string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value // a later key wins
}

func (b backend) open(t *testing.T, addr string) Store {
	t.Helper()
	st, err := Open(b.typ, secret.New(addr))
	if err != nil {
		t.Fatalf("Open(%q): %v", b.typ, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestStores(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { testStore(t, b) })
	}
}

// testStore is the suite every backend passes.
func testStore(t *testing.T, b backend) {
	t.Run("migrate twice", func(t *testing.T) {
		ctx := t.Context()
		addr := b.newAddr(t)
		first := b.open(t, addr)
		insert(t, first, Record{Time: at("2026-11-22T01:00:00Z"), Path: "/first"})
		if !b.shared {
			// A second Open would be another database: migrate this
			// one again instead.
			if err := first.(*store).migrate(ctx); err != nil {
				t.Fatalf("second migration: %v", err)
			}
			checkSchema(t, first)
			return
		}
		second := b.open(t, addr)
		insert(t, second, Record{Time: at("2026-11-22T02:00:00Z"), Path: "/second"})
		if err := second.(*store).migrate(ctx); err != nil {
			t.Fatalf("third migration: %v", err)
		}
		checkSchema(t, second)
		if got := paths(t, first, Query{}); got != "/second /first" {
			t.Errorf("records = %s, want /second /first", got)
		}
	})

	t.Run("concurrent first use", func(t *testing.T) {
		addr := b.newAddr(t)
		stores := []Store{b.open(t, addr)}
		if b.shared {
			stores = append(stores, b.open(t, addr), b.open(t, addr))
		}
		const goroutines, each = 8, 25
		errs := make(chan error, goroutines)
		var wg sync.WaitGroup
		for i := range goroutines {
			st := stores[i%len(stores)]
			wg.Go(func() {
				ctx := t.Context()
				recs := make([]Record, each)
				for j := range recs {
					recs[j] = Record{Time: at("2026-11-22T00:00:00Z").Add(time.Duration(i*each+j) * time.Second)}
				}
				if _, err := st.Recent(ctx, Query{}); err != nil {
					errs <- err
					return
				}
				errs <- st.Insert(ctx, recs)
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		checkSchema(t, stores[0])
		if got := count(t, stores[0], Query{}); got != goroutines*each {
			t.Errorf("%d records, want %d", got, goroutines*each)
		}
	})

	t.Run("round trip", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		full := Record{
			Time:     time.Date(2026, 11, 22, 3, 4, 5, 123456789, time.FixedZone("UTC+1", 3600)),
			Client:   "ct_0123456789abcdef",
			IP:       "203.0.113.7",
			Method:   "POST",
			Path:     "/v1/chat/completions",
			Model:    "gpt-4o-mini",
			Stream:   true,
			Upstream: "openai",
			Key:      "k_89abcdef01234567",
			Attempts: []Attempt{
				{Key: "k_0000000000000001", Upstream: "azure", Outcome: "rate_limited", Status: 429},
				{Key: "k_89abcdef01234567", Upstream: "openai", Outcome: "ok", Status: 200},
			},
			Status:          200,
			TTFB:            1234567 * time.Nanosecond,
			Duration:        2*time.Second + 345678*time.Microsecond,
			InputTokens:     1 << 40,
			OutputTokens:    22,
			CachedTokens:    3,
			ReasoningTokens: 4,
			Error:           "",
			RequestBody:     `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"héllo ✓ 'quoted' \"and\" \\ ?"}]}`,
			ResponseBody:    "data: {\"x\":1}\n\ndata: [DONE]\n\n",
		}
		zero := Record{Time: at("2026-01-01T00:00:00Z"), Error: "cancelled"}
		insert(t, st, full, zero, Record{})

		got := recent(t, st, Query{})
		if len(got) != 3 {
			t.Fatalf("%d records, want 3", len(got))
		}
		want := []Record{full, zero, {}}
		want[0].Time = full.Time.UTC().Truncate(time.Microsecond)
		want[0].TTFB = 1234 * time.Microsecond
		ids := map[int64]bool{}
		for i := range got {
			if got[i].ID <= 0 || ids[got[i].ID] {
				t.Errorf("record %d: ID %d, want a new one above 0", i, got[i].ID)
			}
			ids[got[i].ID] = true
			want[i].ID = got[i].ID
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("record %d:\n got %+v\nwant %+v", i, got[i], want[i])
			}
		}
	})

	t.Run("strings a database cannot hold", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		odd := Record{Time: at("2026-11-22T00:00:00Z"), Model: "gpt\x00-4", Path: "/v1/\xff", RequestBody: "a\x00b\xc3"}
		insert(t, st, Record{Time: at("2026-11-21T00:00:00Z"), Path: "/ok"}, odd)
		got := recent(t, st, Query{Model: odd.Model})
		if len(got) != 1 {
			t.Fatalf("%d records of model %q, want 1", len(got), odd.Model)
		}
		text := st.(*store).d.text
		if got[0].Model != text(odd.Model) || got[0].Path != text(odd.Path) || got[0].RequestBody != text(odd.RequestBody) {
			t.Errorf("got %q %q %q", got[0].Model, got[0].Path, got[0].RequestBody)
		}
		if n := count(t, st, Query{}); n != 2 {
			t.Errorf("%d records, want 2", n)
		}
	})

	t.Run("filters", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		insert(t, st, fixture()...)
		for _, tt := range []struct {
			name string
			q    Query
			want string
		}{
			{"all", Query{}, "/r6 /r5 /r4 /r3 /r2 /r1"},
			{"since is inclusive", Query{Since: at("2026-11-22T00:00:00Z")}, "/r6 /r5 /r4 /r3 /r2"},
			{"until is exclusive", Query{Until: at("2026-11-22T02:00:00Z")}, "/r4 /r3 /r2 /r1"},
			{"since in another zone", Query{Since: at("2026-11-22T07:00:00+05:00")}, "/r6 /r5"},
			{"window", Query{Since: at("2026-11-22T00:00:00Z"), Until: at("2026-11-22T01:59:59.999999Z")}, "/r3 /r2"},
			{"key", Query{Key: "k1"}, "/r5 /r2 /r1"},
			{"model", Query{Model: "m1"}, "/r5 /r4 /r3 /r1"},
			{"client", Query{Client: "c1"}, "/r5 /r3 /r1"},
			{"upstream", Query{Upstream: "u2"}, "/r4 /r3"},
			{"status", Query{Status: 200}, "/r5 /r3 /r1"},
			{"all of them", Query{Key: "k2", Model: "m1", Client: "c1", Upstream: "u2", Status: 200, Since: at("2026-11-22T01:15:00Z")}, "/r3"},
			{"none", Query{Model: "nope"}, ""},
			{"limit", Query{Limit: 2}, "/r6 /r5"},
			{"limit after filters", Query{Key: "k1", Limit: 2}, "/r5 /r2"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				if got := paths(t, st, tt.q); got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
			})
		}
	})

	t.Run("limit", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		insert(t, st, series(150)...)
		for _, tt := range []struct{ limit, want int }{{0, 100}, {-1, 100}, {5, 5}, {150, 150}, {1000, 150}} {
			got := recent(t, st, Query{Limit: tt.limit})
			if len(got) != tt.want {
				t.Errorf("Limit %d: %d records, want %d", tt.limit, len(got), tt.want)
				continue
			}
			if got[0].Path != "/149" || got[len(got)-1].Path != "/"+strconv.Itoa(150-tt.want) {
				t.Errorf("Limit %d: from %s to %s, want the newest", tt.limit, got[0].Path, got[len(got)-1].Path)
			}
		}
	})

	t.Run("equal times, newest row first", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		same := at("2026-11-22T00:00:00Z")
		insert(t, st, Record{Time: same, Path: "/a"}, Record{Time: same, Path: "/b"})
		insert(t, st, Record{Time: same, Path: "/c"})
		if got := paths(t, st, Query{}); got != "/c /b /a" {
			t.Errorf("got %s, want /c /b /a", got)
		}
	})

	t.Run("insert nothing", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		for _, recs := range [][]Record{nil, {}} {
			if err := st.Insert(t.Context(), recs); err != nil {
				t.Errorf("Insert(%#v): %v", recs, err)
			}
		}
		if n := count(t, st, Query{}); n != 0 {
			t.Errorf("%d records, want 0", n)
		}
	})

	t.Run("batch of 1000", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		insert(t, st, series(1000)...)
		got := recent(t, st, Query{Limit: maxLimit})
		if len(got) != 1000 {
			t.Fatalf("%d records, want 1000", len(got))
		}
		for i, r := range got {
			if want := "/" + strconv.Itoa(999-i); r.Path != want {
				t.Fatalf("record %d is %s, want %s", i, r.Path, want)
			}
		}
	})

	t.Run("prune", func(t *testing.T) {
		defer func(n int) { pruneChunk = n }(pruneChunk)
		pruneChunk = 100 // so that the prune takes several chunks
		st := b.open(t, b.newAddr(t))
		insert(t, st, series(1200)...)
		n, err := st.Prune(t.Context(), at("2026-11-22T00:00:00Z").Add(1100*time.Second))
		if err != nil || n != 1100 {
			t.Fatalf("pruned %d (%v), want 1100", n, err)
		}
		got := recent(t, st, Query{Limit: maxLimit})
		if len(got) != 100 || got[len(got)-1].Path != "/1100" {
			t.Fatalf("%d records left, oldest %s", len(got), got[len(got)-1].Path)
		}
		if n, err := st.Prune(t.Context(), at("2026-11-22T00:00:00Z")); err != nil || n != 0 {
			t.Fatalf("pruned %d (%v) of none older", n, err)
		}
	})

	t.Run("aggregate", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		insert(t, st, fixture()...)
		ms := time.Millisecond
		k1 := group("", 3, 1, 11, 22, 1, 0, 3020*ms/3, 410*ms/3)
		k2 := group("", 2, 1, 5, 7, 2, 3, 1530*ms, 125*ms)
		ok := group("", 3, 0, 16, 29, 3, 3, 2000*ms, 200*ms)
		r1 := group("", 1, 0, 10, 20, 1, 0, 1000*ms, 100*ms)
		r2 := group("", 1, 1, 0, 0, 0, 0, 20*ms, 10*ms)
		r4 := group("", 1, 1, 0, 0, 0, 0, 60*ms, 50*ms)
		r3 := group("", 1, 0, 5, 7, 2, 3, 3000*ms, 200*ms)
		r5 := group("", 1, 0, 1, 2, 0, 0, 2000*ms, 300*ms)
		r6 := group("", 1, 1, 0, 0, 0, 0, 1*ms, 1*ms)
		for _, tt := range []struct {
			by   GroupBy
			q    Query
			want []Group
		}{
			{ByKey, Query{}, []Group{k1.as("k1"), k2.as("k2"), r6.as("")}},
			{ByModel, Query{}, []Group{
				group("m1", 4, 1, 16, 29, 3, 3, 1515*ms, 162500*time.Microsecond), r6.as(""), r2.as("m2")}},
			{ByStatus, Query{}, []Group{ok.as("200"), r6.as("401"), r2.as("429"), r4.as("500")}},
			{ByClient, Query{}, []Group{
				ok.as("c1"), group("", 2, 2, 0, 0, 0, 0, 30500*time.Microsecond, 25500*time.Microsecond), r2.as("c2")}},
			{ByUpstream, Query{}, []Group{k1.as("u1"), k2.as("u2"), r6.as("")}},
			{ByError, Query{}, []Group{ok.as(""), r2.as("rate_limited"), r4.as("server_error"), r6.as("unauthorized")}},
			{ByMinute, Query{}, []Group{
				r6.as("2026-11-22T02:30:00Z"),
				r5.as("2026-11-22T02:00:00Z"),
				r4.as("2026-11-22T01:59:00Z"),
				r3.as("2026-11-22T01:15:00Z"),
				r2.as("2026-11-22T00:00:00Z"),
				r1.as("2026-11-21T23:59:00Z"),
			}},
			{ByHour, Query{}, []Group{
				group("2026-11-22T02:00:00Z", 2, 1, 1, 2, 0, 0, 1000500*time.Microsecond, 150500*time.Microsecond),
				k2.as("2026-11-22T01:00:00Z"),
				r2.as("2026-11-22T00:00:00Z"),
				r1.as("2026-11-21T23:00:00Z"),
			}},
			{ByDay, Query{}, []Group{
				group("2026-11-22T00:00:00Z", 5, 3, 6, 9, 2, 3, 1016200*time.Microsecond, 112200*time.Microsecond),
				r1.as("2026-11-21T00:00:00Z"),
			}},
			{ByModel, Query{Since: at("2026-11-22T00:00:00Z"), Until: at("2026-11-22T02:00:00Z"), Limit: 1},
				[]Group{k2.as("m1"), r2.as("m2")}},
			{ByHour, Query{Key: "k1"}, []Group{
				group("2026-11-22T02:00:00Z", 1, 0, 1, 2, 0, 0, 2000*ms, 300*ms),
				r2.as("2026-11-22T00:00:00Z"),
				r1.as("2026-11-21T23:00:00Z"),
			}},
			{ByKey, Query{Model: "nope"}, nil},
		} {
			t.Run(string(tt.by), func(t *testing.T) {
				got, err := st.Aggregate(t.Context(), tt.q, tt.by)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("Aggregate(%+v, %s):\n got %+v\nwant %+v", tt.q, tt.by, got, tt.want)
				}
			})
		}
	})

	t.Run("aggregate by minute before 1970", func(t *testing.T) {
		// Before 1970 the time column is negative: a window is its floor,
		// not its truncation toward zero.
		st := b.open(t, b.newAddr(t))
		ms := time.Millisecond
		insert(t, st,
			Record{Path: "/a", Time: at("1965-06-15T12:34:56.5Z"), Status: 200, Duration: 10 * ms},
			Record{Path: "/b", Time: at("1969-12-31T23:58:59.999999Z"), Status: 200, Duration: 20 * ms},
			Record{Path: "/c", Time: at("1969-12-31T23:59:00Z"), Status: 200, Duration: 30 * ms},
			Record{Path: "/d", Time: at("1969-12-31T23:59:59.999999Z"), Status: 200, Duration: 50 * ms},
			Record{Path: "/e", Time: at("1970-01-01T00:00:00Z"), Status: 200, Duration: 60 * ms},
		)
		want := []Group{
			group("1970-01-01T00:00:00Z", 1, 0, 0, 0, 0, 0, 60*ms, 0),
			group("1969-12-31T23:59:00Z", 2, 0, 0, 0, 0, 0, 40*ms, 0),
			group("1969-12-31T23:58:00Z", 1, 0, 0, 0, 0, 0, 20*ms, 0),
			group("1965-06-15T12:34:00Z", 1, 0, 0, 0, 0, 0, 10*ms, 0),
		}
		got, err := st.Aggregate(t.Context(), Query{}, ByMinute)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Aggregate(minute):\n got %+v\nwant %+v", got, want)
		}
	})

	t.Run("bad group by", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		_, err := st.Aggregate(t.Context(), Query{}, GroupBy("key_id; DROP TABLE keypool_requests"))
		if err == nil || !strings.HasPrefix(err.Error(), "records: cannot group by") {
			t.Errorf("err = %v, want records: cannot group by …", err)
		}
	})

	t.Run("ping", func(t *testing.T) {
		st := b.open(t, b.newAddr(t))
		if err := st.Ping(t.Context()); err != nil {
			t.Error(err)
		}
		checkSchema(t, st)
	})
}

// fixture is six records whose groups the aggregate test knows by heart.
func fixture() []Record {
	ms := time.Millisecond
	return []Record{
		{Path: "/r1", Time: at("2026-11-21T23:59:59.999999Z"), Key: "k1", Model: "m1", Client: "c1", Upstream: "u1", Status: 200,
			InputTokens: 10, OutputTokens: 20, CachedTokens: 1, TTFB: 100 * ms, Duration: time.Second},
		{Path: "/r2", Time: at("2026-11-22T00:00:00Z"), Key: "k1", Model: "m2", Client: "c2", Upstream: "u1", Status: 429,
			Error: "rate_limited", TTFB: 10 * ms, Duration: 20 * ms},
		{Path: "/r3", Time: at("2026-11-22T01:15:00Z"), Key: "k2", Model: "m1", Client: "c1", Upstream: "u2", Status: 200,
			InputTokens: 5, OutputTokens: 7, CachedTokens: 2, ReasoningTokens: 3, TTFB: 200 * ms, Duration: 3 * time.Second},
		{Path: "/r4", Time: at("2026-11-22T01:59:59.999999Z"), Key: "k2", Model: "m1", Upstream: "u2", Status: 500,
			Error: "server_error", TTFB: 50 * ms, Duration: 60 * ms},
		{Path: "/r5", Time: at("2026-11-22T07:00:00+05:00"), Key: "k1", Model: "m1", Client: "c1", Upstream: "u1", Status: 200,
			InputTokens: 1, OutputTokens: 2, TTFB: 300 * ms, Duration: 2 * time.Second},
		{Path: "/r6", Time: at("2026-11-22T02:30:00.000001Z"), Status: 401, Error: "unauthorized", TTFB: ms, Duration: ms},
	}
}

// series is n records a second apart, with paths /0 (the oldest) to /n-1.
func series(n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = Record{
			Time: at("2026-11-22T00:00:00Z").Add(time.Duration(i) * time.Second),
			Path: "/" + strconv.Itoa(i), Key: "k_0123456789abcdef", Model: "gpt-4o-mini", Status: 200,
			InputTokens: int64(i), Duration: time.Duration(i) * time.Millisecond,
		}
	}
	return recs
}

func group(name string, requests, errs, in, out, cached, reasoning int64, avgDuration, avgTTFB time.Duration) Group {
	return Group{Group: name, Requests: requests, Errors: errs, InputTokens: in, OutputTokens: out,
		CachedTokens: cached, ReasoningTokens: reasoning,
		AvgDuration: avgDuration.Truncate(time.Microsecond), AvgTTFB: avgTTFB.Truncate(time.Microsecond)}
}

func (g Group) as(name string) Group { g.Group = name; return g }

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func insert(t *testing.T, st Store, recs ...Record) {
	t.Helper()
	if err := st.Insert(t.Context(), recs); err != nil {
		t.Fatalf("Insert: %v", err)
	}
}

func recent(t *testing.T, st Store, q Query) []Record {
	t.Helper()
	recs, err := st.Recent(t.Context(), q)
	if err != nil {
		t.Fatalf("Recent: %v", err)
	}
	return recs
}

func paths(t *testing.T, st Store, q Query) string {
	t.Helper()
	var ps []string
	for _, r := range recent(t, st, q) {
		ps = append(ps, r.Path)
	}
	return strings.Join(ps, " ")
}

func count(t *testing.T, st Store, q Query) int64 {
	t.Helper()
	groups, err := st.Aggregate(t.Context(), q, ByDay)
	if err != nil {
		t.Fatalf("Aggregate: %v", err)
	}
	var n int64
	for _, g := range groups {
		n += g.Requests
	}
	return n
}

// checkSchema checks that every migration ran exactly once.
func checkSchema(t *testing.T, st Store) {
	t.Helper()
	var rows, version int
	err := st.(*store).db.QueryRowContext(t.Context(), `SELECT COUNT(*), MAX(version) FROM keypool_schema`).Scan(&rows, &version)
	if err != nil {
		t.Fatal(err)
	}
	if rows != len(migrations) || version != len(migrations) {
		t.Errorf("keypool_schema: %d rows up to version %d, want %d", rows, version, len(migrations))
	}
}

func TestOpen(t *testing.T) {
	const password = "Pw_Sekrit_9f3k"
	for _, tt := range []struct {
		name, typ, addr string
		want            string // the error's start, or "" for none
	}{
		{"sqlite", TypeSQLite, "", ""},
		{"default", "", ":memory:", ""},
		{"unknown", "mysql", "x", `records: unknown dbtype "mysql" (want sqlite, postgres or none)`},
		{"no postgres address", TypePostgres, "", "records: postgres: empty address"},
		{"postgres URL", TypePostgres, "postgres://u:" + password + "@db.example:5432/keypool", ""},
		{"bad postgres port", TypePostgres, "postgres://u:" + password + "@db.example:notaport/keypool", "records: postgres: bad address:"},
		{"bad postgres URL", TypePostgres, "postgres://u:" + password + "@db.example:5432/%zz", "records: postgres: bad address:"},
		{"bad key=value", TypePostgres, "host=db.example password=" + password + " port=notaport", "records: postgres: bad address:"},
		{"bad quoted key=value", TypePostgres, "host=db.example password='" + password + " x' port=notaport", "records: postgres: bad address:"},
		{"stray word in key=value", TypePostgres, "host=db.example " + password + " port=5432", "records: postgres: bad address:"},
		{"unclosed quote", TypePostgres, "host=db.example password='" + password + " port=5432", "records: postgres: bad address:"},
		{"two @ in URL", TypePostgres, "postgres://u:" + password + "@db.example:5432,x@y/keypool", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, err := Open(tt.typ, secret.New(tt.addr))
			if err != nil && st != nil {
				t.Errorf("Open returned a store with its error: %v", st)
			}
			if err == nil {
				defer st.Close() // never used: nothing was created
				if s := fmt.Sprintf("%v %+v %#v %s", st, st, st, st); strings.Contains(s, password) {
					t.Errorf("the store prints its password: %s", s)
				}
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Open: %v", err)
			case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
				t.Fatalf("Open: %v, want an error starting %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), password):
				t.Fatalf("the error holds the password: %v", err)
			}
		})
	}

	st, err := Open(TypeNone, secret.String{})
	if st != nil || !errors.Is(err, ErrNone) {
		t.Errorf("Open(none) = %v, %v; want nil, ErrNone", st, err)
	}
}

// freePort returns a port of 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestPostgresUnreachable(t *testing.T) {
	const password = "Pw_Sekrit_9f3k"
	port := freePort(t)
	for _, tt := range []struct{ name, dsn string }{
		{"URL", fmt.Sprintf("postgres://keypool:%s@127.0.0.1:%d/keypool?connect_timeout=2&sslmode=disable", password, port)},
		{"URL, escaped", fmt.Sprintf("postgres://keypool:%s%%2F%%40x@127.0.0.1:%d/keypool?connect_timeout=2", password, port)},
		{"key=value", fmt.Sprintf("host=127.0.0.1 port=%d user=keypool password=%s connect_timeout=2", port, password)},
		{"key=value, quoted", fmt.Sprintf("host=127.0.0.1 port=%d user=keypool password='%s it\\'s' connect_timeout=2", port, password)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, err := Open(TypePostgres, secret.New(tt.dsn))
			if err != nil {
				t.Fatalf("Open must not reach the database: %v", err)
			}
			defer st.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, recentErr := st.Recent(ctx, Query{})
			_, aggregateErr := st.Aggregate(ctx, Query{}, ByKey)
			for name, err := range map[string]error{
				"Insert":    st.Insert(ctx, []Record{{Time: at("2026-11-22T00:00:00Z")}}),
				"Recent":    recentErr,
				"Aggregate": aggregateErr,
				"Ping":      st.Ping(ctx),
			} {
				if err == nil || !strings.HasPrefix(err.Error(), "records: postgres: connect: ") {
					t.Errorf("%s: %v, want records: postgres: connect: …", name, err)
				} else if strings.Contains(err.Error(), password) {
					t.Errorf("%s: the error holds the password: %v", name, err)
				}
			}
			if s := fmt.Sprintf("%v %+v %#v", st, st, st); strings.Contains(s, password) {
				t.Errorf("the store prints its password: %s", s)
			}
		})
	}
}

func TestSQLiteComesUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	st := backend{typ: TypeSQLite}.open(t, filepath.Join(dir, "db.sqlite"))
	err := st.Insert(t.Context(), []Record{{Path: "/lost"}})
	if err == nil || !strings.HasPrefix(err.Error(), "records: sqlite: connect: ") {
		t.Fatalf("Insert before the directory exists: %v, want records: sqlite: connect: …", err)
	}
	if err := st.Ping(t.Context()); err == nil {
		t.Fatal("Ping before the directory exists: no error")
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	insert(t, st, Record{Path: "/kept"})
	if got := paths(t, st, Query{}); got != "/kept" {
		t.Errorf("records: %q, want /kept", got)
	}
}

func TestPostgresComesUp(t *testing.T) {
	dsn := postgresAddr(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Skip("the test PostgreSQL is on a unix socket: no TCP to cut")
	}
	g := newGate(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	host, port, _ := net.SplitHostPort(g.addr)
	st := backend{typ: TypePostgres}.open(t, postgresParam(postgresParam(dsn, "host", host), "port", port))

	err = st.Insert(t.Context(), []Record{{Path: "/lost"}})
	if err == nil || !strings.HasPrefix(err.Error(), "records: postgres: connect: ") {
		t.Fatalf("Insert while PostgreSQL is down: %v, want records: postgres: connect: …", err)
	}
	g.up.Store(true)
	insert(t, st, Record{Path: "/kept"})
	if got := paths(t, st, Query{}); got != "/kept" {
		t.Errorf("records: %q, want /kept", got)
	}
}

// gate is a TCP proxy to target that hangs up on every connection until up.
type gate struct {
	addr string
	up   atomic.Bool
}

func newGate(t *testing.T, target string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !g.up.Load() {
				c.Close()
				continue
			}
			wg.Go(func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.Close() }()
				io.Copy(c, u)
			})
		}
	})
	return g
}

func TestLimit(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{-5, 100}, {0, 100}, {1, 1}, {10000, 10000}, {10001, 10000}} {
		if got := limit(tt.in); got != tt.want {
			t.Errorf("limit(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// BenchmarkInsertBatch inserts batches of 256 records, as the writer does.
func BenchmarkInsertBatch(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchmarkInsertBatch(b, TypeSQLite, filepath.Join(b.TempDir(), "db.sqlite"))
	})
	b.Run("postgres", func(b *testing.B) {
		benchmarkInsertBatch(b, TypePostgres, postgresAddr(b))
	})
}

func benchmarkInsertBatch(b *testing.B, typ, addr string) {
	const batch = 256
	st, err := Open(typ, secret.New(addr))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	recs := series(batch)
	for i := range recs {
		recs[i].RequestBody = ""
		recs[i].Attempts = []Attempt{{Key: "k_0123456789abcdef", Upstream: "openai", Outcome: "ok", Status: 200}}
	}
	ctx := context.Background()
	if err := st.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		// Time moves on, as it does for the writer: new rows go to the
		// end of the time indexes.
		for i := range recs {
			recs[i].Time = recs[i].Time.Add(batch * time.Second)
		}
		if err := st.Insert(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/record")
}

func ExampleOpen() {
	st, err := Open(TypeSQLite, secret.New(":memory:"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	ctx := context.Background()
	start := time.Date(2026, 11, 22, 2, 0, 0, 0, time.UTC)
	err = st.Insert(ctx, []Record{
		{Time: start, Model: "gpt-4o-mini", Status: 200, InputTokens: 12, OutputTokens: 30},
		{Time: start.Add(time.Minute), Model: "gpt-4o-mini", Status: 429, Error: "rate_limited"},
		{Time: start.Add(2 * time.Minute), Model: "gpt-4o", Status: 200, InputTokens: 7, OutputTokens: 9},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	groups, err := st.Aggregate(ctx, Query{Since: start}, ByModel)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, g := range groups {
		fmt.Println(g.Group, g.Requests, g.Errors, g.InputTokens, g.OutputTokens)
	}
	// Output:
	// gpt-4o-mini 2 1 12 30
	// gpt-4o 1 0 7 9
}

// TestAppendAttempts: the hand-written encoder writes what encoding/json
// does, for every kind of string.
func TestAppendAttempts(t *testing.T) {
	for _, s := range []string{"", "kp_0123456789abcdef", `q"uo\te`, "ctl\x00\x1f\n", "<&>", "héllo ✓", "bad\xffutf8", "\u2028\u2029", "\U0001F600"} {
		as := []Attempt{{Key: s, Upstream: s, Outcome: s, Status: 429}, {Key: "k", Status: -1}}
		want, err := json.Marshal(as)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendAttempts(nil, as); string(got) != string(want) {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
	}
}

func FuzzAppendAttempts(f *testing.F) {
	f.Add("kp_1", "main", "success", 200)
	f.Add("\xff\x00\"", "\u2028", "<>", -5)
	f.Fuzz(func(t *testing.T, key, upstream, outcome string, status int) {
		as := []Attempt{{Key: key, Upstream: upstream, Outcome: outcome, Status: status}}
		want, _ := json.Marshal(as)
		if got := appendAttempts(nil, as); string(got) != string(want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}
