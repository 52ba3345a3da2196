package main

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool"
)

// The three keys of the scenario. None is real: the fake below decides what
// each one gets.
const (
	keyRevoked = "sk-test-revoked" // answers 401 invalid_api_key
	keyLimited = "sk-test-limited" // answers 429: the per-minute request bucket is empty
	keyGood    = "sk-test-good"    // answers 200
)

// fakeOpenAI is a stand-in for api.openai.com, served by an httptest.Server.
// It answers as the real API does for each of the three keys and records
// which key each request carried. It is all a test of your code needs: no
// network, no real key.
type fakeOpenAI struct {
	mu    sync.Mutex
	tried []string // the key of every request, in order
}

func (f *fakeOpenAI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	f.tried = append(f.tried, key)
	f.mu.Unlock()

	h := w.Header()
	h.Set("Content-Type", "application/json")
	switch key {
	case keyGood:
		h.Set("x-ratelimit-limit-requests", "500")
		h.Set("x-ratelimit-remaining-requests", "499")
		h.Set("x-ratelimit-reset-requests", "120ms")
		w.Write([]byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",` +
			`"choices":[{"index":0,"message":{"role":"assistant","content":"A short summary."},"finish_reason":"stop"}],` +
			`"usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}`))
	case keyLimited:
		// What OpenAI sends when a key's requests-per-minute bucket is
		// empty: keypool reads the error type and the headers, cools the key
		// for this model until the bucket refills, and fails over.
		h.Set("x-ratelimit-limit-requests", "3")
		h.Set("x-ratelimit-remaining-requests", "0")
		h.Set("x-ratelimit-reset-requests", "20s")
		h.Set("x-ratelimit-limit-tokens", "40000")
		h.Set("x-ratelimit-remaining-tokens", "39980")
		h.Set("x-ratelimit-reset-tokens", "30ms")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-test on requests per min (RPM): ` +
			`Limit 3, Used 3, Requested 1. Please try again in 20s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`))
	default:
		// keyRevoked, and any other key: the key is not valid.
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"message":"Incorrect API key provided: sk-test-*****oked.","type":"invalid_request_error",` +
			`"param":null,"code":"invalid_api_key"}}`))
	}
}

// Tried returns the keys the fake saw, in order.
func (f *fakeOpenAI) Tried() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tried...)
}

// newTransport builds the keypool transport for the scenario, pointed at the
// fake at base. The two doubtful keys form the first upstream and the good
// key a backup upstream (the same fake serves both): upstreams are tried in
// order, so both doubtful keys are tried, in either order, before the good
// one, and the test can say exactly what failover must do. With all three
// keys in one upstream (keypool.WithUpstream(base, "k1,k2,k3")) failover
// works the same, but which fresh key goes first is not fixed.
func newTransport(base string, opts ...keypool.Option) (*keypool.Transport, error) {
	return keypool.New(append([]keypool.Option{
		keypool.WithUpstreams(
			keypool.Upstream{Name: "primary", BaseURL: base, Keys: []keypool.Key{keypool.NewKey(keyRevoked), keypool.NewKey(keyLimited)}},
			keypool.Upstream{Name: "backup", BaseURL: base, Keys: []keypool.Key{keypool.NewKey(keyGood)}},
		),
		// A test must not wait for a cooldown to end.
		keypool.WithMaxWait(0),
		keypool.WithBackoff(time.Millisecond, 10*time.Millisecond),
	}, opts...)...)
}

// keypoolID is the ID under which keypool shows a key (never its secret).
func keypoolID(secret string) keypool.KeyID { return keypool.NewKey(secret).ID() }
