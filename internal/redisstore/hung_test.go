package redisstore_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/redisstore"
)

// TestRedisHung is a Redis that takes connections and never answers: Load
// gives up within LoadTimeout, and Run returns within the drain's bounds
// (CloseRetry after the first failure, and go-redis's read timeout for the
// write under way), never waiting on it for longer.
func TestRedisHung(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: waits out a Redis that never answers")
	}
	hung := hungRedis(t)
	s := newStore(t, "redis://"+hung.Addr().String(), redisstore.Options{LoadTimeout: 300 * time.Millisecond, CloseRetry: 500 * time.Millisecond})
	start := time.Now()
	if _, err := s.Load(context.Background()); err == nil {
		t.Error("Load from a hung Redis: no error")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Load took %v, want about LoadTimeout (300ms)", took)
	}
	s.Subscribe(func(keypool.KeyState) {})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	s.Save(state(1, keypool.StateRevoked, time.Now()))
	time.Sleep(100 * time.Millisecond) // the write is under way, hung
	start = time.Now()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Run returned nil with a state unwritten")
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("Run took %v to return after its context ended", took)
		}
		t.Logf("Run returned %v after its context ended", time.Since(start))
	case <-time.After(20 * time.Second):
		panic("Run still running 20s after its context ended")
	}
}

// hungRedis listens on a loopback port that takes connections and never
// answers on them, until the test ends.
func hungRedis(t *testing.T) net.Listener {
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hung.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // held open, never answered
		}
	}()
	return hung
}
