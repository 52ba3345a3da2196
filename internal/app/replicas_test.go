package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
)

// replicasDB is the Redis database TestReplicasShareRevokedKey uses, and
// empties first: the app's store keeps its keys under the default prefix.
const replicasDB = 11

// TestReplicasShareRevokedKey is issue 15's three replicas over one Redis:
// once all three have checked both keys (both good), the upstream revokes
// the first; replica 1 finds out with a client's request, and fails over.
// Replicas 2 and 3, which would try that key first (lb_policy order), hear
// of it through Redis and send it no request.
//
// It rests on the root package's keypool.StateSubscriber: keypool.New
// subscribes the store, and applies what it hears.
func TestReplicasShareRevokedKey(t *testing.T) {
	addr := os.Getenv("KEYPOOL_TEST_REDIS")
	if addr == "" {
		t.Skip("no Redis: set KEYPOOL_TEST_REDIS=HOST:PORT (.ci/run starts one)")
	}
	url := fmt.Sprintf("redis://%s/%d", addr, replicasDB)
	rc := redis.NewClient(&redis.Options{Addr: addr, DB: replicasDB})
	defer rc.Close()
	if err := rc.FlushDB(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.FlushDB(context.Background()) })

	const (
		victim = "sk-replicas-victim-00000000000000"
		good   = "sk-replicas-good-1111111111111111"
		token  = "tok-replicas-client-2222222222222"
	)
	fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: victim}, fakeopenai.Key{Secret: good})
	router := &fakeopenai.Router{Handler: fake}
	victimID := keypool.NewKey(victim).ID()
	logs := &syncBuffer{}

	var replicas []*app.App
	for i := range 3 {
		cfg := &config.Config{
			Authorization: []secret.String{secret.New(token)},
			Upstream: []config.Upstream{{Endpoint: "https://api.openai.com/v1",
				Keys: []keypool.Key{keypool.NewKey(victim), keypool.NewKey(good)}}},
			DBType:   "none",
			LBPolicy: "order",
			Store:    secret.New(url),
		}
		cfg.Checker.Rate = 100
		a, err := app.New(cfg, app.Options{ShutdownTimeout: 5 * time.Second,
			Logger:    slog.New(slog.NewTextHandler(logs, nil)).With("replica", i+1),
			Transport: []keypool.Option{keypool.WithBase(router)}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx, nil) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("replica %d: Run: %v", i+1, err)
			}
		})
		replicas = append(replicas, a)
	}
	stateOf := func(a *app.App, id keypool.KeyID) keypool.State {
		for _, k := range a.Transport().Snapshot() {
			if k.ID == id {
				return k.State
			}
		}
		return keypool.StateUnchecked
	}
	waitFor := func(what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < 5*time.Second {
			if cond() {
				return time.Since(start)
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatalf("not within 5s: %s", what)
		return 0
	}
	ask := func(a *app.App) {
		t.Helper()
		req := httptest.NewRequest("POST", "/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("a request: %d %s", rec.Code, rec.Body)
		}
	}
	waitFor("every replica checked the keys", func() bool {
		for _, a := range replicas {
			if stateOf(a, victimID) != keypool.StateReady || stateOf(a, keypool.NewKey(good).ID()) != keypool.StateReady {
				return false
			}
		}
		return true
	})

	fake.SetBehavior(victim, fakeopenai.Revoked)
	fake.Reset()
	ask(replicas[0])
	if s := stateOf(replicas[0], victimID); s != keypool.StateRevoked {
		t.Fatalf("replica 1 holds the victim %v after its 401, want revoked", s)
	}
	waitFor("replica 1 saves the revoked key to Redis", func() bool {
		data, _ := rc.HGet(t.Context(), "keypool:states", string(victimID)).Result()
		return strings.Contains(data, `"state":"revoked"`)
	})
	took := waitFor("replicas 2 and 3 hear of the revoked key through Redis", func() bool {
		return stateOf(replicas[1], victimID) == keypool.StateRevoked && stateOf(replicas[2], victimID) == keypool.StateRevoked
	})
	t.Logf("replicas 2 and 3 heard of the revoked key %v after replica 1 learned it", took)
	for range 5 {
		ask(replicas[1])
		ask(replicas[2])
	}
	if n := fake.Count(victim); n != 1 {
		t.Errorf("the revoked key got %d requests, want 1 (replica 1's, which found out)", n)
	}
	if n := fake.Completions(good); n != 11 {
		t.Errorf("the good key served %d completions, want 11", n)
	}
	rec := httptest.NewRecorder()
	replicas[1].Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "keypool_state_store_received_total") {
		t.Errorf("/metrics has no keypool_state_store_received_total")
	}
	log := logs.String()
	if !strings.Contains(log, `msg="state store redis"`) || !strings.Contains(log, addr) {
		t.Errorf("no replica logged its state store:\n%s", log)
	}
	for _, s := range []string{victim, good, token} {
		if strings.Contains(log, s) {
			t.Errorf("the log holds a secret (%.12s…)", s)
		}
	}
}
