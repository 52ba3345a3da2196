package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool/internal/redisstore"
)

// RegisterStateStore registers the counters of the Redis store the
// replicas share key states and budgets through, read from stats at
// scrape time.
func RegisterStateStore(reg prometheus.Registerer, stats func() redisstore.Stats) error {
	type st = redisstore.Stats
	return register(reg,
		statsCounter(stats, "state_store_written_total", "Key states sent to Redis.",
			func(s st) uint64 { return s.Written }),
		statsCounter(stats, "state_store_dropped_total", "Key states lost: too many keys waiting while Redis was down, or Redis out of reach at shutdown. Requests are never held up for them.",
			func(s st) uint64 { return s.Dropped }),
		statsCounter(stats, "state_store_received_total", "Key states heard from Redis (other replicas' changes, and the whole states read again after a reconnect).",
			func(s st) uint64 { return s.Received }),
		statsCounter(stats, "state_store_skipped_total", "Entries and messages in Redis that did not decode as key states (another program's, or an older format), skipped.",
			func(s st) uint64 { return s.Skipped }),
		statsCounter(stats, "state_store_errors_total", "Redis commands that failed; each is retried with backoff.",
			func(s st) uint64 { return s.Errors }),
		statsCounter(stats, "state_store_outages_total", "Times Redis went out of reach: replicas go on with what they know until it answers.",
			func(s st) uint64 { return s.Outages }),
		statsCounter(stats, "state_store_resyncs_total", "Whole reads of the key states after a (re)subscription.",
			func(s st) uint64 { return s.Resyncs }),
		statsCounter(stats, "state_store_refilled_total", "Key states written to Redis again because it had lost them (it restarted empty).",
			func(s st) uint64 { return s.Refilled }),
		statsCounter(stats, "budget_spends_total", "Rate-limit budget grants Redis answered: replicas spend each organization's budget a few requests per grant.",
			func(s st) uint64 { return s.Spends }),
		statsCounter(stats, "budget_spend_errors_total", "Budget grants that failed: the replica spends its budgets alone for a few seconds, and no request fails for it.",
			func(s st) uint64 { return s.SpendErrors }),
		statsGauge(stats, "state_store_pending", "Key states waiting to be written to Redis.",
			func(s st) int { return s.Pending }),
	)
}
