package metrics

import (
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
	type st = records.WriterStats
	return register(reg,
		statsCounter(stats, "records_written_total", "Request records stored.",
			func(s st) uint64 { return s.Written }),
		statsCounter(stats, "records_dropped_total", "Request records lost: the queue was full (the store is slow or down), or the store was out of reach at shutdown. Requests are never held up for records.",
			func(s st) uint64 { return s.Dropped }),
		statsCounter(stats, "records_errors_total", "Inserts of request records the store refused; each batch is tried again.",
			func(s st) uint64 { return s.Errors }),
		statsCounter(stats, "records_pruned_total", "Request records deleted for being older than records.keep.",
			func(s st) uint64 { return s.Pruned }),
		statsGauge(stats, "records_queued", "Request records waiting for the store.",
			func(s st) int { return s.Queued }),
	)
}
