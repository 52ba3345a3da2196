package app_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestAzureConfigRoutes: a config mixing an OpenAI upstream and an Azure
// one, as keypool serve builds it, routes each model to its service, and
// Azure's answers, streams included, reach the client in OpenAI's shape.
func TestAzureConfigRoutes(t *testing.T) {
	const openaiKey, azureKey, token = "sk-app-openai-aaaaaaaaaaaa", "0123456789abcdef0123456789abcdef", "tok-app-azure-bbbbbbbbbb"
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: openaiKey}, fakeopenai.Key{Secret: azureKey})
	fake.AddDeployment("prod-gpt4o", "gpt-4o")
	file := fmt.Sprintf(`authorization: %s
dbtype: none
upstreams:
  - name: openai
    endpoint: %s
    sk: %s
    allow: ["gpt-4.1*"]
  - name: azure
    type: azure
    endpoint: %s
    sk: %s
    allow: ["gpt-4o"]
    deployments: {gpt-4o: prod-gpt4o, never-asked: other}
`, token, base, openaiKey, strings.TrimSuffix(base, "/v1"), azureKey)
	cfg, err := config.Parse([]byte(file), "config.yaml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model  string
		stream bool
		path   string
		key    string
	}{
		{"gpt-4.1", false, "/v1/chat/completions", openaiKey},
		{"gpt-4o", false, "/openai/deployments/prod-gpt4o/chat/completions", azureKey},
		{"gpt-4o", true, "/openai/deployments/prod-gpt4o/chat/completions", azureKey},
	} {
		fake.Reset()
		r := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(fmt.Sprintf(
			`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, tc.model, tc.stream)))
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		a.Handler().ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.model, w.Code, w.Body)
		}
		if tc.stream && !strings.HasSuffix(w.Body.String(), "data: [DONE]\n\n") {
			t.Errorf("%s stream: %s", tc.model, w.Body)
		}
		recs := fake.Records()
		if len(recs) != 1 || recs[0].Path != tc.path || recs[0].Key != tc.key {
			t.Errorf("%s went to %+v", tc.model, recs)
		}
		if strings.Contains(w.Body.String(), azureKey) || strings.Contains(w.Header().Get("Api-Key"), azureKey) {
			t.Errorf("the answer holds the key")
		}
	}
}
