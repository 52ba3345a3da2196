package keypool_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

const sourceTestSecret = "sk-proj-SOURCESECRET42"

func TestKeyWithSource(t *testing.T) {
	long := strings.Repeat("d/", 100) + "keys.txt:12"
	tests := []struct {
		name, label, want string
	}{
		{"keys file line", "keys.txt:12", "keys.txt:12"},
		{"env index", "OPENAI_KEY[3]", "OPENAI_KEY[3]"},
		{"none", "", ""},
		{"holds the secret", "keys.txt:" + sourceTestSecret, ""},
		{"is the secret", sourceTestSecret, ""},
		{"line breaks cannot forge a log line", "a.txt:1\nlevel=ERROR", "a.txt:1?level=ERROR"},
		{"invalid UTF-8", "k\xffeys:1", "k?eys:1"},
		{"too long keeps the end", long, "…" + long[len(long)-(keypool.MaxSourceLen-len("…")):]},
		{"too long, cut inside a rune", strings.Repeat("é", 100), "…" + strings.Repeat("é", (keypool.MaxSourceLen-len("…"))/2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := keypool.NewKey(sourceTestSecret)
			got := k.WithSource(tt.label)
			if got.Source() != tt.want {
				t.Errorf("Source() = %q; want %q", got.Source(), tt.want)
			}
			if len(got.Source()) > keypool.MaxSourceLen {
				t.Errorf("source of %d bytes; the bound is %d", len(got.Source()), keypool.MaxSourceLen)
			}
			if got.ID() != k.ID() {
				t.Errorf("the source changed the ID: %s, was %s", got.ID(), k.ID())
			}
			if k.Source() != "" {
				t.Errorf("WithSource changed the original: %q", k.Source())
			}
			b, _ := json.Marshal(got)
			for _, s := range []string{string(b), fmt.Sprintf("%v %+v %#v %s", got, got, got, got)} {
				if strings.Contains(s, "SOURCESECRET") {
					t.Errorf("the secret shows: %s", s)
				}
			}
			if tt.want != "" && !strings.Contains(string(b), `"source":`) {
				t.Errorf("JSON %s has no source", b)
			}
		})
	}
	// A clone keeps its key's source; the order of the With… calls does not matter.
	a := keypool.NewKey(sourceTestSecret).WithSource("keys.txt:4").WithOrganization("org-x")
	b := keypool.NewKey(sourceTestSecret).WithOrganization("org-x").WithSource("keys.txt:4")
	if a.Source() != "keys.txt:4" || b.Source() != a.Source() || a.ID() != b.ID() {
		t.Errorf("WithOrganization then WithSource = %q (%v); the other order %q (%v)", a.Source(), a.ID(), b.Source(), b.ID())
	}
	// The guard is against this key's secret, even when organization and source came first.
	if k := keypool.NewKey(sourceTestSecret).WithOrganization("org-x").WithSource("x" + sourceTestSecret); k.Source() != "" {
		t.Errorf("source %q holds the secret", k.Source())
	}
}

// namedReader is a reader with a name, as an *os.File is.
type namedReader struct {
	io.Reader
	name string
}

func (n namedReader) Name() string { return n.name }

func TestReadKeysSources(t *testing.T) {
	in := "# keys\nsk-a\n\n  sk-b  # backup\nsk-a\n#sk-x\nsk-c\n"
	tests := []struct {
		name string
		r    io.Reader
		want []string
	}{
		{"named reader (a file)", namedReader{strings.NewReader(in), "conf/keys.txt"}, []string{"conf/keys.txt:2", "conf/keys.txt:4", "conf/keys.txt:7"}},
		{"unnamed reader", strings.NewReader(in), []string{"line 2", "line 4", "line 7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := keypool.ReadKeys(tt.r)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range keys {
				got = append(got, k.Source())
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("sources %q; want %q", got, tt.want)
			}
		})
	}
	// ParseKeys cannot know where its list came from.
	keys, _ := keypool.ParseKeys("sk-a,sk-b")
	for _, k := range keys {
		if k.Source() != "" {
			t.Errorf("ParseKeys gave a source %q", k.Source())
		}
	}
}

// TestSourceInSnapshotAndCheck: a key's source shows in its check result,
// its snapshot and its snapshot's JSON, and an organization clone the
// checker makes has its key's.
func TestSourceInSnapshotAndCheck(t *testing.T) {
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-multi", Orgs: []fakeopenai.Org{
			{ID: "org-home", Title: "Home", Default: true},
			{ID: "org-work", Title: "Work"},
		}},
		fakeopenai.Key{Secret: "sk-svcacct-robot"})
	keys := []keypool.Key{
		keypool.NewKey("sk-multi").WithSource("keys.txt:12"),
		keypool.NewKey("sk-svcacct-robot").WithSource("OPENAI_KEY[3]"),
		keypool.NewKey("sk-unlabelled"),
	}
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{Name: "main", BaseURL: base, Keys: keys}))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
	results, err := c.CheckAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	clone := keypool.NewKey("sk-multi").WithOrganization("org-work").ID()
	want := map[keypool.KeyID]string{
		keys[0].ID(): "keys.txt:12", clone: "keys.txt:12", keys[1].ID(): "OPENAI_KEY[3]", keys[2].ID(): "",
	}
	if len(results) != len(want) {
		t.Fatalf("%d results; want %d", len(results), len(want))
	}
	for _, r := range results {
		if w, ok := want[r.Key]; !ok || r.Source != w {
			t.Errorf("check result %s: source %q; want %q", r.Key, r.Source, w)
		}
	}
	snap := tr.Snapshot()
	if len(snap) != len(want) {
		t.Fatalf("%d keys in the snapshot; want %d", len(snap), len(want))
	}
	for _, ki := range snap {
		if ki.Source != want[ki.ID] {
			t.Errorf("snapshot %s: source %q; want %q", ki.ID, ki.Source, want[ki.ID])
		}
	}
	b, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var decoded []struct {
		ID     keypool.KeyID `json:"id"`
		Source *string       `json:"source"`
	}
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	for _, d := range decoded {
		switch {
		case want[d.ID] == "" && d.Source != nil:
			t.Errorf("JSON of %s has a source %q; want none (omitempty)", d.ID, *d.Source)
		case want[d.ID] != "" && (d.Source == nil || *d.Source != want[d.ID]):
			t.Errorf("JSON of %s: source %v; want %q", d.ID, d.Source, want[d.ID])
		}
	}
	if info, ok := tr.Pool().Key(clone); !ok || info.Source != "keys.txt:12" {
		t.Errorf("Pool.Key(clone) = %q, %v", info.Source, ok)
	}
}
