package metrics_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/metrics"
)

func newMetrics(t *testing.T, snapshot func() []keypool.KeyInfo) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, snapshot)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func TestAttempt(t *testing.T) {
	m, reg := newMetrics(t, nil)
	// One request: a rate-limited attempt on "a", then a success on "b".
	m.Attempt(keypool.AttemptEvent{Request: 1, Attempt: 1, Key: "kp_1", Upstream: "a", Model: "gpt-4o-2024-08-06",
		Status: 429, Outcome: keypool.OutcomeRateLimited, TimeToHeaders: 20 * time.Millisecond, Duration: 20 * time.Millisecond})
	m.Attempt(keypool.AttemptEvent{Request: 1, Attempt: 2, Key: "kp_2", Upstream: "b", Model: "gpt-4o-2024-08-06", Stream: true,
		Status: 200, Outcome: keypool.OutcomeSuccess, TimeToHeaders: 30 * time.Millisecond, Duration: 2 * time.Second, Final: true,
		Usage: keypool.Usage{InputTokens: 10, OutputTokens: 6, CachedTokens: 4}})
	// Another: no response at all, and it is final (the caller went away).
	m.Attempt(keypool.AttemptEvent{Request: 2, Attempt: 1, Key: "kp_1", Upstream: "a", Model: "gpt-4o",
		Outcome: keypool.OutcomeCancelled, Duration: time.Second, Final: true})
	m.StateChange(keypool.StateEvent{Key: "kp_1", Upstream: "a", From: keypool.StateReady, To: keypool.StateCooling})
	m.StateChange(keypool.StateEvent{Key: "kp_1", Upstream: "a", From: keypool.StateCooling, To: keypool.StateReady})
	// Heard from another replica: counted there, not here.
	m.StateChange(keypool.StateEvent{Key: "kp_2", Upstream: "a", From: keypool.StateReady, To: keypool.StateRevoked, Heard: true})

	want := `
# HELP keypool_requests_total Requests answered through the pool, by the upstream, model, status and outcome of their final attempt (status 0: no response).
# TYPE keypool_requests_total counter
keypool_requests_total{model="gpt-4o",outcome="cancelled",status="0",upstream="a"} 1
keypool_requests_total{model="gpt-4o-2024-08-06",outcome="success",status="200",upstream="b"} 1
# HELP keypool_attempts_total Attempts sent upstream, final or not, by upstream and outcome.
# TYPE keypool_attempts_total counter
keypool_attempts_total{outcome="cancelled",upstream="a"} 1
keypool_attempts_total{outcome="rate_limited",upstream="a"} 1
keypool_attempts_total{outcome="success",upstream="b"} 1
# HELP keypool_failovers_total Attempts whose answer was not handed back (another key or upstream was tried, or the request gave up), by upstream and outcome.
# TYPE keypool_failovers_total counter
keypool_failovers_total{outcome="rate_limited",upstream="a"} 1
# HELP keypool_tokens_total Tokens the upstreams reported as used, by model family and kind (input, output, cached, reasoning).
# TYPE keypool_tokens_total counter
keypool_tokens_total{family="gpt-4o",kind="cached"} 4
keypool_tokens_total{family="gpt-4o",kind="input"} 10
keypool_tokens_total{family="gpt-4o",kind="output"} 6
# HELP keypool_key_state_changes_total Changes of a key's state made by this replica (those heard from others are counted there), by upstream and the state changed to.
# TYPE keypool_key_state_changes_total counter
keypool_key_state_changes_total{to="cooling",upstream="a"} 1
keypool_key_state_changes_total{to="ready",upstream="a"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"keypool_requests_total", "keypool_attempts_total", "keypool_failovers_total",
		"keypool_tokens_total", "keypool_key_state_changes_total"); err != nil {
		t.Error(err)
	}

	// Histograms: durations of final attempts only; time to first byte of
	// every attempt that got a response, by stream.
	for _, tc := range []struct {
		name  string
		count int
	}{
		{"keypool_request_duration_seconds", 2},   // upstreams a and b
		{"keypool_time_to_first_byte_seconds", 2}, // a/false and b/true
	} {
		if n, err := testutil.GatherAndCount(reg, tc.name); err != nil || n != tc.count {
			t.Errorf("%s: %d series (%v), want %d", tc.name, n, err, tc.count)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "keypool_request_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			h := mt.GetHistogram()
			if h.GetSampleCount() != 1 {
				t.Errorf("duration %v: %d samples", mt.GetLabel(), h.GetSampleCount())
			}
			if up := mt.GetLabel()[0].GetValue(); up == "b" && h.GetSampleSum() != 2 {
				t.Errorf("duration of b = %v, want 2", h.GetSampleSum())
			}
		}
	}
}

func TestSnapshot(t *testing.T) {
	snapshot := func() []keypool.KeyInfo {
		return []keypool.KeyInfo{
			{ID: "kp_00000000000000a1", Upstream: "openai", State: keypool.StateReady, InFlight: 2,
				Limits: []keypool.ModelLimits{
					{Model: "gpt-4o", LimitRequests: 500, RemainingRequests: 499, LimitTokens: 30000, RemainingTokens: 29000},
					{Model: "o3", LimitRequests: keypool.Unknown, RemainingRequests: keypool.Unknown, LimitTokens: 100, RemainingTokens: 0},
				}},
			{ID: "kp_00000000000000a2", Upstream: "openai", State: keypool.StateRevoked},
			{ID: "kp_00000000000000b1", Upstream: "azure", State: keypool.StateCooling, InFlight: 1},
		}
	}
	_, reg := newMetrics(t, snapshot)
	want := `
# HELP keypool_key_in_flight Requests in flight on a key, by key ID.
# TYPE keypool_key_in_flight gauge
keypool_key_in_flight{key="kp_00000000000000a1",upstream="openai"} 2
keypool_key_in_flight{key="kp_00000000000000a2",upstream="openai"} 0
keypool_key_in_flight{key="kp_00000000000000b1",upstream="azure"} 1
# HELP keypool_key_remaining_requests Estimated requests a key has left for a model before its limit resets; only when known.
# TYPE keypool_key_remaining_requests gauge
keypool_key_remaining_requests{key="kp_00000000000000a1",model="gpt-4o",upstream="openai"} 499
# HELP keypool_key_remaining_tokens Estimated tokens a key has left for a model before its limit resets; only when known.
# TYPE keypool_key_remaining_tokens gauge
keypool_key_remaining_tokens{key="kp_00000000000000a1",model="gpt-4o",upstream="openai"} 29000
keypool_key_remaining_tokens{key="kp_00000000000000a1",model="o3",upstream="openai"} 0
# HELP keypool_keys Keys in the pool, by upstream and state.
# TYPE keypool_keys gauge
keypool_keys{state="cooling",upstream="azure"} 1
keypool_keys{state="disabled",upstream="azure"} 0
keypool_keys{state="over_quota",upstream="azure"} 0
keypool_keys{state="ready",upstream="azure"} 0
keypool_keys{state="revoked",upstream="azure"} 0
keypool_keys{state="unchecked",upstream="azure"} 0
keypool_keys{state="cooling",upstream="openai"} 0
keypool_keys{state="disabled",upstream="openai"} 0
keypool_keys{state="over_quota",upstream="openai"} 0
keypool_keys{state="ready",upstream="openai"} 1
keypool_keys{state="revoked",upstream="openai"} 1
keypool_keys{state="unchecked",upstream="openai"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"keypool_keys", "keypool_key_in_flight", "keypool_key_remaining_requests", "keypool_key_remaining_tokens"); err != nil {
		t.Error(err)
	}
}

func TestModelLabelCap(t *testing.T) {
	m, reg := newMetrics(t, nil)
	final := func(model string) keypool.AttemptEvent {
		return keypool.AttemptEvent{Upstream: "u", Model: model, Status: 200, Outcome: keypool.OutcomeSuccess, Final: true,
			Usage: keypool.Usage{InputTokens: 1}}
	}
	const extra = 50
	for i := range metrics.MaxModelLabels + extra {
		m.Attempt(final(fmt.Sprintf("client-model-%d", i)))
	}
	// Admitted names keep their label after the cap is reached.
	m.Attempt(final("client-model-0"))
	// Names no label may hold are "other" at once.
	m.Attempt(final("bad-\xff-utf8"))
	m.Attempt(final(strings.Repeat("x", 1000)))

	if n, err := testutil.GatherAndCount(reg, "keypool_requests_total"); err != nil || n != metrics.MaxModelLabels+1 {
		t.Errorf("requests_total: %d series (%v), want %d", n, err, metrics.MaxModelLabels+1)
	}
	// Unknown models are families of their own: the family label is capped too.
	if n, err := testutil.GatherAndCount(reg, "keypool_tokens_total"); err != nil || n != metrics.MaxModelLabels+1 {
		t.Errorf("tokens_total: %d series (%v), want %d", n, err, metrics.MaxModelLabels+1)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "keypool_requests_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "model" {
					got[l.GetValue()] = mt.GetCounter().GetValue()
				}
			}
		}
	}
	if got["client-model-0"] != 2 || got[metrics.OtherLabel] != extra+2 {
		t.Errorf("client-model-0 = %v, other = %v; want 2, %d", got["client-model-0"], got[metrics.OtherLabel], extra+2)
	}
}

func TestConcurrentUse(t *testing.T) {
	snapshot := func() []keypool.KeyInfo {
		return []keypool.KeyInfo{{ID: "kp_1", Upstream: "u", State: keypool.StateReady}}
	}
	m, reg := newMetrics(t, snapshot)
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				m.Attempt(keypool.AttemptEvent{Upstream: "u", Model: fmt.Sprintf("m-%d-%d", w, i%150), Status: 200,
					Outcome: keypool.OutcomeSuccess, Final: i%2 == 0, Usage: keypool.Usage{OutputTokens: 1}})
				m.StateChange(keypool.StateEvent{Upstream: "u", To: keypool.StateReady})
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()

	if n, err := testutil.GatherAndCount(reg, "keypool_requests_total"); err != nil || n > metrics.MaxModelLabels+1 {
		t.Errorf("requests_total: %d series (%v), want at most %d", n, err, metrics.MaxModelLabels+1)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			sums[mf.GetName()] += mt.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"keypool_attempts_total":          workers * each,
		"keypool_requests_total":          workers * each / 2,
		"keypool_failovers_total":         workers * each / 2,
		"keypool_tokens_total":            workers * each / 2,
		"keypool_key_state_changes_total": workers * each,
	} {
		if sums[name] != want {
			t.Errorf("%s = %v, want %v", name, sums[name], want)
		}
	}
}

func TestNew(t *testing.T) {
	if _, err := metrics.New(nil, nil); err == nil {
		t.Error("nil registerer: no error")
	}
	reg := prometheus.NewRegistry()
	if _, err := metrics.New(reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg, nil); err == nil || !strings.HasPrefix(err.Error(), "metrics: ") {
		t.Errorf("second registration: %v", err)
	}
}

func TestNewRegistry(t *testing.T) {
	reg := metrics.NewRegistry()
	if _, err := metrics.New(reg, func() []keypool.KeyInfo { return nil }); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != 1 {
			t.Errorf("%s: %d series (%v)", name, n, err)
		}
	}
}

// TestEndToEnd runs a real transport against the fake upstream, scrapes the
// handler, and checks the series are there and no secret is.
func TestEndToEnd(t *testing.T) {
	const good, bad = "sk-proj-metricsgood0123456789", "sk-proj-metricsrevoked987654321"
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: good}, fakeopenai.Key{Secret: bad, Behavior: fakeopenai.Revoked})

	reg := metrics.NewRegistry()
	var tr *keypool.Transport
	m, err := metrics.New(reg, func() []keypool.KeyInfo { return tr.Snapshot() })
	if err != nil {
		t.Fatal(err)
	}
	tr, err = keypool.New(keypool.WithUpstream(base, good+","+bad), keypool.WithObserver(m))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: tr}
	for _, body := range []string{
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
	} {
		resp, err := client.Post("http://keypool.invalid/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}

	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	text, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	exposition := string(text)

	keys := tr.Snapshot()
	if len(keys) != 2 {
		t.Fatalf("%d keys", len(keys))
	}
	upstream := keys[0].Upstream
	var goodID keypool.KeyID // the key that answered; the pool may never have tried the other
	for _, k := range keys {
		if k.State == keypool.StateReady {
			goodID = k.ID
		}
	}
	for _, want := range []string{
		fmt.Sprintf(`keypool_requests_total{model="gpt-4o-mini",outcome="success",status="200",upstream=%q} 3`, upstream),
		fmt.Sprintf(`keypool_time_to_first_byte_seconds_count{stream="true",upstream=%q}`, upstream),
		fmt.Sprintf(`keypool_request_duration_seconds_count{upstream=%q} 3`, upstream),
		`keypool_tokens_total{family="gpt-4o-mini",kind="input"}`,
		`keypool_tokens_total{family="gpt-4o-mini",kind="output"}`,
		fmt.Sprintf(`keypool_key_in_flight{key=%q,upstream=%q} 0`, keys[0].ID, upstream),
		fmt.Sprintf(`keypool_key_in_flight{key=%q,upstream=%q} 0`, keys[1].ID, upstream),
		fmt.Sprintf(`keypool_key_remaining_requests{key=%q,model=`, goodID),
		fmt.Sprintf(`keypool_keys{state="ready",upstream=%q}`, upstream),
		"go_goroutines ",
	} {
		if !strings.Contains(exposition, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	for _, secret := range []string{"sk-", good, bad, good[len(good)-8:], bad[len(bad)-8:]} {
		if strings.Contains(exposition, secret) {
			t.Errorf("exposition contains %q", secret)
		}
	}
}
