package redisstore_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/redisstore"
)

// Two organizations of two keys each, 600 requests a minute each: 20
// requests a second in all, in continuous buckets.
const (
	replicaRPM  = 600
	replicaOrgs = 2
)

var replicaChat = `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`

// drainedFake is a fake upstream whose organizations' request buckets are
// spent, so that a short test runs at its steady state (a full bucket
// holds a minute of requests), and its records forgotten.
func drainedFake(t *testing.T) (*fakeopenai.Server, []keypool.Key) {
	var orgs []fakeopenai.Org
	for i := range replicaOrgs {
		orgs = append(orgs, fakeopenai.Org{ID: fmt.Sprintf("org-%024d", i), Slug: fmt.Sprintf("org%d", i), RPM: replicaRPM})
	}
	var keys []fakeopenai.Key
	var creds []keypool.Key
	for i := range 2 * replicaOrgs {
		k := fakeopenai.Key{Secret: fmt.Sprintf("sk-budget-%d", i), Orgs: orgs[i%replicaOrgs : i%replicaOrgs+1]}
		keys = append(keys, k)
		creds = append(creds, keypool.NewKey(k.Secret))
	}
	fake := fakeopenai.New(fakeopenai.Config{}, keys...)
	t.Cleanup(fake.Close)
	// Spend each until it refuses, again until a round spends nothing (a
	// few rounds at most): an organization spent first refills while the
	// others are spent.
	spend := func(secret string) (served int) {
		for {
			r := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(replicaChat))
			r.Header.Set("Authorization", "Bearer "+secret)
			w := httptest.NewRecorder()
			fake.ServeHTTP(w, r)
			if w.Code == http.StatusTooManyRequests {
				return served
			}
			served++
		}
	}
	for again, round := true, 0; again && round < 5; round++ {
		again = false
		for _, k := range keys[:replicaOrgs] {
			if spend(k.Secret) > 0 {
				again = true
			}
		}
	}
	fake.Reset()
	return fake, creds
}

// offer sends rate requests a second for d, round-robin over replicas, and
// returns the upstream's attempts, the 429s among them, and the requests
// that did not end in a 200.
func offer(t *testing.T, fake *fakeopenai.Server, replicas []*keypool.Transport, rate float64, d time.Duration) (attempts, n429, failed int) {
	every := time.Duration(float64(time.Second) / rate)
	var wg sync.WaitGroup
	var bad atomic.Int64
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; time.Duration(i)*every < d; i++ {
		tr := replicas[i%len(replicas)]
		wg.Go(func() {
			req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(replicaChat))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				bad.Add(1)
				return
			}
			if resp.StatusCode != http.StatusOK {
				bad.Add(1)
			}
			resp.Body.Close()
		})
		<-tick.C
	}
	wg.Wait()
	for _, r := range fake.Records() {
		if r.Path == "/v1/chat/completions" {
			attempts++
			if r.Status == http.StatusTooManyRequests {
				n429++
			}
		}
	}
	return attempts, n429, int(bad.Load())
}

// replicas builds three transports over fake's keys, each with a Store of
// its own over url (nil stores: none), running until the test ends.
func replicas(t *testing.T, fake *fakeopenai.Server, creds []keypool.Key, url, prefix string) []*keypool.Transport {
	pipe, closePipe := fakeopenai.ServePipe(fake)
	t.Cleanup(closePipe)
	var out []*keypool.Transport
	for range 3 {
		opts := []keypool.Option{keypool.WithBase(pipe), keypool.WithMaxWait(5 * time.Second),
			keypool.WithUpstreams(keypool.Upstream{BaseURL: fakeopenai.PipeBaseURL, Keys: creds})}
		if url != "" {
			s := newStore(t, url, redisstore.Options{Prefix: prefix})
			opts = append(opts, keypool.WithStateStore(s))
			run(t, s)
		}
		tr, err := keypool.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tr)
	}
	return out
}

// TestReplicasShareBudgetsOverRedis is issue 15's budget test on a real
// Redis: three replicas offered 1.2x of what two organizations allow,
// round-robin, for 6 seconds from spent buckets. Alone, each replica
// believes it has the whole budget and the upstream refuses many
// attempts; sharing budgets through Redis, at most 1% of attempts plus one
// per scope a replica learns (each key is a scope of its own until its
// first answer names its organization; then the organizations).
func TestReplicasShareBudgetsOverRedis(t *testing.T) {
	addr := testRedis(t)
	const rate, d = 1.2 * replicaOrgs * replicaRPM / 60, 6 * time.Second
	scopes := 3 * (2*replicaOrgs + replicaOrgs)

	fake, creds := drainedFake(t)
	alone, alone429, _ := offer(t, fake, replicas(t, fake, creds, "", ""), rate, d)

	fake, creds = drainedFake(t)
	shared, shared429, failed := offer(t, fake, replicas(t, fake, creds, "redis://"+addr+"/0", prefix(t, addr)), rate, d)
	t.Logf("alone: %d 429s of %d attempts; shared through Redis: %d of %d (%d requests not served within the wait)",
		alone429, alone, shared429, shared, failed)
	if allowed := shared/100 + scopes; shared429 > allowed {
		t.Errorf("shared budgets: %d 429s of %d attempts, want at most %d", shared429, shared, allowed)
	}
	if alone429 < 2*scopes {
		t.Errorf("alone: %d 429s of %d attempts: the load does not exceed what the organizations allow", alone429, alone)
	}
}
