package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool/internal/records"
)

// RegisterRecords registers the request records writer's series with reg,
// read from stats at scrape time:
//
//	records_written_total   records stored
//	records_dropped_total   records lost: the queue was full, or the store out of reach at shutdown
//	records_errors_total    inserts the store refused (each is tried again)
//	records_pruned_total    records deleted for being older than records.keep
//	records_queued          records waiting for the store
func RegisterRecords(reg prometheus.Registerer, stats func() records.WriterStats) error {
	counter := func(name, help string, v func(records.WriterStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help},
			func() float64 { return float64(v(stats())) })
	}
	cs := []prometheus.Collector{
		counter("records_written_total", "Request records stored.",
			func(s records.WriterStats) uint64 { return s.Written }),
		counter("records_dropped_total", "Request records lost: the queue was full (the store is slow or down), or the store was out of reach at shutdown. Requests are never held up for records.",
			func(s records.WriterStats) uint64 { return s.Dropped }),
		counter("records_errors_total", "Inserts of request records the store refused; each batch is tried again.",
			func(s records.WriterStats) uint64 { return s.Errors }),
		counter("records_pruned_total", "Request records deleted for being older than records.keep.",
			func(s records.WriterStats) uint64 { return s.Pruned }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "records_queued",
			Help: "Request records waiting for the store."},
			func() float64 { return float64(stats().Queued) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}
