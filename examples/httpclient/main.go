// Command httpclient shows keypool at its simplest: a plain http.Client whose
// Transport is a keypool.Transport. It sends one chat completion, prints the
// reply, then prints the pool's snapshot: every key by its ID (never its
// secret) and the state the pool learned for it.
//
//	OPENAI_KEY=sk-one,sk-two,sk-three go run ./httpclient
//
// OPENAI_BASE_URL (default https://api.openai.com/v1) points it at another
// upstream, such as the fake one CI uses.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/keypool/keypool"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "httpclient:", err)
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

	// One Transport for the whole program: it holds the pool and what it
	// learns about every key.
	t, err := keypool.New(keypool.WithUpstream(base, keys))
	if err != nil {
		return err
	}
	client := &http.Client{Transport: t}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]any{
		"model":    "gpt-4o-mini",
		"messages": []map[string]string{{"role": "user", "content": "Say hello."}},
	})
	// No Authorization header: the transport sets the chosen key's.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, raw)
	}
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return err
	}
	if len(out.Choices) == 0 {
		return errors.New("no choices in the answer")
	}
	fmt.Println("reply:", out.Choices[0].Message.Content)

	fmt.Println("pool:")
	for _, k := range t.Snapshot() {
		fmt.Printf("  %s %-10s %s\n", k.ID, k.State, k.Reason)
	}
	return nil
}
