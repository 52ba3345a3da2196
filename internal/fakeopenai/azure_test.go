package fakeopenai_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeopenai"
)

// azureErr decodes Azure's {"error":{"code","message"}}.
func azureErr(t *testing.T, r reply) (code string) {
	t.Helper()
	var env struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil || env.Error == nil {
		t.Fatalf("not an error envelope (%v): %s", err, r.body)
	}
	if _, ok := env.Error["type"]; ok && env.Error["code"] != "content_filter" {
		t.Errorf("Azure's error has a type: %s", r.body)
	}
	c, _ := env.Error["code"].(string)
	return c
}

func TestAzurePaths(t *testing.T) {
	const key, other = "azure-key-1111111111111111", "azure-key-2222222222222222"
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{NoCompression: true},
		fakeopenai.Key{Secret: key, RPM: 2}, fakeopenai.Key{Secret: other, Behavior: fakeopenai.Revoked})
	s.AddDeployment("my-gpt4o", "gpt-4o")
	root := strings.TrimSuffix(base, "/v1")
	chat := map[string]any{"model": "ignored", "messages": []map[string]string{{"role": "user", "content": "hi"}}}
	apiKey := func(k string) map[string]string { return map[string]string{"api-key": k} }
	classic := "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"

	for _, tc := range []struct {
		name   string
		c      call
		status int
		code   string // Azure's error code, "" for a success
	}{
		{"classic", call{path: classic, header: apiKey(key), body: chat}, 200, ""},
		{"bearer on classic", call{path: classic, key: key, body: chat}, 401, "401"},
		{"no api-version", call{path: "/openai/deployments/my-gpt4o/chat/completions", header: apiKey(key), body: chat}, 404, "404"},
		{"unknown deployment", call{path: "/openai/deployments/nope/chat/completions?api-version=2024-10-21", header: apiKey(key), body: chat}, 404, "DeploymentNotFound"},
		{"revoked", call{path: classic, header: apiKey(other), body: chat}, 401, "401"},
		{"v1 with api-key", call{path: "/openai/v1/chat/completions", header: apiKey(key),
			body: map[string]any{"model": "my-gpt4o", "messages": chat["messages"]}}, 200, ""},
		{"rate limited", call{path: classic, header: apiKey(key), body: chat}, 429, "429"},
		{"content filter", call{path: "/openai/v1/chat/completions", key: key, body: map[string]any{"model": "my-gpt4o",
			"messages": []map[string]string{{"role": "user", "content": fakeopenai.ContentFilterTrigger}}}}, 400, "content_filter"},
		{"models", call{method: http.MethodGet, path: "/openai/models?api-version=2024-10-21", header: apiKey(key)}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.DefaultClient, root, tc.c)
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tc.status, r.body)
			}
			for _, h := range []string{"Openai-Organization", "X-Ratelimit-Limit-Requests", "X-Ratelimit-Reset-Requests", "X-Ratelimit-Reset-Tokens"} {
				if v := r.header.Get(h); v != "" {
					t.Errorf("%s = %q: Azure sends none", h, v)
				}
			}
			if tc.code != "" {
				if got := azureErr(t, r); got != tc.code {
					t.Errorf("code = %q, want %q", got, tc.code)
				}
			}
			switch tc.status {
			case 200:
				if tc.c.method == "" && r.header.Get("X-Ratelimit-Remaining-Requests") == "" {
					t.Errorf("no x-ratelimit-remaining-requests: %v", r.header)
				}
			case 429:
				if r.header.Get("Retry-After-Ms") == "" || r.header.Get("Retry-After") == "" {
					t.Errorf("429 without retry-after(-ms): %v", r.header)
				}
			}
		})
	}
	recs := s.Records()
	if got := recs[0]; got.Path != "/openai/deployments/my-gpt4o/chat/completions" || got.Deployment != "my-gpt4o" || got.Model != "gpt-4o" || got.Key != key || !got.Spent {
		t.Errorf("first record = %+v", got)
	}
	if got := recs[len(recs)-2]; got.Status != 400 || got.Spent {
		t.Errorf("content filter record = %+v", got)
	}
}

func TestAzureStream(t *testing.T) {
	const key = "azure-key-3333333333333333"
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key})
	s.AddDeployment("chat", "gpt-4o-mini")
	r := do(t, http.DefaultClient, strings.TrimSuffix(base, "/v1"), call{
		path: "/openai/deployments/chat/chat/completions?api-version=2024-10-21", header: map[string]string{"api-key": key},
		body: map[string]any{"model": "x", "stream": true, "stream_options": map[string]bool{"include_usage": true},
			"messages": []map[string]string{{"role": "user", "content": "hi"}}}})
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d %v", r.status, r.header)
	}
	text := string(r.body)
	if !strings.HasPrefix(text, `data: {"choices":[],`) || !strings.Contains(text, "prompt_filter_results") {
		t.Errorf("stream does not open with the prompt's filter results: %.200s", text)
	}
	if !strings.HasSuffix(text, "data: [DONE]\n\n") || !strings.Contains(text, `"usage":{`) {
		t.Errorf("stream does not end with usage and [DONE]: %s", text)
	}
	if recs := s.Records(); len(recs) != 1 || recs[0].Encoding != "gzip" || r.header.Get("Content-Encoding") != "" {
		t.Errorf("records %+v, Content-Encoding %q after the client decoded it", recs, r.header.Get("Content-Encoding"))
	}
}
