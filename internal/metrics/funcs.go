package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// statsCounter is a counter that reads field v of stats() at scrape time:
// the series of a part that keeps its own counters (the records writer,
// the Redis state store).
func statsCounter[S any](stats func() S, name, help string, v func(S) uint64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help},
		func() float64 { return float64(v(stats())) })
}

// statsGauge is statsCounter for a level (what waits now).
func statsGauge[S any](stats func() S, name, help string, v func(S) int) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help},
		func() float64 { return float64(v(stats())) })
}

// register registers every one of cs with reg.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}
