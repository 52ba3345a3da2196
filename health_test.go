package keypool_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestFlakyKeyRests: a key that answers 500 every other time, beside a
// healthy one, rests with a growing backoff although successes come
// between: over 40 requests it gets a few attempts (it got 27 of 53 when
// each success reset its failure count), and every request is served.
func TestFlakyKeyRests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake, tr := pipeSetup(t, nil,
			fakeopenai.Key{Secret: "sk-flaky", Behavior: fakeopenai.Flaky, FailFirst: 1, FailEvery: 2},
			fakeopenai.Key{Secret: "sk-healthy"})
		for i := range 40 {
			resp, b := post(t, tr, chatBody("gpt-4o", false))
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: status %d %s", i+1, resp.StatusCode, b)
			}
			time.Sleep(500 * time.Millisecond) // a request every half second
		}
		flaky, healthy := fake.Count("sk-flaky"), fake.Count("sk-healthy")
		if flaky > 8 || healthy < 32 {
			t.Fatalf("the flaky key got %d attempts, the healthy one %d", flaky, healthy)
		}
		t.Logf("flaky %d attempts, healthy %d", flaky, healthy)
	})
}

// TestLoneKeyTransientRetry: a lone key that answers 500 every other time
// serves every request: a transient failure with nothing else left is tried
// again after a backoff, before the error reaches the caller (5 of 10
// reached it when there was no second try).
func TestLoneKeyTransientRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake, tr := pipeSetup(t, []keypool.Option{keypool.WithBackoff(200*time.Millisecond, time.Second)},
			fakeopenai.Key{Secret: "sk-lone", Behavior: fakeopenai.Flaky, FailFirst: 1, FailEvery: 2})
		for i := range 10 {
			resp, b := post(t, tr, chatBody("gpt-4o", false))
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: status %d %s", i+1, resp.StatusCode, b)
			}
		}
		if n := fake.Count("sk-lone"); n > 20 {
			t.Fatalf("%d attempts for 10 requests", n)
		}
	})
}
