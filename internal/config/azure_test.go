package config_test

import (
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
)

func TestAzureUpstream(t *testing.T) {
	file := `upstreams:
  - name: openai
    sk: sk-openai-aaaaaaaaaaaa
    allow: ["gpt-4.1*"]
  - name: azure-east
    type: azure
    endpoint: https://east.openai.azure.com
    keys: ["0123456789abcdef0123456789abcdef"]
    api_version: 2025-04-01-preview
    deployments:
      gpt-4o: my-gpt4o
      never-asked-for: some-deployment   # a model no one asks for is no error
  - name: azure-v1
    type: Azure
    endpoint: https://west.openai.azure.com/openai/v1
    sk: fedcba9876543210fedcba9876543210
    api_version: 2024-10-21
`
	cfg, err := config.Parse([]byte(file), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0], "c.yaml:17: upstream 3: api_version is not used") {
		t.Errorf("warnings %q", cfg.Warnings)
	}
	ups, err := cfg.Upstreams()
	if err != nil {
		t.Fatal(err)
	}
	if ups[0].Type != keypool.TypeOpenAI || ups[0].Deployments != nil || ups[0].APIVersion != "" {
		t.Errorf("openai upstream %+v", ups[0])
	}
	east := ups[1]
	if east.Type != keypool.TypeAzure || east.APIVersion != "2025-04-01-preview" || east.BaseURL != "https://east.openai.azure.com" ||
		len(east.Deployments) != 2 || east.Deployments["gpt-4o"] != "my-gpt4o" || len(east.Keys) != 1 {
		t.Errorf("azure upstream %+v", east)
	}
	if ups[2].Type != keypool.TypeAzure || ups[2].Deployments != nil {
		t.Errorf("azure v1 upstream %+v", ups[2])
	}
	if _, err := keypool.New(keypool.WithUpstreams(ups...)); err != nil {
		t.Errorf("the library refuses the config's upstreams: %v", err)
	}
}
