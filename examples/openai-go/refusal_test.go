package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/keypool/keypool"
)

// TestRefusalsTheSDKUnderstands: with every key revoked, the SDK over the
// transport makes exactly one upstream request per key and returns at once
// with keypool's reason (503 no_key_available, x-should-retry: false, so it
// does not retry); the next call sends nothing upstream. When a key is only
// rate-limited, the answer says when it frees up (Retry-After).
func TestRefusalsTheSDKUnderstands(t *testing.T) {
	var requests atomic.Int32
	limited := atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if limited.Load() {
			w.Header().Set("Retry-After", "20")
			w.Header().Set("X-Ratelimit-Limit-Requests", "3")
			w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
			w.Header().Set("X-Ratelimit-Reset-Requests", "20s")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"message":"Incorrect API key provided: sk-rev***0001.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
	}))
	defer srv.Close()

	call := func(keys string, again bool) (*openai.Error, time.Duration, int32) {
		tr, err := keypool.New(keypool.WithUpstream(srv.URL+"/v1", keys), keypool.WithMaxWait(0))
		if err != nil {
			t.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		client := openai.NewClient(option.WithHTTPClient(&http.Client{Transport: tr}), option.WithBaseURL(srv.URL+"/v1"),
			option.WithAPIKey("keypool"), option.WithMaxRetries(2))
		params := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
		requests.Store(0)
		start := time.Now()
		_, err = client.Chat.Completions.New(context.Background(), params)
		took := time.Since(start)
		sent := requests.Load()
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("err = %v, want an *openai.Error", err)
		}
		if !again {
			return apiErr, took, sent
		}
		// A second call: nothing left to try, and keypool says so at once.
		requests.Store(0)
		_, err = client.Chat.Completions.New(context.Background(), params)
		var second *openai.Error
		if !errors.As(err, &second) || requests.Load() != 0 {
			t.Fatalf("second call: %v, %d upstream requests", err, requests.Load())
		}
		// keypool's own answer, with its code; a plain http.Client caller
		// gets the reason itself from keypool.Refusal.
		if second.Code != "no_key_available" {
			t.Fatalf("second call: not keypool's refusal: %v", second)
		}
		return apiErr, took, sent
	}

	apiErr, took, sent := call("sk-rev-0001,sk-rev-0002,sk-rev-0003", true)
	if apiErr.StatusCode != http.StatusServiceUnavailable || apiErr.Code != "no_key_available" ||
		strings.Contains(apiErr.Message, "sk-rev") {
		t.Fatalf("all revoked: %d %s %q", apiErr.StatusCode, apiErr.Code, apiErr.Message)
	}
	if sent != 3 || took > 2*time.Second {
		t.Fatalf("the SDK sent %d upstream requests in %v, want one per key (3), at once", sent, took)
	}

	limited.Store(true)
	apiErr, took, sent = call("sk-lim-0001", false)
	if apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Response.Header.Get("Retry-After") == "" || sent != 1 || took > 2*time.Second {
		t.Fatalf("rate-limited: %d after %d requests and %v, headers %v", apiErr.StatusCode, sent, took, apiErr.Response.Header)
	}
}
