package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keypool/keypool/internal/metrics"
	"github.com/keypool/keypool/internal/notify"
	"github.com/keypool/keypool/internal/records"
)

func TestRecordsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats := records.WriterStats{Queued: 3, Written: 10, Dropped: 7, Errors: 2}
	if err := metrics.RegisterRecords(reg, func() records.WriterStats { return stats }); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP keypool_records_dropped_total Request records lost: the queue was full (the store is slow or down), or the store was out of reach at shutdown. Requests are never held up for records.
# TYPE keypool_records_dropped_total counter
keypool_records_dropped_total 7
# HELP keypool_records_queued Request records waiting for the store.
# TYPE keypool_records_queued gauge
keypool_records_queued 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "keypool_records_dropped_total", "keypool_records_queued"); err != nil {
		t.Fatal(err)
	}
	stats.Dropped = 9 // read at scrape time
	want = strings.Replace(want, "keypool_records_dropped_total 7", "keypool_records_dropped_total 9", 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "keypool_records_dropped_total", "keypool_records_queued"); err != nil {
		t.Fatal(err)
	}
	if err := metrics.RegisterRecords(reg, func() records.WriterStats { return stats }); err == nil {
		t.Fatal("registering twice: no error")
	}
}

func TestNotifySeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats := notify.Stats{Sent: map[string]int64{"feishu": 4}, Failed: map[string]int64{"feishu": 1}, Deduplicated: 6, RateLimited: 2}
	if err := metrics.RegisterNotify(reg, func() notify.Stats { return stats }); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP keypool_notifications_failed_total Notifications a notifier refused or did not answer in time.
# TYPE keypool_notifications_failed_total counter
keypool_notifications_failed_total{notifier="feishu"} 1
# HELP keypool_notifications_held_total Events not sent: a duplicate within the dedup window, over the rate limit, or the queue full.
# TYPE keypool_notifications_held_total counter
keypool_notifications_held_total{reason="duplicate"} 6
keypool_notifications_held_total{reason="queue_full"} 0
keypool_notifications_held_total{reason="rate_limited"} 2
# HELP keypool_notifications_sent_total Notifications a notifier (matrix, feishu, webhook) took.
# TYPE keypool_notifications_sent_total counter
keypool_notifications_sent_total{notifier="feishu"} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestProxySeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats := map[string]uint64{"unauthorized": 50, "body_idle": 2}
	answers := func(yield func(client, route, class string, n uint64)) {
		yield("none", "/v1/chat/completions", "4xx", 50)
		yield("ct_0123456789abcdef", "/v1/chat/completions", "2xx", 7)
	}
	if err := metrics.RegisterProxy(reg, func() map[string]uint64 { return stats }, answers); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP keypool_proxy_answers_total Answers the proxy gave, the upstreams' and its own, by client token ID (none: no token, invalid: an unknown one), route and status class (aborted: no answer).
# TYPE keypool_proxy_answers_total counter
keypool_proxy_answers_total{class="2xx",client="ct_0123456789abcdef",route="/v1/chat/completions"} 7
keypool_proxy_answers_total{class="4xx",client="none",route="/v1/chat/completions"} 50
# HELP keypool_proxy_refused_total Requests the proxy refused or cut off before any upstream, by reason.
# TYPE keypool_proxy_refused_total counter
keypool_proxy_refused_total{reason="body_idle"} 2
keypool_proxy_refused_total{reason="unauthorized"} 50
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "keypool_proxy_refused_total", "keypool_proxy_answers_total"); err != nil {
		t.Fatal(err)
	}
}
