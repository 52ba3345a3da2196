// Command openai-go shows keypool under the official OpenAI Go SDK
// (github.com/openai/openai-go/v3): the SDK builds and parses requests, the
// keypool transport under it picks a key for each one and fails over between
// keys. It sends one chat completion and one streamed chat completion.
//
//	OPENAI_KEY=sk-one,sk-two,sk-three go run ./openai-go
//
// OPENAI_BASE_URL (default https://api.openai.com/v1) points it at another
// upstream, such as the fake one CI uses.
//
// # The SDK's retries and keypool's failover
//
// The SDK retries by itself (2 retries by default) on connection errors, 408,
// 409, 429 and 5xx. Its loop sits outside the transport, so each SDK attempt
// is a whole keypool request, which already tries up to WithMaxAttempts keys
// (4 by default). When keypool gives up, it has tried every key that could
// help, so it marks its answer "x-should-retry: false" and the SDK does not
// retry: the work is not multiplied (3 SDK attempts × 4 keys). A request no
// key can take gets keypool's own answer, in the API's shape: 503
// no_key_available when every key is revoked or out of quota (not retried),
// 404 model_not_found for a model no upstream serves, and 429 with
// Retry-After when a key frees up soon, which the SDK honours by coming back
// then (refusal_test.go shows each).
//
// Which settings to use:
//   - option.WithMaxRetries: the default (2) is fine and still helps with
//     errors keypool lets through (a dropped connection before any answer
//     when it cannot replay, or a Retry-After it asked for). Use
//     option.WithMaxRetries(0) if you want exactly one keypool request per
//     call, for instance to bound latency tightly; keypool's own WithMaxWait
//     and WithRetryTime then bound the waiting.
//   - The SDK has no timeout by default: give every call a context with a
//     deadline (or option.WithRequestTimeout). keypool honours the context:
//     a cancelled request stops at once and is not held against the key.
//   - option.WithAPIKey: not needed. The transport replaces the
//     Authorization header with the chosen key's; the SDK only insists on
//     some value, so pass any placeholder (the keys live in the pool).
//   - option.WithBaseURL: any base works (the transport moves each request
//     onto the chosen key's upstream); passing the upstream's own base keeps
//     logs and error messages readable.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/keypool/keypool"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "openai-go:", err)
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
	client := openai.NewClient(
		option.WithHTTPClient(&http.Client{Transport: t}),
		option.WithBaseURL(base),
		option.WithAPIKey("keypool"), // a placeholder: the transport sets the real key
		option.WithMaxRetries(2),     // the SDK's default, spelled out; see the package comment
	)

	// The SDK sets no timeout: bound the whole program's calls.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	params := openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	}

	res, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	if len(res.Choices) == 0 {
		return errors.New("chat: no choices")
	}
	fmt.Println("chat:", res.Choices[0].Message.Content)

	// A stream fails over too: keypool reads it up to its first event before
	// handing it back, so a stream that opens with an error tries another key.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	defer stream.Close()
	var text strings.Builder
	chunks := 0
	for stream.Next() {
		chunks++
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		return fmt.Errorf("stream: %w", err)
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
