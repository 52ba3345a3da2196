package app_test

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestReplicasShareRevokedKey is issue 15's three replicas over one Redis:
// once all three have checked both keys (both good), the upstream revokes
// the first; replica 1 finds out with a client's request, and fails over.
// Replicas 2 and 3, which would try that key first (lb_policy order), hear
// of it through Redis and send it no request.
//
// It rests on the root package's keypool.StateSubscriber: keypool.New
// subscribes the store, and applies what it hears.
func TestReplicasShareRevokedKey(t *testing.T) {
	url, rc := testRedis(t, replicasDB)

	const (
		victim = "sk-replicas-victim-00000000000000"
		good   = "sk-replicas-good-1111111111111111"
		token  = "tok-replicas-client-2222222222222"
	)
	fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: victim}, fakeopenai.Key{Secret: good})
	router := &fakeopenai.Router{Handler: fake}
	victimID, goodID := keypool.NewKey(victim).ID(), keypool.NewKey(good).ID()
	logs := &syncBuffer{}

	var replicas []*replica
	for i := range 3 {
		replicas = append(replicas, startReplica(t, replicaConfig(token, url, victim, good), app.Options{ShutdownTimeout: 5 * time.Second,
			Logger:    slog.New(slog.NewTextHandler(logs, nil)).With("replica", i+1),
			Transport: []keypool.Option{keypool.WithBase(router)}}))
	}
	waitFor(t, 5*time.Second, "every replica checked the keys", func() bool {
		for _, r := range replicas {
			if r.state(victimID) != keypool.StateReady || r.state(goodID) != keypool.StateReady {
				return false
			}
		}
		return true
	})

	fake.SetBehavior(victim, fakeopenai.Revoked)
	fake.Reset()
	mustChat(t, replicas[0].Handler(), token)
	if s := replicas[0].state(victimID); s != keypool.StateRevoked {
		t.Fatalf("replica 1 holds the victim %v after its 401, want revoked", s)
	}
	waitFor(t, 5*time.Second, "replica 1 saves the revoked key to Redis", func() bool {
		data, _ := rc.HGet(t.Context(), "keypool:states", string(victimID)).Result()
		return strings.Contains(data, `"state":"revoked"`)
	})
	took := waitFor(t, 5*time.Second, "replicas 2 and 3 hear of the revoked key through Redis", func() bool {
		return replicas[1].state(victimID) == keypool.StateRevoked && replicas[2].state(victimID) == keypool.StateRevoked
	})
	t.Logf("replicas 2 and 3 heard of the revoked key %v after replica 1 learned it", took)
	for range 5 {
		mustChat(t, replicas[1].Handler(), token)
		mustChat(t, replicas[2].Handler(), token)
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
	if !strings.Contains(log, `msg="state store redis"`) || !strings.Contains(log, rc.Options().Addr) {
		t.Errorf("no replica logged its state store:\n%s", log)
	}
	for _, s := range []string{victim, good, token} {
		if strings.Contains(log, s) {
			t.Errorf("the log holds a secret (%.12s…)", s)
		}
	}
}
