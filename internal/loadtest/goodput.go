package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"text/tabwriter"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
)

// goodputModel is the model every client asks for (chatBody's).
const goodputModel = "gpt-4o-mini"

// GoodputConfig is one run of the goodput harness, which measures how much
// of the upstream's rate-limit capacity the pool turns into served
// requests. For every kind of limit (continuous, windowed, shared-org,
// daily) and every load it drives the proxy, wired as keypool serve wires
// it, with clients that send at a steady rate against the fake upstream, in
// fake time. The zero value runs the defaults.
type GoodputConfig struct {
	// Keys is how many keys each kind has; 0 means 4.
	Keys int
	// Limit and Window size each key's request budget (the organization's,
	// for shared-org): Limit requests per Window. 0 means 10 per minute.
	// The fake's continuous buckets refill per minute only (RPM), so another
	// Window makes the continuous kinds n/a. The daily kind's window is a
	// day, whatever Window says. A Limit of 250 or less makes the pool take
	// the keys for trials (the seed's rule), which matters once a recheck
	// meets a drained key.
	Limit  int
	Window time.Duration
	// Windows is how many of its kind's windows the clients send for: 5
	// minutes, or 5 days for daily, when 0.
	Windows int
	// Patience is how long a client waits for an answer before it gives up;
	// 0 means 30s.
	Patience time.Duration
	// Retries is how often a client tries a request again, as the OpenAI
	// SDKs do (2 by default): after a 408, 409, 429 or 5xx that does not
	// say x-should-retry: false, waiting retry-after-ms or Retry-After
	// when the answer gives one of up to 60 s, else the SDKs' backoff. 0
	// means 2; negative, none.
	Retries int
	// Loads are the offered loads, as multiples of the capacity over the
	// clients' sending time; nil means 1.2 and 0.8.
	Loads []float64
	// Kinds names the kinds to run; nil means all of them.
	Kinds []string
	// Poisson sends at exponentially distributed gaps drawn from Seed;
	// false sends evenly spaced.
	Poisson bool
	Seed    uint64
	// Logger gets the logs of the transport, the proxy and the checker; nil
	// means silent. Observer hears the pool's attempts and key state
	// changes (keypool.WithObserver), as serve's metrics do; nil means none.
	Logger   *slog.Logger
	Observer keypool.Observer
}

func (c GoodputConfig) withDefaults() GoodputConfig {
	if c.Keys <= 0 {
		c.Keys = 4
	}
	if c.Limit <= 0 {
		c.Limit = 10
	}
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	if c.Windows <= 0 {
		c.Windows = 5
	}
	if c.Retries == 0 {
		c.Retries = 2
	}
	c.Retries = max(c.Retries, 0)
	if c.Patience <= 0 {
		c.Patience = 30 * time.Second
	}
	if c.Loads == nil {
		c.Loads = []float64{1.2, 0.8}
	}
	return c
}

// GoodputRow is what one kind of limit did under one load. When NA is set
// the kind could not run against this fake, and the numbers are zero.
type GoodputRow struct {
	Kind string
	Load float64
	NA   string

	// Span is the run: from its start (the first requests, and the
	// checker's first look at the keys) to the end of the last request
	// (answered, refused or given up).
	Span time.Duration
	// Capacity is what the upstream's limits allowed over Span. Ideal is
	// how many of the requests sent a perfect pool could have served: one
	// that spends every budget as soon as a request waits for it, and lets
	// requests wait as long as their clients do (see limitPlan.ideal).
	Capacity float64
	Ideal    int
	// Budgets is how many independent budgets the keys spend: one per key,
	// or one for an organization's keys.
	Budgets int

	Sent   int // requests the clients sent
	Served int // answered 2xx
	// Refused counts the proxy's answers that were not 2xx, by status in
	// RefusedBy; RetryAfter those of them with a Retry-After header.
	Refused    int
	RetryAfter int
	RefusedBy  map[int]int
	// GaveUp counts the requests whose client stopped waiting (Patience).
	GaveUp int

	// Attempts counts the requests the upstream got for the clients' model
	// (the checker's probes are not counted), Upstream429 those it refused
	// with 429, and Spent those it served in full.
	Attempts, Upstream429, Spent int

	// P50 and P99 are the waits of the served requests: from sending to
	// the whole answer.
	P50, P99 time.Duration

	// KeysAtEnd counts the pool's keys by state (keypool.State's names)
	// once the last request ended.
	KeysAtEnd map[string]int
}

// ServedShare is Served ÷ Capacity.
func (r GoodputRow) ServedShare() float64 { return ratio(float64(r.Served), r.Capacity) }

// IdealShare is Served ÷ Ideal: 1 for a pool that wastes nothing.
func (r GoodputRow) IdealShare() float64 { return ratio(float64(r.Served), float64(r.Ideal)) }

// Upstream429Share is Upstream429 ÷ Attempts.
func (r GoodputRow) Upstream429Share() float64 {
	return ratio(float64(r.Upstream429), float64(r.Attempts))
}

// GoodputTable is a goodput run: its settings, defaults filled in, and one
// row per kind and load.
type GoodputTable struct {
	Config GoodputConfig
	Rows   []GoodputRow
}

// RetryAfter reports how many refusals of the table carried Retry-After,
// out of how many refusals.
func (t GoodputTable) RetryAfter() (with, refused int) {
	for _, r := range t.Rows {
		with += r.RetryAfter
		refused += r.Refused
	}
	return with, refused
}

// Goodput runs every kind of cfg at every load, each in a testing/synctest
// bubble of its own, and returns the table. In a bubble time is fake: days
// of traffic take a second or two, and the numbers do not depend on how
// busy the machine is. Call it from a test, outside any bubble:
// synctest.Test needs t (Go 1.26 has no other way into a bubble). A harness
// that cannot start (an unknown kind, a proxy that does not build) fails t.
func Goodput(t *testing.T, cfg GoodputConfig) GoodputTable {
	t.Helper()
	cfg = cfg.withDefaults()
	for _, name := range cfg.Kinds {
		if !slices.ContainsFunc(limitKinds(), func(k limitKind) bool { return k.name == name }) {
			t.Fatalf("loadtest: goodput: unknown kind %q", name)
		}
	}
	table := GoodputTable{Config: cfg}
	for _, kind := range limitKinds() {
		if cfg.Kinds != nil && !slices.Contains(cfg.Kinds, kind.name) {
			continue
		}
		plan, na := kind.setup(cfg)
		for _, load := range cfg.Loads {
			row := GoodputRow{Kind: kind.name, Load: load, NA: na}
			if na == "" {
				synctest.Test(t, func(t *testing.T) { row = runGoodput(t, cfg, plan, row) })
			}
			table.Rows = append(table.Rows, row)
		}
	}
	return table
}

// runGoodput runs one kind at one load; call it inside a synctest bubble.
func runGoodput(t *testing.T, cfg GoodputConfig, plan limitPlan, row GoodputRow) GoodputRow {
	fake := fakeopenai.New(fakeopenai.Config{}, plan.keys...)
	pipe, closePipe := fakeopenai.ServePipe(fake)
	defer closePipe()
	defer fake.Close()
	proxy, err := newGoodputProxy(plan.keys, pipe, cfg.Logger, cfg.Observer)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.stop()

	sending := time.Duration(cfg.Windows) * plan.window
	arrivals := arrivalTimes(sending, int(math.Round(row.Load*plan.capacity(sending))), cfg.Poisson, cfg.Seed)
	results := make([]clientResult, len(arrivals))
	var wg sync.WaitGroup
	start := time.Now()
	for i, at := range arrivals {
		time.Sleep(time.Until(start.Add(at)))
		wg.Go(func() { results[i] = sendChat(t.Context(), proxy.handler, cfg.Patience, cfg.Retries) })
	}
	wg.Wait()
	row.Span = time.Since(start)
	row.KeysAtEnd = map[string]int{}
	for _, k := range proxy.transport.Snapshot() {
		row.KeysAtEnd[k.State.String()]++
	}
	row.Capacity = plan.capacity(row.Span)
	row.Budgets = plan.budgets
	row.Ideal = plan.ideal(arrivals, cfg.Patience)

	row.Sent = len(results)
	row.RefusedBy = map[int]int{}
	var waits []time.Duration
	for _, r := range results {
		switch {
		case r.status >= 200 && r.status < 300:
			row.Served++
			waits = append(waits, r.wait)
		case r.gaveUp:
			row.GaveUp++
		default:
			row.Refused++
			row.RefusedBy[r.status]++
			if r.retryAfter {
				row.RetryAfter++
			}
		}
	}
	row.P50, row.P99 = percentiles(waits)
	for _, rec := range fake.Records() {
		if rec.Path != "/v1/chat/completions" || rec.Model != goodputModel {
			continue // the checker's probes
		}
		row.Attempts++
		if rec.Status == http.StatusTooManyRequests {
			row.Upstream429++
		}
		if rec.Spent {
			row.Spent++
		}
	}
	return row
}

// arrivalTimes returns when each of n requests is sent, as offsets into
// sending: evenly spaced, or at exponential gaps of the same mean drawn from
// seed (then about n requests, all within sending).
func arrivalTimes(sending time.Duration, n int, poisson bool, seed uint64) []time.Duration {
	if n <= 0 {
		return nil
	}
	gap := sending / time.Duration(n)
	if !poisson {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(i) * gap
		}
		return out
	}
	rng := rand.New(rand.NewPCG(seed, 0x676f6f64707574)) // "goodput"
	var out []time.Duration
	for at := time.Duration(rng.ExpFloat64() * float64(gap)); at < sending; at += time.Duration(rng.ExpFloat64() * float64(gap)) {
		out = append(out, at)
	}
	return out
}

// goodputProxy is the proxy under measure: its handler, the transport
// behind it, and stop, which stops its parts (the checker) and closes the
// transport's connections.
type goodputProxy struct {
	handler   http.Handler
	transport *keypool.Transport
	stop      func()
}

// newGoodputProxy builds the proxy as keypool serve does, with app.New: a
// config with a client token and one upstream of keys, and the key checker
// running. Only the base transport (the fake's pipe), the logger and the
// observer differ; request records, which change no answer, are off, and
// the handler is called without a listener.
func newGoodputProxy(keys []fakeopenai.Key, base http.RoundTripper, logger *slog.Logger, obs keypool.Observer) (*goodputProxy, error) {
	creds := make([]keypool.Key, len(keys))
	for i, k := range keys {
		creds[i] = keypool.NewKey(k.Secret)
	}
	cfg := &config.Config{
		Authorization: []secret.String{secret.New(clientToken)},
		Upstream:      []config.Upstream{{Endpoint: fakeopenai.PipeBaseURL, Keys: creds}},
		DBType:        "none",
	}
	a, err := app.New(cfg, app.Options{Logger: logger, Transport: []keypool.Option{keypool.WithObserver(obs), keypool.WithBase(base)}})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		a.Run(ctx, nil)
	}()
	return &goodputProxy{handler: a.Handler(), transport: a.Transport(), stop: func() {
		cancel()
		<-ran
	}}, nil
}

// clientResult is what one client request got (its last try).
type clientResult struct {
	status      int
	retryAfter  bool // the answer had Retry-After
	retryAfterD time.Duration
	shouldRetry string // x-should-retry
	gaveUp      bool   // the client stopped waiting before a 2xx answer
	wait        time.Duration
}

// sendChat sends one chat completion to the proxy's handler as an OpenAI
// SDK does: each try given up after patience, and tried again up to retries
// times after an answer the SDKs retry (see GoodputConfig.Retries).
func sendChat(ctx context.Context, proxy http.Handler, patience time.Duration, retries int) clientResult {
	start := time.Now()
	var r clientResult
	for try := 0; ; try++ {
		r = sendOnce(ctx, proxy, patience)
		r.wait = time.Since(start)
		wait, again := sdkRetry(r, try)
		if !again || try >= retries {
			return r
		}
		time.Sleep(wait)
	}
}

// sdkRetry says whether the OpenAI SDKs try an answer again, and after how
// long: retry-after-ms, else Retry-After, when 60 s or less; else their
// backoff (0.5 s doubling to 8 s; the SDKs add jitter).
func sdkRetry(r clientResult, try int) (time.Duration, bool) {
	if r.gaveUp || r.shouldRetry == "false" {
		return 0, false
	}
	switch s := r.status; {
	case r.shouldRetry == "true", s == 408, s == 409, s == 429, s >= 500:
	default:
		return 0, false
	}
	if r.retryAfterD > 0 && r.retryAfterD <= time.Minute {
		return r.retryAfterD, true
	}
	return min(500*time.Millisecond<<try, 8*time.Second), true
}

// sendOnce sends one chat completion to the proxy's handler as a client
// that gives up after patience.
func sendOnce(ctx context.Context, proxy http.Handler, patience time.Duration) clientResult {
	ctx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/chat/completions", bytes.NewReader(chatBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+clientToken)
	w := httptest.NewRecorder()
	proxy.ServeHTTP(w, req)
	h := w.Header()
	r := clientResult{status: w.Code, retryAfter: h.Get("Retry-After") != "", shouldRetry: h.Get("X-Should-Retry")}
	if ms, err := strconv.ParseFloat(h.Get("Retry-After-Ms"), 64); err == nil && ms > 0 {
		r.retryAfterD = time.Duration(ms * float64(time.Millisecond))
	} else if sec, err := strconv.ParseFloat(h.Get("Retry-After"), 64); err == nil && sec > 0 {
		r.retryAfterD = time.Duration(sec * float64(time.Second))
	}
	r.gaveUp = ctx.Err() != nil && (r.status < 200 || r.status >= 300)
	return r
}

// String renders the table as Print does.
func (t GoodputTable) String() string {
	var b strings.Builder
	t.Print(&b)
	return b.String()
}

// Print writes the table: one row per kind and load, then whether every
// refusal said when to come back.
func (t GoodputTable) Print(out io.Writer) {
	c := t.Config
	arrivals := "evenly spaced"
	if c.Poisson {
		arrivals = fmt.Sprintf("Poisson (seed %d)", c.Seed)
	}
	fmt.Fprintf(out, "goodput, in fake time: %d keys per kind, %d requests per %v each (shared-org: per organization; daily: per day);\n",
		c.Keys, c.Limit, c.Window)
	fmt.Fprintf(out, "clients send %s for %d windows (daily: %d days), give up a try after %v, and try again up to %d times as the OpenAI SDKs do.\n",
		arrivals, c.Windows, c.Windows, c.Patience, c.Retries)
	fmt.Fprintln(out, "capacity = what the upstream's limits allow from the first request to the end of the last;")
	fmt.Fprintln(out, "ideal = what a perfect pool could serve of the requests sent (every budget spent as soon as a request waits,")
	fmt.Fprintln(out, "each request waiting as long as its client); refused = answers of the proxy that are not 2xx.")
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tload\tsent\tserved\tcapacity\tserved/cap\tideal\tserved/ideal\tupstream 429/attempts\trefused\twith Retry-After\trefused by status\tgave up\tp50 wait\tp99 wait\tkeys at end\t")
	for _, r := range t.Rows {
		if r.NA != "" {
			fmt.Fprintf(tw, "%s\t%.1fx\tn/a\t\t\t\t\t\t\t\t\t\t\t\t\t\t\n", r.Kind, r.Load)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.1fx\t%d\t%d\t%.0f\t%.2f\t%d\t%.2f\t%d/%d = %.2f\t%d\t%d\t%s\t%d\t%v\t%v\t%s\t\n",
			r.Kind, r.Load, r.Sent, r.Served, r.Capacity, r.ServedShare(), r.Ideal, r.IdealShare(),
			r.Upstream429, r.Attempts, r.Upstream429Share(), r.Refused, r.RetryAfter, counts(r.RefusedBy),
			r.GaveUp, r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond), counts(r.KeysAtEnd))
	}
	tw.Flush()
	for _, r := range t.Rows {
		if r.NA != "" {
			fmt.Fprintf(out, "n/a %s %.1fx: %s\n", r.Kind, r.Load, r.NA)
		}
	}
	with, refused := t.RetryAfter()
	verdict := "yes"
	if with < refused {
		verdict = "NO"
	}
	fmt.Fprintf(out, "every refusal carried Retry-After: %s (%d of %d)\n", verdict, with, refused)
}

// counts renders counts as "429×12 503×3", in the order of their keys.
func counts[K int | string](m map[K]int) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%v×%d", s, m[s]))
	}
	return strings.Join(parts, " ")
}
