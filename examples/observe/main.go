// Command observe shows keypool's observer hooks: WithObserver with
// ObserverFuncs prints every attempt (which key, status, outcome, timing) and
// every change of a key's state, while a few chat completions run. Metrics,
// logs and alerts hang off the same two hooks.
//
//	OPENAI_KEY=sk-one,sk-two,sk-three go run ./observe
//
// OPENAI_BASE_URL (default https://api.openai.com/v1) points it at another
// upstream, such as the fake one CI uses.
//
// Observers are called synchronously from request goroutines, concurrently:
// keep them quick, make them safe for concurrent use, and never block.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "observe:", err)
		os.Exit(1)
	}
}

func run() error {
	base := os.Getenv("OPENAI_BASE_URL")
	if base == "" {
		base = "https://api.openai.com/v1"
	}
	keys := os.Getenv("OPENAI_KEY")
	if keys == "" {
		return errors.New("set OPENAI_KEY to one key or several, comma-separated")
	}

	var mu sync.Mutex // the hooks run concurrently; keep the lines whole
	t, err := keypool.New(
		keypool.WithUpstream(base, keys),
		keypool.WithObserver(keypool.ObserverFuncs{
			OnAttempt: func(e keypool.AttemptEvent) {
				mu.Lock()
				defer mu.Unlock()
				fmt.Printf("attempt  req=%d #%d key=%s model=%s stream=%v status=%d outcome=%s final=%v headers=%s total=%s",
					e.Request, e.Attempt, e.Key, e.Model, e.Stream, e.Status, e.Outcome, e.Final,
					e.TimeToHeaders.Round(time.Millisecond), e.Duration.Round(time.Millisecond))
				if e.Err != nil {
					fmt.Printf(" err=%v", e.Err)
				}
				fmt.Println()
			},
			OnStateChange: func(e keypool.StateEvent) {
				mu.Lock()
				defer mu.Unlock()
				fmt.Printf("state    key=%s %s -> %s reason=%q", e.Key, e.From, e.To, e.Reason)
				if e.Model != "" {
					fmt.Printf(" model=%s", e.Model)
				}
				if !e.Until.IsZero() {
					fmt.Printf(" until=%s", e.Until.Format(time.TimeOnly))
				}
				fmt.Println()
			},
		}),
	)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: t}

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for i := range 4 {
		if err := chat(ctx, client, base); err != nil {
			return fmt.Errorf("request %d: %w", i+1, err)
		}
	}
	return nil
}

func chat(ctx context.Context, client *http.Client, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// The final attempt's event fires when its body is read to the end (or
	// closed), so its Duration and Usage cover the whole answer.
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, raw)
	}
	return nil
}
