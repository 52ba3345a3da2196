package metrics_test

import (
	"fmt"
	"log"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/metrics"
)

func Example() {
	reg := metrics.NewRegistry() // with the Go runtime and process collectors
	// In a program, snapshot is the transport's Snapshot method, and m is
	// given to keypool.New with keypool.WithObserver(m).
	snapshot := func() []keypool.KeyInfo {
		return []keypool.KeyInfo{{ID: "kp_0123456789abcdef", Upstream: "openai", State: keypool.StateReady}}
	}
	m, err := metrics.New(reg, snapshot)
	if err != nil {
		log.Fatal(err)
	}
	m.Attempt(keypool.AttemptEvent{Key: "kp_0123456789abcdef", Upstream: "openai", Model: "gpt-4o-mini",
		Status: 200, Outcome: keypool.OutcomeSuccess, Duration: time.Second, Final: true})

	rec := httptest.NewRecorder()
	metrics.Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(line, "keypool_requests_total") || strings.HasPrefix(line, "keypool_key_in_flight") {
			fmt.Print(line)
		}
	}
	// Output:
	// keypool_key_in_flight{key="kp_0123456789abcdef",upstream="openai"} 0
	// keypool_requests_total{model="gpt-4o-mini",outcome="success",status="200",upstream="openai"} 1
}
