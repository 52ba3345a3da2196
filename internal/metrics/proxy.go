package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// AnswerCounts calls yield with the count of the proxy's answers of every
// client, route and status class that has some (a server.Server's
// Answers).
type AnswerCounts func(yield func(client, route, class string, n uint64))

// RegisterProxy registers the series of what the proxy answered, read from
// refused (a server.Server's Stats) and answers (its Answers) at scrape
// time:
//
//	proxy_refused_total{reason}   requests the proxy refused or cut off before
//	                              any upstream: unauthorized, forbidden,
//	                              too_large, bad_model, body_memory,
//	                              body_idle, bad_path
//	proxy_answers_total{client,route,class}
//	                              every answer, the upstreams' and the
//	                              proxy's own (401, 403, 404, 413, 429 and
//	                              503 without a key), by the client token's
//	                              ID (none, invalid), the route (an
//	                              endpoint family, never the path) and the
//	                              status class (2xx…, aborted)
//
// requests_total counts the answers that went through the pool, by
// upstream and outcome; proxy_answers_total counts all of them, by who
// asked. Every label takes values from a fixed set: configured token IDs
// only, the server's routes, six classes. Refused clients are counted
// here and not recorded: records of them would let anyone without a token
// fill the store.
func RegisterProxy(reg prometheus.Registerer, refused func() map[string]uint64, answers AnswerCounts) error {
	if err := reg.Register(proxyCollector{refused, answers}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

var (
	proxyRefusedDesc = prometheus.NewDesc(namespace+"_proxy_refused_total",
		"Requests the proxy refused or cut off before any upstream, by reason.", []string{"reason"}, nil)
	proxyAnswersDesc = prometheus.NewDesc(namespace+"_proxy_answers_total",
		"Answers the proxy gave, the upstreams' and its own, by client token ID (none: no token, invalid: an unknown one), route and status class (aborted: no answer).",
		[]string{"client", "route", "class"}, nil)
)

type proxyCollector struct {
	refused func() map[string]uint64
	answers AnswerCounts
}

func (c proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- proxyRefusedDesc
	ch <- proxyAnswersDesc
}

func (c proxyCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range c.refused() {
		ch <- prometheus.MustNewConstMetric(proxyRefusedDesc, prometheus.CounterValue, float64(n), reason)
	}
	c.answers(func(client, route, class string, n uint64) {
		ch <- prometheus.MustNewConstMetric(proxyAnswersDesc, prometheus.CounterValue, float64(n), client, route, class)
	})
}
