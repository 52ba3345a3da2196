package keypool_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestRootImports keeps the library light: its non-test build depends only on
// the standard library, golang.org/x/time/rate and github.com/sethvargo/go-retry.
// cobra, yaml, Prometheus and database drivers belong to cmd/ and internal/.
func TestRootImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := []string{"github.com/keypool/keypool", "golang.org/x/time/", "github.com/sethvargo/go-retry"}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed nothing")
	}
	for _, dep := range deps {
		ok := dep == "github.com/keypool/keypool"
		for _, a := range allowed[1:] {
			ok = ok || strings.HasPrefix(dep, a)
		}
		if !ok {
			t.Errorf("the root package depends on %s", dep)
		}
	}
}

// TestModuleRequiresNoSDK keeps the OpenAI SDKs out of the library's
// go.mod, so that a program that imports keypool does not get them in its
// module graph: the tests that drive the proxy with the SDKs live in the
// examples module (examples/e2e).
func TestModuleRequiresNoSDK(t *testing.T) {
	out, err := exec.Command("go", "mod", "edit", "-json").Output()
	if err != nil {
		t.Fatalf("go mod edit: %v", err)
	}
	var mod struct{ Require []struct{ Path string } }
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	if len(mod.Require) == 0 {
		t.Fatal("go.mod requires nothing: go mod edit printed no requirements")
	}
	for _, r := range mod.Require {
		if r.Path == "github.com/openai/openai-go" || strings.HasPrefix(r.Path, "github.com/openai/openai-go/") ||
			r.Path == "github.com/sashabaranov/go-openai" {
			t.Errorf("the library's go.mod requires %s, an SDK: SDK tests belong to the examples module", r.Path)
		}
	}
}
