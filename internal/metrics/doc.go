// Package metrics exposes a keypool transport to Prometheus.
//
// A [Metrics] is a keypool.Observer: give it to the transport with
// keypool.WithObserver and it counts requests, attempts, failovers, latency,
// time to first byte, tokens and key state changes as they happen. At scrape
// time it also reads the pool's snapshot for the keys by state and, per key,
// the requests in flight and the remaining requests and tokens.
//
// Every series is named keypool_…. Keys appear by their ID (kp_…), never by
// their secret. Model names come from clients and may be anything, so the
// model and family labels are capped: see [MaxModelLabels].
package metrics
