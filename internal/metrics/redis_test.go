package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keypool/keypool/internal/metrics"
	"github.com/keypool/keypool/internal/redisstore"
)

func TestStateStoreSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	stats := redisstore.Stats{Pending: 4, Outages: 1, Errors: 12, Spends: 300, SpendErrors: 2}
	if err := metrics.RegisterStateStore(reg, func() redisstore.Stats { return stats }); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP keypool_budget_spend_errors_total Budget grants that failed: the replica spends its budgets alone for a few seconds, and no request fails for it.
# TYPE keypool_budget_spend_errors_total counter
keypool_budget_spend_errors_total 2
# HELP keypool_budget_spends_total Rate-limit budget grants Redis answered: replicas spend each organization's budget a few requests per grant.
# TYPE keypool_budget_spends_total counter
keypool_budget_spends_total 300
# HELP keypool_state_store_outages_total Times Redis went out of reach: replicas go on with what they know until it answers.
# TYPE keypool_state_store_outages_total counter
keypool_state_store_outages_total 1
# HELP keypool_state_store_pending Key states waiting to be written to Redis.
# TYPE keypool_state_store_pending gauge
keypool_state_store_pending 4
`
	names := []string{"keypool_budget_spend_errors_total", "keypool_budget_spends_total", "keypool_state_store_outages_total", "keypool_state_store_pending"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	stats.Outages = 2 // read at scrape time
	want = strings.Replace(want, "keypool_state_store_outages_total 1", "keypool_state_store_outages_total 2", 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}
