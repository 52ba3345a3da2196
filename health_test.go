package keypool_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
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

// R9: requests without a JSON model use their URL path as the model, so
// GETs of distinct IDs each make a bucket; 64 of them evict the bucket of a
// real model, and with it a 429 cooldown: the cooling key is hit again.
func TestPathBucketsKeepModelCooldown(t *testing.T) {
	var chat atomic.Int32
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		if r.Method == "POST" {
			chat.Add(1)
			return &http.Response{StatusCode: 429, Header: http.Header{"Content-Type": {"application/json"}, "Retry-After": {"600"}},
				Body: io.NopCloser(strings.NewReader(`{"error":{"type":"requests","code":"rate_limit_exceeded"}}`)), Request: r}, nil
		}
		return rvOK(r, nil, io.NopCloser(strings.NewReader(`{}`))), nil
	})
	tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithMaxWait(0))
	r, _ := tr.RoundTrip(rvPost(context.Background()))
	r.Body.Close()
	for i := 0; i < 64; i++ {
		req, _ := http.NewRequest("GET", "http://x/v1/files/file-"+strings.Repeat("x", i+1)+"/content", nil)
		r, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	r, err := tr.RoundTrip(rvPost(context.Background()))
	if err == nil {
		r.Body.Close()
	}
	if chat.Load() != 1 {
		t.Fatalf("key told to wait 600s was sent %d chat requests within the cooldown", chat.Load())
	}
}
