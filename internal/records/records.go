// Package records keeps one row per client request of the proxy in SQLite
// (the embedded default, pure Go) or PostgreSQL, and reads them back for
// `keypool records`; and, in the same database, the state of each key, so
// that keypool serve starts again from what it knew (StateStore).
//
// A record is built from the request's own observer hooks (keypool's
// AttemptEvent), never by code inside the transport, and goes through a
// bounded queue to a Writer that inserts in batches: the request path never
// waits for the store. A record holds key IDs and client token IDs, never a
// key or a token; request and response bodies only when the operator turns
// them on, cut at a size cap, and headers never.
package records

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keypool/keypool"
)

// Record is one client request as the proxy saw it.
type Record struct {
	// ID is the store's row number; 0 until stored.
	ID int64 `json:"id"`
	// Time is when the request arrived.
	Time time.Time `json:"time"`
	// Client is the client token's ID ("ct_" + 16 hex digits), or "" for a
	// request without a valid token. Never the token.
	Client string `json:"client,omitempty"`
	IP     string `json:"ip"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Model  string `json:"model,omitempty"`
	Stream bool   `json:"stream"`
	// Upstream and Key served the answer handed back (the last attempt);
	// empty when no attempt was made.
	Upstream string    `json:"upstream,omitempty"`
	Key      string    `json:"key,omitempty"`
	Attempts []Attempt `json:"attempts,omitempty"`
	// Status is what the client got: the upstream's status, or the proxy's
	// own (401, 413, 429, 503…). 0 when the client went away first.
	Status int `json:"status"`
	// TTFB runs from arrival until the status line went to the client;
	// Duration until the response was written to the end.
	TTFB     time.Duration `json:"ttfb"`
	Duration time.Duration `json:"duration"`

	InputTokens     int64 `json:"input_tokens"`
	OutputTokens    int64 `json:"output_tokens"`
	CachedTokens    int64 `json:"cached_tokens"`
	ReasoningTokens int64 `json:"reasoning_tokens"`

	// Error is the class of a failed request ("" for success): an outcome
	// name such as "rate_limited" or "server_error", or one of the proxy's
	// own: "unauthorized", "too_large", "no_key", "cancelled", "proxy_error".
	Error string `json:"error,omitempty"`

	// RequestBody and ResponseBody are kept only when the operator turns
	// bodies on, each cut at the configured cap.
	RequestBody  string `json:"request_body,omitempty"`
	ResponseBody string `json:"response_body,omitempty"`
}

// Attempt is one attempt of a request: which key, and what came of it.
type Attempt struct {
	Key      string `json:"key"`
	Upstream string `json:"upstream"`
	Outcome  string `json:"outcome"`
	Status   int    `json:"status"`
}

// Query selects records: those at or after Since and before Until (zero
// times are open ends), newest first, at most Limit of them (0: 100).
// Filters that are empty match everything.
type Query struct {
	Since, Until time.Time
	Limit        int
	Key          string
	Model        string
	Client       string
	Upstream     string
	Status       int
}

// GroupBy names what Aggregate groups by.
type GroupBy string

const (
	ByKey      GroupBy = "key"
	ByModel    GroupBy = "model"
	ByStatus   GroupBy = "status"
	ByClient   GroupBy = "client"
	ByUpstream GroupBy = "upstream"
	ByError    GroupBy = "error"
	// ByMinute, ByHour and ByDay group by the time window the request
	// arrived in (UTC).
	ByMinute GroupBy = "minute"
	ByHour   GroupBy = "hour"
	ByDay    GroupBy = "day"
)

// GroupBys lists every GroupBy, in the order help texts show them.
var GroupBys = []GroupBy{ByKey, ByModel, ByStatus, ByClient, ByUpstream, ByError, ByMinute, ByHour, ByDay}

// ParseGroupBy returns the GroupBy named s, or an error that lists them.
func ParseGroupBy(s string) (GroupBy, error) {
	for _, g := range GroupBys {
		if string(g) == s {
			return g, nil
		}
	}
	return "", fmt.Errorf("records: cannot group by %q (want one of key, model, status, client, upstream, error, minute, hour, day)", s)
}

// Group is one row of an aggregate: the requests of one group among the
// records a Query selects (its Limit is ignored).
type Group struct {
	// Group is the value grouped by: a key ID, a model, a status as
	// decimal, a client ID, an upstream, an error class, or the start of
	// the minute, hour or day as RFC 3339.
	Group    string `json:"group"`
	Requests int64  `json:"requests"`
	// Errors counts requests with an Error class.
	Errors          int64         `json:"errors"`
	InputTokens     int64         `json:"input_tokens"`
	OutputTokens    int64         `json:"output_tokens"`
	CachedTokens    int64         `json:"cached_tokens"`
	ReasoningTokens int64         `json:"reasoning_tokens"`
	AvgDuration     time.Duration `json:"avg_duration"`
	AvgTTFB         time.Duration `json:"avg_ttfb"`
}

// Store keeps records, and key states. Its methods are safe for simultaneous
// use.
type Store interface {
	// Insert stores the records in one transaction: all or none.
	Insert(ctx context.Context, recs []Record) error
	// Recent returns the records q selects, newest first.
	Recent(ctx context.Context, q Query) ([]Record, error)
	// Aggregate groups the records q selects, the largest groups first
	// (time windows: the newest first).
	Aggregate(ctx context.Context, q Query, by GroupBy) ([]Group, error)
	// Prune deletes the records from before before, in chunks, and returns
	// how many it deleted.
	Prune(ctx context.Context, before time.Time) (int64, error)
	// SaveKeyStates stores the key states in one transaction, all or none:
	// one row per key ID, where a state replaces the stored one unless that
	// one is newer (a later Updated).
	SaveKeyStates(ctx context.Context, states []keypool.KeyState) error
	// LoadKeyStates returns every key state stored, by key ID. A row that
	// does not decode as one (another program's, or a format this keypool
	// does not know) is left out and named in skipped, instead of failing
	// the load.
	LoadKeyStates(ctx context.Context) (states []keypool.KeyState, skipped []error, err error)
	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
	Close() error
}

// Types of store, as the config's dbtype names them.
const (
	TypeSQLite   = "sqlite"
	TypePostgres = "postgres"
	TypeNone     = "none"
)

// DefaultSQLiteFile is the SQLite file of a config that names none, as in
// openai-api-route.
const DefaultSQLiteFile = "./db.sqlite"

// ErrNone is what Open returns for dbtype none: records are off.
var ErrNone = errors.New("records: dbtype is none")
