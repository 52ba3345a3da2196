package metrics

import (
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool"
)

// snapshotCollector reads the pool's snapshot at scrape time, so the key
// gauges are never stale and cost nothing between scrapes. Its model labels
// are the ones the pool tracks limits for, which keypool.WithMaxModels
// already bounds.
type snapshotCollector struct {
	snapshot          func() []keypool.KeyInfo
	keys              *prometheus.Desc
	inFlight          *prometheus.Desc
	remainingRequests *prometheus.Desc
	remainingTokens   *prometheus.Desc
	scope             *prometheus.Desc
}

func newSnapshotCollector(snapshot func() []keypool.KeyInfo) *snapshotCollector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "", n) }
	return &snapshotCollector{
		snapshot: snapshot,
		keys: prometheus.NewDesc(name("keys"),
			"Keys in the pool, by upstream and state.", []string{"upstream", "state"}, nil),
		inFlight: prometheus.NewDesc(name("key_in_flight"),
			"Requests in flight on a key, by key ID.", []string{"key", "upstream"}, nil),
		remainingRequests: prometheus.NewDesc(name("key_remaining_requests"),
			"Estimated requests a key has left for a model before its limit resets; only when known.",
			[]string{"key", "upstream", "model"}, nil),
		remainingTokens: prometheus.NewDesc(name("key_remaining_tokens"),
			"Estimated tokens a key has left for a model before its limit resets; only when known.",
			[]string{"key", "upstream", "model"}, nil),
		scope: prometheus.NewDesc(name("key_scope"),
			"Always 1: the scope (organization and project) whose rate-limit budget a key spends; \"\" while not known.",
			[]string{"key", "upstream", "scope"}, nil),
	}
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.keys
	ch <- c.inFlight
	ch <- c.remainingRequests
	ch <- c.remainingTokens
	ch <- c.scope
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	infos := c.snapshot()
	// Every state of every upstream is reported, zeros included, so a state
	// that empties shows 0 rather than vanishing.
	var upstreams []string
	byState := map[string]*keypool.Counts{}
	for _, k := range infos {
		counts := byState[k.Upstream]
		if counts == nil {
			counts = new(keypool.Counts)
			byState[k.Upstream] = counts
			upstreams = append(upstreams, k.Upstream)
		}
		counts.Add(k.State)
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(k.InFlight), string(k.ID), k.Upstream)
		if utf8.ValidString(k.Scope) {
			ch <- prometheus.MustNewConstMetric(c.scope, prometheus.GaugeValue, 1, string(k.ID), k.Upstream, k.Scope)
		}
		for _, l := range k.Limits {
			if !utf8.ValidString(l.Model) {
				continue // the Prometheus client refuses such a label value
			}
			if l.RemainingRequests >= 0 {
				ch <- prometheus.MustNewConstMetric(c.remainingRequests, prometheus.GaugeValue,
					float64(l.RemainingRequests), string(k.ID), k.Upstream, l.Model)
			}
			if l.RemainingTokens >= 0 {
				ch <- prometheus.MustNewConstMetric(c.remainingTokens, prometheus.GaugeValue,
					float64(l.RemainingTokens), string(k.ID), k.Upstream, l.Model)
			}
		}
	}
	for _, u := range upstreams {
		for s := keypool.StateUnchecked; s <= keypool.StateDisabled; s++ {
			ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(byState[u].In(s)), u, s.String())
		}
	}
}
