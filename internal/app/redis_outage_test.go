package app_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestRedisKilledUnderLoad is issue 15's "a dead Redis never fails a
// request": three replicas share their key states through a redis-server of
// the test's own, 8 clients send them 300 requests round-robin, and a third
// of the way in the redis-server is killed (SIGKILL); the last third is sent
// once every replica has noticed (logged) the outage, so that the load runs
// with Redis up, dying, and known dead. Every request is answered 200, none
// waits long, each replica logs the outage once (without the password), and
// they go on serving, each with what it knows: a key revoked meanwhile is
// learned by each on its own. Once Redis is started again (empty), each
// replica resubscribes and reads the states again, and writes what waited:
// the revoked key is in Redis again.
func TestRedisKilledUnderLoad(t *testing.T) {
	const (
		password = "pw-SECRET-outage-4444444444"
		victim   = "sk-outage-victim-000000000000000"
		good1    = "sk-outage-good-11111111111111111"
		good2    = "sk-outage-good-22222222222222222"
		token    = "tok-outage-client-3333333333333"

		requests = 300
		clients  = 8
		killAt   = requests / 3
		noticeAt = 2 * requests / 3
		// slowest bounds every request's time: a dead Redis must not hold
		// one up (the machine is small and shared, and -race is slow).
		slowest = 2 * time.Second
	)
	rs := startRedisServer(t, password)
	rc := rs.client(0)
	fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: victim}, fakeopenai.Key{Secret: good1}, fakeopenai.Key{Secret: good2})
	router := &fakeopenai.Router{Handler: fake}
	victimID := keypool.NewKey(victim).ID()
	logs := &syncBuffer{}
	var replicas []*replica
	for i := range 3 {
		replicas = append(replicas, startReplica(t, replicaConfig(token, rs.url(0), victim, good1, good2), app.Options{ShutdownTimeout: 5 * time.Second,
			Logger:    slog.New(slog.NewTextHandler(logs, nil)).With("replica", i+1),
			Transport: []keypool.Option{keypool.WithBase(router)}}))
	}
	waitFor(t, 5*time.Second, "every replica listens to Redis", func() bool {
		for _, r := range replicas {
			if metric(t, r, "keypool_state_store_resyncs_total") < 1 {
				return false
			}
		}
		return true
	})

	// The load, in three parts: Redis up; killed, while the requests of
	// the first part still run, and not yet noticed; noticed by every
	// replica.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var (
		next     atomic.Int64
		inFlight atomic.Int64
		atKill   int64 // requests in flight when Redis was killed
		killed   = make(chan struct{})
		noticed  = make(chan struct{}) // every replica logged the outage
		mu       sync.Mutex            // guards failures and worst
		failures []string
		worst    time.Duration
		wg       sync.WaitGroup
	)
	outages := func(i int) int { return logLines(logs, i+1, "redis out of reach") }
	allNoticed := func() bool {
		for i := range replicas {
			if outages(i) == 0 {
				return false
			}
		}
		return true
	}
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= requests {
					return
				}
				if i == killAt {
					atKill = inFlight.Load()
					if err := rs.kill(); err != nil {
						mu.Lock()
						failures = append(failures, err.Error())
						mu.Unlock()
					}
					close(killed)
				}
				if i > killAt {
					<-killed
				}
				if i == noticeAt {
					for deadline := time.Now().Add(5 * time.Second); !allNoticed() && time.Now().Before(deadline); {
						time.Sleep(2 * time.Millisecond)
					}
					close(noticed)
				}
				if i > noticeAt {
					<-noticed
				}
				sent := time.Now()
				inFlight.Add(1)
				rec := chat(ctx, replicas[i%len(replicas)].Handler(), token)
				inFlight.Add(-1)
				took := time.Since(sent)
				mu.Lock()
				worst = max(worst, took)
				if rec.Code != http.StatusOK {
					failures = append(failures, fmt.Sprintf("request %d (replica %d): %d %.200s", i, i%len(replicas)+1, rec.Code, rec.Body))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d requests in %v, %d in flight when Redis was killed, %d after; the slowest took %v",
		requests, time.Since(start).Round(time.Millisecond), atKill, requests-killAt, worst.Round(time.Microsecond))
	for _, f := range failures {
		t.Error(f)
	}
	if worst > slowest {
		t.Errorf("the slowest request took %v, want at most %v: a dead Redis must not hold requests", worst, slowest)
	}
	if !allNoticed() {
		t.Fatalf("not every replica logged the outage within 5s:\n%s", logs)
	}

	// Redis still dead: each replica goes on alone, and learns alone. It
	// picks the victim once the others have less headroom left.
	fake.SetBehavior(victim, fakeopenai.Revoked)
	fake.Reset()
	for i, r := range replicas {
		sent := 0
		for ; sent < 100 && r.state(victimID) != keypool.StateRevoked; sent++ {
			mustChat(t, r.Handler(), token)
		}
		if s := r.state(victimID); s != keypool.StateRevoked {
			for _, k := range r.Transport().Snapshot() {
				t.Logf("replica %d: key %s %v, limits %+v", i+1, k.ID, k.State, k.Limits)
			}
			t.Errorf("replica %d holds the victim %v after %d requests with Redis dead, want revoked", i+1, s, sent)
		}
	}
	if n := fake.Count(victim); n != len(replicas) {
		t.Errorf("the victim got %d requests after it was revoked, want %d: one per replica, as none hears of the others", n, len(replicas))
	}
	for i := range replicas {
		if n := outages(i); n != 1 {
			t.Errorf("replica %d logged the outage %d times, want once", i+1, n)
		}
	}

	// Redis back, empty: the replicas resync and write what waited.
	rs.start()
	waitFor(t, 10*time.Second, "every replica hears Redis again, resyncs, and writes the revoked key", func() bool {
		for i, r := range replicas {
			if logLines(logs, i+1, "redis answers again") == 0 || metric(t, r, "keypool_state_store_resyncs_total") < 2 {
				return false
			}
		}
		data, _ := rc.HGet(t.Context(), "keypool:states", string(victimID)).Result()
		return strings.Contains(data, `"state":"revoked"`)
	})
	for _, r := range replicas {
		mustChat(t, r.Handler(), token)
	}
	log := logs.String()
	for _, s := range []string{password, victim, good1, good2, token} {
		if strings.Contains(log, s) {
			t.Errorf("the log holds a secret (%.12s…)", s)
		}
	}
}

// logLines counts the lines of replica's log that hold text.
func logLines(logs *syncBuffer, replica int, text string) int {
	n := 0
	tag := fmt.Sprintf(" replica=%d", replica)
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, text) && strings.Contains(line, tag) {
			n++
		}
	}
	return n
}

// metric is the value of the sample name (one without labels) on r's
// /metrics; 0 when it is not there.
func metric(t *testing.T, r *replica, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		value, ok := strings.CutPrefix(sc.Text(), name+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics: %s is %q", name, value)
		}
		return v
	}
	return 0
}
