package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool/internal/notify"
)

// RegisterNotify registers the notifier's series with reg, read from stats
// at scrape time:
//
//	notifications_sent_total{notifier}     messages a notifier took
//	notifications_failed_total{notifier}   messages a notifier refused or never answered
//	notifications_held_total{reason}       events not sent: duplicate, rate_limited, queue_full
func RegisterNotify(reg prometheus.Registerer, stats func() notify.Stats) error {
	if err := reg.Register(notifyCollector{stats}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

var (
	notifySentDesc = prometheus.NewDesc(namespace+"_notifications_sent_total",
		"Notifications a notifier (matrix, feishu, webhook) took.", []string{"notifier"}, nil)
	notifyFailedDesc = prometheus.NewDesc(namespace+"_notifications_failed_total",
		"Notifications a notifier refused or did not answer in time.", []string{"notifier"}, nil)
	notifyHeldDesc = prometheus.NewDesc(namespace+"_notifications_held_total",
		"Events not sent: a duplicate within the dedup window, over the rate limit, or the queue full.", []string{"reason"}, nil)
)

type notifyCollector struct{ stats func() notify.Stats }

func (c notifyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- notifySentDesc
	ch <- notifyFailedDesc
	ch <- notifyHeldDesc
}

func (c notifyCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for name, n := range s.Sent {
		ch <- prometheus.MustNewConstMetric(notifySentDesc, prometheus.CounterValue, float64(n), name)
	}
	for name, n := range s.Failed {
		ch <- prometheus.MustNewConstMetric(notifyFailedDesc, prometheus.CounterValue, float64(n), name)
	}
	ch <- prometheus.MustNewConstMetric(notifyHeldDesc, prometheus.CounterValue, float64(s.Deduplicated), "duplicate")
	ch <- prometheus.MustNewConstMetric(notifyHeldDesc, prometheus.CounterValue, float64(s.RateLimited), "rate_limited")
	ch <- prometheus.MustNewConstMetric(notifyHeldDesc, prometheus.CounterValue, float64(s.Dropped), "queue_full")
}
