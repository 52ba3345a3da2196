package metrics

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keypool/keypool"
)

const namespace = "keypool"

// Metrics is a keypool.Observer that feeds Prometheus collectors, plus a
// collector that reads the pool's snapshot at scrape time.
//
// Build one with [New], which registers everything, and pass it to
// keypool.WithObserver; serve the registry with [Handler]. Attempt and
// StateChange only update counters and histograms: they never block. A
// Metrics is safe for simultaneous use by multiple goroutines.
//
// Series, all prefixed keypool_:
//
//	requests_total{upstream,model,status,outcome}    one per request: its final attempt
//	attempts_total{upstream,outcome}                  every attempt
//	failovers_total{upstream,outcome}                 attempts given up for another one
//	request_duration_seconds{upstream}                final attempts, until the body ended
//	time_to_first_byte_seconds{upstream,stream}       every attempt that got headers
//	tokens_total{family,kind}                         kind: input, output, cached, reasoning
//	key_state_changes_total{upstream,to}
//	keys{upstream,state}                              at scrape time
//	key_in_flight{key,upstream}                       at scrape time
//	key_remaining_requests{key,upstream,model}        at scrape time, when known
//	key_remaining_tokens{key,upstream,model}          at scrape time, when known
//	key_scope{key,upstream,scope}                     at scrape time: 1, naming the budget the key spends
//
// The model and family labels are capped at [MaxModelLabels] values each.
// requests_total counts only what went through the pool; the answers the
// proxy makes itself (401, 403, 404, 413, 429 and 503 without a key) are
// in proxy_answers_total, with every other answer, by client ([RegisterProxy]).
type Metrics struct {
	models   *labelCap
	families *labelCap

	requests     *prometheus.CounterVec
	attempts     *prometheus.CounterVec
	failovers    *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	ttfb         *prometheus.HistogramVec
	tokens       *prometheus.CounterVec
	stateChanges *prometheus.CounterVec
}

// New builds a Metrics and registers its collectors with reg. snapshot is
// called at each scrape for the per-key series (usually a
// keypool.Transport's Snapshot method); nil leaves them out. New registers
// no Go runtime or process collectors: pass a registry from [NewRegistry]
// for those. It fails when reg already holds a collector of the same names.
func New(reg prometheus.Registerer, snapshot func() []keypool.KeyInfo) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil registerer")
	}
	m := &Metrics{
		models:   newLabelCap(MaxModelLabels),
		families: newLabelCap(MaxModelLabels),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "Requests answered through the pool, by the upstream, model, status and outcome of their final attempt (status 0: no response).",
		}, []string{"upstream", "model", "status", "outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "attempts_total",
			Help: "Attempts sent upstream, final or not, by upstream and outcome.",
		}, []string{"upstream", "outcome"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "failovers_total",
			Help: "Attempts whose answer was not handed back (another key or upstream was tried, or the request gave up), by upstream and outcome.",
		}, []string{"upstream", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Duration of final attempts, until their body was read to the end or closed.",
			Buckets: prometheus.ExponentialBuckets(0.025, 2, 13), // 25ms to ~100s: completions run long
		}, []string{"upstream"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "time_to_first_byte_seconds",
			Help:    "Time until response headers (for a stream, its first event) arrived, per attempt that got a response.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 13), // 5ms to ~20s
		}, []string{"upstream", "stream"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "tokens_total",
			Help: "Tokens the upstreams reported as used, by model family and kind (input, output, cached, reasoning).",
		}, []string{"family", "kind"}),
		stateChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "key_state_changes_total",
			Help: "Changes of a key's state made by this replica (those heard from others are counted there), by upstream and the state changed to.",
		}, []string{"upstream", "to"}),
	}
	cs := []prometheus.Collector{m.requests, m.attempts, m.failovers, m.duration, m.ttfb, m.tokens, m.stateChanges}
	if snapshot != nil {
		cs = append(cs, newSnapshotCollector(snapshot))
	}
	if err := register(reg, cs...); err != nil {
		return nil, err
	}
	return m, nil
}

// NewRegistry returns a fresh registry with the Go runtime and process
// collectors already registered, ready for [New] and [Handler].
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the metrics g gathers in the Prometheus exposition format.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// Attempt counts one attempt; see [Metrics] for the series it feeds.
func (m *Metrics) Attempt(e keypool.AttemptEvent) {
	outcome := e.Outcome.String()
	m.attempts.WithLabelValues(e.Upstream, outcome).Inc()
	if e.Status != 0 {
		m.ttfb.WithLabelValues(e.Upstream, strconv.FormatBool(e.Stream)).Observe(e.TimeToHeaders.Seconds())
	}
	if !e.Final {
		m.failovers.WithLabelValues(e.Upstream, outcome).Inc()
		return
	}
	m.requests.WithLabelValues(e.Upstream, m.models.value(e.Model), strconv.Itoa(e.Status), outcome).Inc()
	m.duration.WithLabelValues(e.Upstream).Observe(e.Duration.Seconds())
	m.addTokens(e.Model, e.Usage)
}

// addTokens counts the usage of a final attempt; kinds with no tokens create
// no series.
func (m *Metrics) addTokens(model string, u keypool.Usage) {
	if u == (keypool.Usage{}) {
		return
	}
	family := m.families.value(keypool.ModelFamily(model))
	for _, k := range [...]struct {
		kind string
		n    int64
	}{
		{"input", u.InputTokens},
		{"output", u.OutputTokens},
		{"cached", u.CachedTokens},
		{"reasoning", u.ReasoningTokens},
	} {
		if k.n > 0 {
			m.tokens.WithLabelValues(family, k.kind).Add(float64(k.n))
		}
	}
}

// StateChange counts one change of a key's state made here: one heard
// from another replica is counted there, so that the sum over replicas
// counts each change once.
func (m *Metrics) StateChange(e keypool.StateEvent) {
	if e.Heard {
		return
	}
	m.stateChanges.WithLabelValues(e.Upstream, e.To.String()).Inc()
}

// Checked ignores check results: the state changes they make are counted by
// StateChange.
func (m *Metrics) Checked(keypool.CheckResult) {}

var _ keypool.Observer = (*Metrics)(nil)
