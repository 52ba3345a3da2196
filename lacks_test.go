package keypool_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestUnknownModelsAreBounded: a client that names ever new models that do
// not exist costs one upstream request per model for a whole organization
// (its keys' answers name it), and the pool remembers a bounded number of
// them, so its snapshot stays small.
func TestUnknownModelsAreBounded(t *testing.T) {
	org := []fakeopenai.Org{{ID: "org-shared", Title: "Acme", Slug: "acme"}}
	var keys []fakeopenai.Key
	for i := range 8 {
		keys = append(keys, fakeopenai.Key{Secret: fmt.Sprintf("sk-org-%02d", i), Orgs: org})
	}
	loner := fakeopenai.Key{Secret: "sk-alone-1"} // a personal org of its own
	fake, tr, _ := setup(t, []keypool.Option{keypool.WithMaxWait(0)}, append(keys, loner)...)
	const names = 1100
	for i := range names {
		model := fmt.Sprintf("no-such-model-%04d-%s", i, strings.Repeat("x", 200))
		req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(`{"model":"`+model+`"}`))
		resp, err := tr.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	// Each name is asked of at most one key per organization: the shared
	// one and the loner's, so two requests a name, once every key has
	// answered once (and so named its organization).
	if n, most := len(fake.Records()), 2*names+len(keys); n > most {
		t.Errorf("%d upstream requests for %d unknown models, want at most %d", n, names, most)
	}
	size := 0
	for _, k := range tr.Snapshot() {
		if len(k.Lacks) > 64 {
			t.Errorf("key %s remembers %d missing models, want at most 64", k.ID, len(k.Lacks))
		}
		for _, m := range k.Lacks {
			size += len(m)
		}
	}
	if size > 64*9*256 {
		t.Errorf("snapshot holds %d bytes of missing models", size)
	}
	// A real model is still served by the organization's keys.
	resp, _ := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 {
		t.Fatalf("gpt-4o after the flood: %d", resp.StatusCode)
	}
}
