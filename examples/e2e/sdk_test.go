package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	goopenai "github.com/sashabaranov/go-openai"

	"github.com/keypool/keypool/internal/fakeopenai"
)

func chatParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello.")},
	}
}

// TestOpenAIGo drives the proxy with the official client, as a user who
// changed only its base URL and API key would.
func TestOpenAIGo(t *testing.T) {
	st := newStack(t)
	client := openai.NewClient(
		option.WithBaseURL(st.proxy.URL+"/v1/"),
		option.WithAPIKey(clientToken),
		option.WithHTTPClient(st.client),
	)
	ctx := t.Context()

	t.Run("chat", func(t *testing.T) {
		res, err := client.Chat.Completions.New(ctx, chatParams())
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Choices) == 0 || res.Choices[0].Message.Content == "" {
			t.Fatalf("no content: %+v", res)
		}
		if res.Usage.PromptTokens == 0 || res.Usage.CompletionTokens == 0 || res.Usage.TotalTokens == 0 {
			t.Errorf("usage = %+v, want tokens counted", res.Usage)
		}
	})

	t.Run("stream", func(t *testing.T) {
		p := chatParams()
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := client.Chat.Completions.NewStreaming(ctx, p)
		defer stream.Close()
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			chunks++
			acc.AddChunk(stream.Current())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if chunks < 2 {
			t.Errorf("got %d chunks, want a real stream", chunks)
		}
		if len(acc.Choices) == 0 || acc.Choices[0].Message.Content == "" {
			t.Errorf("no streamed content: %+v", acc.ChatCompletion)
		}
		if acc.Usage.TotalTokens == 0 || acc.Usage.CompletionTokens == 0 {
			t.Errorf("usage = %+v, want the final usage chunk", acc.Usage)
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(page.Data))
		for i, m := range page.Data {
			ids[i] = m.ID
		}
		if !slices.Contains(ids, "gpt-4o-mini") {
			t.Errorf("models = %v, want gpt-4o-mini among them", ids)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		res, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: openai.EmbeddingModelTextEmbedding3Small,
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "two"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Data) != 2 || len(res.Data[0].Embedding) == 0 {
			t.Fatalf("embeddings = %d vectors, want 2 non-empty", len(res.Data))
		}
		if res.Usage.PromptTokens == 0 {
			t.Errorf("usage = %+v, want prompt tokens", res.Usage)
		}
	})

	checkFailover(t, st.fake)
}

// TestGoOpenAI drives the proxy with github.com/sashabaranov/go-openai.
func TestGoOpenAI(t *testing.T) {
	st := newStack(t)
	cfg := goopenai.DefaultConfig(clientToken)
	cfg.BaseURL = st.proxy.URL + "/v1"
	cfg.HTTPClient = st.client
	client := goopenai.NewClientWithConfig(cfg)
	ctx := t.Context()
	req := goopenai.ChatCompletionRequest{
		Model:    goopenai.GPT4oMini,
		Messages: []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: "Say hello."}},
	}

	t.Run("chat", func(t *testing.T) {
		res, err := client.CreateChatCompletion(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Choices) == 0 || res.Choices[0].Message.Content == "" {
			t.Fatalf("no content: %+v", res)
		}
		if res.Usage.TotalTokens == 0 {
			t.Errorf("usage = %+v, want tokens counted", res.Usage)
		}
	})

	t.Run("stream", func(t *testing.T) {
		req := req
		req.Stream = true
		req.StreamOptions = &goopenai.StreamOptions{IncludeUsage: true}
		stream, err := client.CreateChatCompletionStream(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		var content strings.Builder
		var usage *goopenai.Usage
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range chunk.Choices {
				content.WriteString(c.Delta.Content)
			}
			if chunk.Usage != nil {
				usage = chunk.Usage
			}
		}
		if content.Len() == 0 {
			t.Error("no streamed content")
		}
		if usage == nil || usage.TotalTokens == 0 {
			t.Errorf("usage = %+v, want the final usage chunk", usage)
		}
	})

	t.Run("models", func(t *testing.T) {
		list, err := client.ListModels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range list.Models {
			found = found || m.ID == "gpt-4o-mini"
		}
		if !found {
			t.Errorf("gpt-4o-mini not among %d models", len(list.Models))
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		res, err := client.CreateEmbeddings(ctx, goopenai.EmbeddingRequest{
			Input: []string{"one", "two"},
			Model: goopenai.SmallEmbedding3,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Data) != 2 || len(res.Data[0].Embedding) == 0 {
			t.Fatalf("embeddings = %d vectors, want 2 non-empty", len(res.Data))
		}
		if res.Usage.PromptTokens == 0 {
			t.Errorf("usage = %+v, want prompt tokens", res.Usage)
		}
	})

	checkFailover(t, st.fake)
}

// TestOpenAIGoLibrary uses the keypool transport directly as openai-go's
// HTTP transport, with no proxy in between.
func TestOpenAIGoLibrary(t *testing.T) {
	newClient := func(t *testing.T, keys []fakeopenai.Key) (openai.Client, *fakeopenai.Server) {
		fake, upstream := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
		tr := newTransport(t, upstream, keys)
		return openai.NewClient(
			option.WithBaseURL(upstream+"/"),
			option.WithAPIKey("unused-the-transport-sets-the-key"),
			option.WithHTTPClient(&http.Client{Transport: tr}),
		), fake
	}

	t.Run("chat", func(t *testing.T) {
		client, fake := newClient(t, mixedPool())
		for range 3 {
			res, err := client.Chat.Completions.New(t.Context(), chatParams())
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Choices) == 0 || res.Choices[0].Message.Content == "" {
				t.Fatalf("no content: %+v", res)
			}
		}
		checkFailover(t, fake)
	})

	// When every key has failed, the transport's last answer carries
	// x-should-retry: false, so the SDK gives up at once instead of sending
	// the whole round again (twice more, by default). The answer is
	// keypool's own (503 no_key_available), not the upstream's 401 or 429
	// about a pool key, which a client would take for its own.
	for _, tc := range []struct {
		name     string
		behavior fakeopenai.Behavior
		status   int
	}{
		{"revoked", fakeopenai.Revoked, http.StatusServiceUnavailable},
		{"terminated", fakeopenai.Terminated, http.StatusServiceUnavailable},
	} {
		t.Run("all-"+tc.name, func(t *testing.T) {
			keys := mixedPool()
			for i := range keys {
				keys[i].Behavior = tc.behavior
			}
			client, fake := newClient(t, keys)
			_, err := client.Chat.Completions.New(context.Background(), chatParams())
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v, want an *openai.Error", err)
			}
			if apiErr.StatusCode != tc.status {
				t.Errorf("status = %d, want %d", apiErr.StatusCode, tc.status)
			}
			if got := apiErr.Response.Header.Get("x-should-retry"); got != "false" {
				t.Errorf("x-should-retry = %q, want false", got)
			}
			recs := fake.Records()
			if len(recs) != len(keys) {
				t.Errorf("%d upstream requests, want %d (one per key, no SDK retry): %+v", len(recs), len(keys), recs)
			}
			seen := map[string]int{}
			for _, r := range recs {
				seen[r.Key]++
			}
			for _, k := range keys {
				if seen[k.Secret] != 1 {
					t.Errorf("a key was tried %d times, want once", seen[k.Secret])
				}
			}
		})
	}
}
