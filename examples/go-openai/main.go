// Command go-openai shows keypool under github.com/sashabaranov/go-openai:
// the keypool transport goes in ClientConfig.HTTPClient, and every request
// the client sends gets the best key, failing over between keys. It sends one
// chat completion and one streamed chat completion.
//
//	OPENAI_KEY=sk-one,sk-two,sk-three go run ./go-openai
//
// OPENAI_BASE_URL (default https://api.openai.com/v1) points it at another
// upstream, such as the fake one CI uses.
//
// go-openai never retries by itself, so keypool's failover is the only retry
// loop; go-openai has no timeout either, so give each call a context with a
// deadline.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/keypool/keypool"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go-openai:", err)
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

	t, err := keypool.New(keypool.WithUpstream(base, keys))
	if err != nil {
		return err
	}
	// The token is a placeholder: the transport replaces the Authorization
	// header with the chosen key's.
	cfg := goopenai.DefaultConfig("keypool")
	cfg.BaseURL = base
	cfg.HTTPClient = &http.Client{Transport: t}
	client := goopenai.NewClientWithConfig(cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	req := goopenai.ChatCompletionRequest{
		Model:    goopenai.GPT4oMini,
		Messages: []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: "Say hello."}},
	}
	res, err := client.CreateChatCompletion(ctx, req)
	if err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	if len(res.Choices) == 0 {
		return errors.New("chat: no choices")
	}
	fmt.Println("chat:", res.Choices[0].Message.Content)

	req.Stream = true
	stream, err := client.CreateChatCompletionStream(ctx, req)
	if err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	defer stream.Close()
	var text strings.Builder
	chunks := 0
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("stream: %w", err)
		}
		chunks++
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if text.Len() == 0 {
		return errors.New("stream: no content")
	}
	fmt.Printf("stream: %s (%d chunks)\n", text.String(), chunks)

	for _, k := range t.Snapshot() {
		fmt.Printf("  %s %s\n", k.ID, k.State)
	}
	return nil
}
