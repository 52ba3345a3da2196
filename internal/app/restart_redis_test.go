package app_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestRestartWithRedisSendsNothingToKnownBadKey is issue 15's "a restart
// remembers", with Redis (TestServeRestartRemembersKeyStates is the same
// without it, over the records database): replica A checks both keys
// (good), then the upstream revokes the first, and A finds out with a
// client's request and stops. Replica B, a new process over the same Redis,
// starts with the key revoked, before it has sent anything, and sends it no
// request at all: neither a check nor a client's.
//
// B has one key more than A, never checked, so that the test knows when
// B's start-up checks are over: B checks one key at a time in config order,
// the known-bad key before it.
func TestRestartWithRedisSendsNothingToKnownBadKey(t *testing.T) {
	url, rc := testRedis(t, restartDB)
	const (
		victim = "sk-restart-redis-victim-000000000"
		good   = "sk-restart-redis-good-11111111111"
		added  = "sk-restart-redis-added-2222222222"
		token  = "tok-restart-redis-client-33333333"
		n      = 6
	)
	fake := fakeopenai.New(fakeopenai.Config{},
		fakeopenai.Key{Secret: victim}, fakeopenai.Key{Secret: good}, fakeopenai.Key{Secret: added})
	router := &fakeopenai.Router{Handler: fake}
	victimID, goodID, addedID := keypool.NewKey(victim).ID(), keypool.NewKey(good).ID(), keypool.NewKey(added).ID()
	logs := &syncBuffer{}
	opts := func(name string) app.Options {
		return app.Options{ShutdownTimeout: 5 * time.Second,
			Logger:    slog.New(slog.NewTextHandler(logs, nil)).With("replica", name),
			Transport: []keypool.Option{keypool.WithBase(router)}}
	}

	// A learns.
	a := startReplica(t, replicaConfig(token, url, victim, good), opts("A"))
	waitFor(t, 5*time.Second, "A checked both keys", func() bool {
		return a.state(victimID) == keypool.StateReady && a.state(goodID) == keypool.StateReady
	})
	fake.SetBehavior(victim, fakeopenai.Revoked)
	mustChat(t, a.Handler(), token)
	if s := a.state(victimID); s != keypool.StateRevoked {
		t.Fatalf("A holds the victim %v after its 401, want revoked", s)
	}
	a.stop()
	data, err := rc.HGet(t.Context(), "keypool:states", string(victimID)).Result()
	if err != nil || !strings.Contains(data, `"state":"revoked"`) {
		t.Fatalf("Redis holds %q (%v) for the victim once A stopped, want it revoked", data, err)
	}

	// B remembers.
	fake.Reset()
	cfg := replicaConfig(token, url, victim, good, added)
	cfg.Checker.Concurrency = 1
	b := startReplica(t, cfg, opts("B"))
	if s := b.state(victimID); s != keypool.StateRevoked {
		t.Errorf("B starts with the victim %v, want revoked (from Redis)", s)
	}
	waitFor(t, 5*time.Second, "B checked the key A did not have", func() bool { return b.state(addedID) == keypool.StateReady })
	for range n {
		mustChat(t, b.Handler(), token)
	}
	b.stop() // and its checks with it
	if c := fake.Count(victim); c != 0 {
		t.Errorf("B sent %d requests with the victim, known revoked since A", c)
	}
	if c := fake.Completions(good) + fake.Completions(added); c != n {
		t.Errorf("B served %d completions with its usable keys, want %d", c, n)
	}
	log := logs.String()
	if !strings.Contains(log, `msg="key states loaded" replica=B`) || !strings.Contains(log, "revoked=1") {
		t.Errorf("B did not log the key states it loaded:\n%s", log)
	}
	for _, s := range []string{victim, good, added, token} {
		if strings.Contains(log, s) {
			t.Errorf("the log holds a secret (%.12s…)", s)
		}
	}
}
