package keypool_test

import (
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
