package redisstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/redisstore"
	"github.com/keypool/keypool/internal/secret"
)

// testRedis returns the address of the Redis the tests use
// (KEYPOOL_TEST_REDIS, HOST:PORT; .ci/run starts one), or skips.
func testRedis(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("KEYPOOL_TEST_REDIS")
	if addr == "" {
		t.Skip("no Redis: set KEYPOOL_TEST_REDIS=HOST:PORT (.ci/run starts one)")
	}
	return addr
}

// prefix is a prefix of Redis keys of the test's own, so that tests (and
// runs) do not see each other's states; its keys (budgets among them) are
// deleted at the end.
func prefix(t testing.TB, addr string) string {
	p := fmt.Sprintf("kptest:%s:%d:", t.Name(), time.Now().UnixNano())
	t.Cleanup(func() {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		ctx := context.Background()
		c.Del(ctx, p+"states", p+"updated")
		iter := c.Scan(ctx, 0, globEscape(p)+"budget:*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return p
}

// globEscape escapes what SCAN's MATCH takes for a pattern in s.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^-`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func newStore(t testing.TB, url string, opt redisstore.Options) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(secret.New(url), opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs s until the test ends, then checks that Run returned.
func run(t testing.TB, s *redisstore.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context's end")
		}
	})
}

func TestMain(m *testing.M) {
	redisstore.QuietClientLog() // go-redis logs every failed dial; the Store logs outages once
	os.Exit(m.Run())
}

func id(i int) keypool.KeyID { return keypool.KeyID(fmt.Sprintf("kp_%016x", i)) }

func state(i int, st keypool.State, updated time.Time) keypool.KeyState {
	return keypool.KeyState{ID: id(i), Upstream: "https://api.openai.com/v1", State: st, Reason: "test",
		Models: []string{"gpt-4o"}, Updated: updated}
}

// eventually polls cond every 5ms for up to 5s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within 5s: %s", what)
}

func load(t testing.TB, s *redisstore.Store) map[keypool.KeyID]keypool.KeyState {
	t.Helper()
	states, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[keypool.KeyID]keypool.KeyState{}
	for _, st := range states {
		m[st.ID] = st
	}
	return m
}

func TestSaveLoadLaterWins(t *testing.T) {
	addr := testRedis(t)
	p := prefix(t, addr)
	url := "redis://" + addr + "/0"
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

	a := newStore(t, url, redisstore.Options{Prefix: p})
	run(t, a)
	a.Save(state(1, keypool.StateRevoked, t0.Add(2*time.Second)))
	a.Save(state(2, keypool.StateReady, t0))
	eventually(t, "two states written", func() bool { return a.Stats().Written == 2 })

	// Another writer's older state of key 1 must not replace the newer one;
	// a newer state of key 2 must.
	b := newStore(t, url, redisstore.Options{Prefix: p})
	run(t, b)
	b.Save(state(1, keypool.StateReady, t0.Add(time.Second)))
	b.Save(state(2, keypool.StateOverQuota, t0.Add(time.Second)))
	eventually(t, "two more states written", func() bool { return b.Stats().Written == 2 })

	c := newStore(t, url, redisstore.Options{Prefix: p})
	defer c.Close()
	got := load(t, c)
	tests := []struct {
		id      keypool.KeyID
		state   keypool.State
		updated time.Time
	}{
		{id(1), keypool.StateRevoked, t0.Add(2 * time.Second)},
		{id(2), keypool.StateOverQuota, t0.Add(time.Second)},
	}
	if len(got) != len(tests) {
		t.Errorf("loaded %d states, want %d", len(got), len(tests))
	}
	for _, tt := range tests {
		t.Run(string(tt.id), func(t *testing.T) {
			st := got[tt.id]
			if st.State != tt.state || !st.Updated.Equal(tt.updated) {
				t.Errorf("loaded %v at %v, want %v at %v", st.State, st.Updated, tt.state, tt.updated)
			}
			if !slices.Equal(st.Models, []string{"gpt-4o"}) || st.Upstream == "" || st.Reason != "test" {
				t.Errorf("loaded %+v: fields lost on the way", st)
			}
		})
	}
}

func TestBadDataSkipped(t *testing.T) {
	addr := testRedis(t)
	p := prefix(t, addr)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	ctx := context.Background()
	good := `{"id":"kp_0000000000000001","upstream":"u","state":"revoked","updated":"2026-12-01T10:00:00Z"}`
	rc.HSet(ctx, p+"states",
		"kp_0000000000000001", good,
		"kp_0000000000000002", `not json sk-SECRET-in-other-data`,
		"kp_0000000000000003", `{"id":"kp_0000000000000003","state":"exploded","updated":"2026-12-01T10:00:00Z"}`,
		"kp_0000000000000004", `{"id":"kp_0000000000000004","state":"cooling","updated":"2026-12-01T10:00:00Z"}`,
		"kp_0000000000000005", `{"id":"kp_0000000000000005","state":"ready"}`,
		"kp_0000000000000006", `{"id":"kp_0000000000000007","state":"ready","updated":"2026-12-01T10:00:00Z"}`,
		"kp_0000000000000008", `{"id":"kp_0000000000000008","state":7,"updated":"2026-12-01T10:00:00Z"}`,
		"sk-SECRET-field", good,
		"kp_0000000000000009", `[1,2,3]`,
	)
	var logs bytes.Buffer
	s := newStore(t, "redis://"+addr, redisstore.Options{Prefix: p,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	got := load(t, s)
	if len(got) != 1 || got["kp_0000000000000001"].State != keypool.StateRevoked {
		t.Errorf("loaded %v, want only kp_0000000000000001 revoked", got)
	}
	if n := s.Stats().Skipped; n != 8 {
		t.Errorf("Skipped = %d, want 8", n)
	}
	if strings.Contains(logs.String(), "SECRET") {
		t.Errorf("the log shows what the skipped entries hold:\n%s", logs.String())
	}

	// Messages that do not decode are skipped too; the good one after them
	// arrives.
	var mu sync.Mutex
	var heard []keypool.KeyState
	s.Subscribe(func(st keypool.KeyState) { mu.Lock(); heard = append(heard, st); mu.Unlock() })
	run(t, s)
	eventually(t, "the first resync", func() bool { return s.Stats().Resyncs == 1 })
	for _, msg := range []string{`garbage sk-SECRET`, `{"id":"x","state":"ready","updated":"2026-12-01T10:00:00Z"}`, `{}`, good} {
		rc.Publish(ctx, p+"states", msg)
	}
	eventually(t, "the good message", func() bool { mu.Lock(); defer mu.Unlock(); return len(heard) == 2 })
	if n := s.Stats().Skipped; n != 8+8+3 { // the resync skipped the 8 again
		t.Errorf("Skipped = %d, want %d", n, 8+8+3)
	}
	if strings.Contains(logs.String(), "SECRET") {
		t.Errorf("the log shows what the skipped messages hold:\n%s", logs.String())
	}
}

// TestReplicasHearEachOther saves on one Store and measures how long its
// state takes to reach the apply of another over the same Redis.
func TestReplicasHearEachOther(t *testing.T) {
	addr := testRedis(t)
	p := prefix(t, addr)
	url := "redis://" + addr + "/0"
	a := newStore(t, url, redisstore.Options{Prefix: p})
	b := newStore(t, url, redisstore.Options{Prefix: p})
	arrived := make(chan keypool.KeyState, 1000)
	b.Subscribe(func(st keypool.KeyState) { arrived <- st })
	a.Subscribe(func(keypool.KeyState) {}) // a hears its own: harmless
	run(t, a)
	run(t, b)
	eventually(t, "b subscribed", func() bool { return b.Stats().Resyncs == 1 })

	const changes = 200
	delays := make([]time.Duration, 0, changes)
	for i := range changes {
		sent := time.Now()
		a.Save(state(i%10, []keypool.State{keypool.StateReady, keypool.StateRevoked}[i%2], sent))
		select {
		case st := <-arrived:
			if st.ID != id(i%10) || !st.Updated.Equal(sent) {
				t.Fatalf("change %d: heard %s at %v, want %s at %v", i, st.ID, st.Updated, id(i%10), sent)
			}
			delays = append(delays, time.Since(sent))
		case <-time.After(5 * time.Second):
			t.Fatalf("change %d not heard within 5s", i)
		}
	}
	slices.Sort(delays)
	p50, p99 := delays[changes/2], delays[changes*99/100]
	t.Logf("a state change reaches another replica in p50 %v, p99 %v, max %v (%d changes)", p50, p99, delays[changes-1], changes)
	if p99 > 100*time.Millisecond {
		t.Errorf("p99 %v, want at most 100ms", p99)
	}
}

// closedPort returns an address on 127.0.0.1 where nothing listens.
func closedPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestRedisDown(t *testing.T) {
	addr := closedPort(t)
	var logs bytes.Buffer
	s := newStore(t, "redis://:pw-SECRET-redis@"+addr+"/0", redisstore.Options{Prefix: "kptest:down:", MaxPending: 50,
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, CloseRetry: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	s.Subscribe(func(keypool.KeyState) {})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	now := time.Now()
	start := time.Now()
	for i := range 1000 {
		s.Save(state(i%100, keypool.StateRevoked, now.Add(time.Duration(i))))
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("1000 Saves took %v with Redis down: Save must not wait for it", d)
	}
	eventually(t, "several failed tries", func() bool { return s.Stats().Errors >= 5 })
	st := s.Stats()
	if st.Pending > 50 {
		t.Errorf("Pending = %d, want at most MaxPending 50", st.Pending)
	}
	if st.Dropped < 1000-50*10 { // keys 50..99 do not fit, ten saves each
		t.Errorf("Dropped = %d, want at least %d", st.Dropped, 1000-50*10)
	}
	if st.Outages != 1 {
		t.Errorf("Outages = %d, want 1 (one outage, however many errors)", st.Outages)
	}
	cancel()
	err := <-done
	if err == nil {
		t.Error("Run returned nil with 50 states unwritten")
	}
	if n := strings.Count(logs.String(), "out of reach;"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, logs.String())
	}
	for _, text := range []string{logs.String(), fmt.Sprint(err), fmt.Sprintf("%v %+v %#v", s, s, s), s.String()} {
		if strings.Contains(text, "pw-SECRET") {
			t.Errorf("the password shows: %s", text)
		}
	}
	if !strings.Contains(s.String(), addr) {
		t.Errorf("String() = %q, want the address %s", s, addr)
	}
}

func TestNewBadURL(t *testing.T) {
	for _, url := range []string{"http://h:1/0", "redis://:pw-SECRET-x@h:1/notadb", "::"} {
		_, err := redisstore.New(secret.New(url), redisstore.Options{})
		if err == nil {
			t.Errorf("New(%q) = nil error", url)
			continue
		}
		if strings.Contains(err.Error(), "pw-SECRET") {
			t.Errorf("New's error shows the password: %v", err)
		}
	}
}

// TestResyncAfterRestart stops Redis while a replica listens, saves
// meanwhile, and starts Redis again, empty: the states wait, are written,
// and the listener resyncs; a state written before the restart, which the
// empty Redis lost, is written again by the replica that heard it, so that
// a replica that starts afterwards loads it. It runs a redis-server of its
// own (KEYPOOL_TEST_REDIS_SERVER names the binary).
func TestResyncAfterRestart(t *testing.T) {
	bin := os.Getenv("KEYPOOL_TEST_REDIS_SERVER")
	if bin == "" {
		t.Skip("KEYPOOL_TEST_REDIS_SERVER does not name a redis-server binary")
	}
	addr := closedPort(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		eventually(t, "redis-server answers", func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		return cmd
	}
	srv := start()
	opt := redisstore.Options{RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}
	a := newStore(t, "redis://"+addr, opt)
	b := newStore(t, "redis://"+addr, opt)
	var mu sync.Mutex
	heard := map[keypool.KeyID]keypool.State{}
	b.Subscribe(func(st keypool.KeyState) { mu.Lock(); heard[st.ID] = st.State; mu.Unlock() })
	run(t, a)
	run(t, b)
	eventually(t, "b subscribed", func() bool { return b.Stats().Resyncs == 1 })
	before := time.Now()
	a.Save(state(2, keypool.StateOverQuota, before))
	eventually(t, "b hears the state saved before the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return heard[id(2)] == keypool.StateOverQuota
	})

	srv.Process.Kill()
	srv.Wait()
	now := time.Now()
	a.Save(state(1, keypool.StateRevoked, now))
	eventually(t, "a sees the outage", func() bool { return a.Stats().Errors > 0 && b.Stats().Errors > 0 })
	start()
	eventually(t, "a writes what waited", func() bool { return a.Stats().Written == 1 })
	eventually(t, "b resyncs and hears it", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return heard[id(1)] == keypool.StateRevoked && b.Stats().Resyncs >= 2
	})
	if a.Stats().Outages != 1 {
		t.Errorf("a's Outages = %d, want 1", a.Stats().Outages)
	}
	eventually(t, "b writes again what the empty Redis lost", func() bool { return b.Stats().Refilled == 1 })
	c := newStore(t, "redis://"+addr, opt)
	eventually(t, "a replica started after the restart loads both states", func() bool {
		got := load(t, c)
		return got[id(1)].State == keypool.StateRevoked && got[id(2)].State == keypool.StateOverQuota && got[id(2)].Updated.Equal(before)
	})
}
