package app_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/secret"
)

// This file holds what the tests of replicas over Redis share: a Redis
// database of the throwaway Redis, a redis-server of a test's own, and
// replicas (apps built as keypool serve builds them) with a way to ask
// them and to wait for what they know.

// Databases of the throwaway Redis (KEYPOOL_TEST_REDIS), one per test, so
// that the tests of this package and of internal/loadtest (which uses 14),
// run at once by go test, do not empty each other's: the app keeps its keys
// under the store's default prefix.
const (
	replicasDB = 11 // TestReplicasShareRevokedKey
	restartDB  = 13 // TestRestartWithRedisSendsNothingToKnownBadKey
)

// testRedis returns the store URL of database db of the throwaway Redis
// KEYPOOL_TEST_REDIS names, and a client on it; the database is emptied
// now and at the end. It skips the test without the variable.
func testRedis(t *testing.T, db int) (string, *redis.Client) {
	t.Helper()
	addr := os.Getenv("KEYPOOL_TEST_REDIS")
	if addr == "" {
		t.Skip("no Redis: set KEYPOOL_TEST_REDIS=HOST:PORT (.ci/run starts one)")
	}
	rc := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	if err := rc.FlushDB(t.Context()).Err(); err != nil {
		rc.Close()
		t.Fatalf("emptying Redis database %d at %s: %v", db, addr, err)
	}
	t.Cleanup(func() {
		rc.FlushDB(context.Background())
		rc.Close()
	})
	return fmt.Sprintf("redis://%s/%d", addr, db), rc
}

// redisServer is a redis-server of a test's own, on a free 127.0.0.1 port,
// with a password, keeping nothing on disk: a test kills it and starts it
// again (empty) on the same port.
type redisServer struct {
	t        *testing.T
	bin      string
	port     string
	dir      string
	password string

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd  // nil while killed
}

// startRedisServer starts a redis-server (the binary
// KEYPOOL_TEST_REDIS_SERVER names) that asks for password, and kills it at
// the end of the test. It skips the test without the variable.
func startRedisServer(t *testing.T, password string) *redisServer {
	t.Helper()
	bin := os.Getenv("KEYPOOL_TEST_REDIS_SERVER")
	if bin == "" {
		t.Skip("no redis-server: set KEYPOOL_TEST_REDIS_SERVER to the binary (.ci/run does)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	s := &redisServer{t: t, bin: bin, port: port, dir: t.TempDir(), password: password}
	s.start()
	t.Cleanup(func() {
		if err := s.kill(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// addr is the server's HOST:PORT.
func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", s.port) }

// url is the store URL of database db, with the password.
func (s *redisServer) url(db int) string {
	return fmt.Sprintf("redis://:%s@%s/%d", s.password, s.addr(), db)
}

// client is a client on database db; the test closes it at its end.
func (s *redisServer) client(db int) *redis.Client {
	rc := redis.NewClient(&redis.Options{Addr: s.addr(), Password: s.password, DB: db,
		DialTimeout: time.Second, MaxRetries: -1})
	s.t.Cleanup(func() { rc.Close() })
	return rc
}

// start starts the server and waits (5s at most) until it answers.
func (s *redisServer) start() {
	s.t.Helper()
	cmd := exec.Command(s.bin, "--port", s.port, "--bind", "127.0.0.1", "--requirepass", s.password,
		"--save", "", "--appendonly", "no", "--dir", s.dir)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting %s: %v", s.bin, err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	rc := redis.NewClient(&redis.Options{Addr: s.addr(), Password: s.password, DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer rc.Close()
	waitFor(s.t, 5*time.Second, "redis-server answers", func() bool {
		return rc.Ping(s.t.Context()).Err() == nil
	})
}

// kill kills the server (SIGKILL: no goodbye to its clients) and waits
// for it to end; a server already killed is left as it is. It may be
// called from any goroutine.
func (s *redisServer) kill() error {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil {
		return fmt.Errorf("killing redis-server: %w", err)
	}
	cmd.Wait() // "signal: killed"
	return nil
}

// replicaConfig is the config of one replica: clients with token, one
// upstream (api.openai.com, answered in memory by the test's
// fakeopenai.Router) of secrets in that order, chosen in that order
// (lb_policy order), its key states in store ("" for none), no records,
// and checks at 100 a second.
func replicaConfig(token, store string, secrets ...string) *config.Config {
	keys := make([]keypool.Key, len(secrets))
	for i, s := range secrets {
		keys[i] = keypool.NewKey(s)
	}
	cfg := &config.Config{
		Authorization: []secret.String{secret.New(token)},
		Upstream:      []config.Upstream{{Endpoint: "https://api.openai.com/v1", Keys: keys}},
		DBType:        "none",
		LBPolicy:      "order",
	}
	if store != "" {
		cfg.Store = secret.New(store)
	}
	cfg.Checker.Rate = 100
	return cfg
}

// replica is an app running (Run, with no listener: the test calls its
// Handler) until stop or the end of the test.
type replica struct {
	*app.App
	stop func() // ends Run and waits for it; once
}

// startReplica builds the app of cfg with opts and runs it.
func startReplica(t *testing.T, cfg *config.Config, opts app.Options) *replica {
	t.Helper()
	a, err := app.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	r := &replica{App: a, stop: sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})}
	t.Cleanup(r.stop)
	return r
}

// state is what the replica holds of key id; unchecked for a key it does
// not have.
func (r *replica) state(id keypool.KeyID) keypool.State {
	for _, k := range r.Transport().Snapshot() {
		if k.ID == id {
			return k.State
		}
	}
	return keypool.StateUnchecked
}

// chat sends a chat completion with the client token to h, and returns
// the answer. It may be called from any goroutine.
func chat(ctx context.Context, h http.Handler, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)).WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// mustChat is chat, ending the test unless the answer is a 200.
func mustChat(t *testing.T, h http.Handler, token string) {
	t.Helper()
	if rec := chat(t.Context(), h, token); rec.Code != http.StatusOK {
		t.Fatalf("a request: %d %s", rec.Code, rec.Body)
	}
}

// waitFor polls cond every 2ms until it holds, and returns how long that
// took; it ends the test if cond does not hold within within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("not within %v: %s", within, what)
	return 0
}
