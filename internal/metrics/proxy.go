package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterProxy registers the series of what the proxy answered itself,
// read from stats (a server.Server's Stats) at scrape time:
//
//	proxy_refused_total{reason}   requests the proxy refused or cut off before
//	                              any upstream: unauthorized, forbidden,
//	                              too_large, bad_model, body_memory,
//	                              body_idle, bad_path
//
// Refused clients are counted here and not recorded: records of them would
// let anyone without a token fill the store.
func RegisterProxy(reg prometheus.Registerer, stats func() map[string]uint64) error {
	if err := reg.Register(proxyCollector{stats}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

var proxyRefusedDesc = prometheus.NewDesc(namespace+"_proxy_refused_total",
	"Requests the proxy refused or cut off before any upstream, by reason.", []string{"reason"}, nil)

type proxyCollector struct{ stats func() map[string]uint64 }

func (c proxyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- proxyRefusedDesc }

func (c proxyCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range c.stats() {
		ch <- prometheus.MustNewConstMetric(proxyRefusedDesc, prometheus.CounterValue, float64(n), reason)
	}
}
