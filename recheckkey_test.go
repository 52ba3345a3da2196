package keypool_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestRecheckKey: a key found over quota and then fixed is back after a
// check of that key alone; the other keys are not checked again, and an
// unknown ID is refused.
func TestRecheckKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []fakeopenai.Key{
			{Secret: "sk-one-000000000001", Behavior: fakeopenai.OverQuota},
			{Secret: "sk-one-000000000002"},
		}
		fake := fakeopenai.New(fakeopenai.Config{}, keys...)
		pipe, closePipe := fakeopenai.ServePipe(fake)
		defer closePipe()
		defer fake.Close()
		tr, err := keypool.New(keypool.WithBase(pipe),
			keypool.WithUpstream(fakeopenai.PipeBaseURL, keys[0].Secret+","+keys[1].Secret))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		checked := map[keypool.KeyID]int{}
		c, err := keypool.NewChecker(tr, keypool.WithRecheckEvery(time.Hour),
			keypool.WithCheckObserver(keypool.ObserverFuncs{OnChecked: func(r keypool.CheckResult) {
				mu.Lock()
				checked[r.Key]++
				mu.Unlock()
			}}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		time.Sleep(time.Second)
		synctest.Wait()
		over, ok := keypool.NewKey(keys[0].Secret).ID(), keypool.NewKey(keys[1].Secret).ID()
		if info, _ := tr.Pool().Key(over); info.State != keypool.StateOverQuota {
			t.Fatalf("first pass: %v", info.State)
		}

		fake.SetBehavior(keys[0].Secret, fakeopenai.OK) // billing fixed
		if err := c.RecheckKey(over); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if info, _ := tr.Pool().Key(over); info.State != keypool.StateReady {
			t.Errorf("after RecheckKey: %v", info.State)
		}
		mu.Lock()
		if checked[over] != 2 || checked[ok] != 1 {
			t.Errorf("checks per key: %v, want 2 of the rechecked key and 1 of the other", checked)
		}
		mu.Unlock()

		err = c.RecheckKey("kp_0000000000000000")
		if !errors.Is(err, keypool.ErrUnknownKey) || !strings.Contains(err.Error(), "kp_0000000000000000") {
			t.Errorf("unknown key: %v", err)
		}
		if err := c.RecheckKey("sk-pasted-by-mistake"); !errors.Is(err, keypool.ErrUnknownKey) || strings.Contains(err.Error(), "sk-pasted") {
			t.Errorf("a secret as the ID: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
