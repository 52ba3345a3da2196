package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool/internal/redisstore"
)

// RegisterStateStore registers the counters of the Redis store the
// replicas share key states through, read from stats at scrape time.
func RegisterStateStore(reg prometheus.Registerer, stats func() redisstore.Stats) error {
	counter := func(name, help string, v func(redisstore.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help},
			func() float64 { return float64(v(stats())) })
	}
	cs := []prometheus.Collector{
		counter("state_store_written_total", "Key states sent to Redis.",
			func(s redisstore.Stats) uint64 { return s.Written }),
		counter("state_store_dropped_total", "Key states lost: too many keys waiting while Redis was down, or Redis out of reach at shutdown. Requests are never held up for them.",
			func(s redisstore.Stats) uint64 { return s.Dropped }),
		counter("state_store_received_total", "Key states heard from Redis (other replicas' changes, and the whole states read again after a reconnect).",
			func(s redisstore.Stats) uint64 { return s.Received }),
		counter("state_store_skipped_total", "Entries and messages in Redis that did not decode as key states (another program's, or an older format), skipped.",
			func(s redisstore.Stats) uint64 { return s.Skipped }),
		counter("state_store_errors_total", "Redis commands that failed; each is retried with backoff.",
			func(s redisstore.Stats) uint64 { return s.Errors }),
		counter("state_store_outages_total", "Times Redis went out of reach: replicas go on with what they know until it answers.",
			func(s redisstore.Stats) uint64 { return s.Outages }),
		counter("state_store_resyncs_total", "Whole reads of the key states after a (re)subscription.",
			func(s redisstore.Stats) uint64 { return s.Resyncs }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "state_store_pending",
			Help: "Key states waiting to be written to Redis."},
			func() float64 { return float64(stats().Pending) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}
