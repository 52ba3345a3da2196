package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
)

// TestKeyOrigins: every key of a config carries where it is written: the
// config's line (and place, for several keys on one line) or the keys
// file's line, whatever mix of sk, keys and keys_file gives it.
func TestKeyOrigins(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys.txt"), []byte("# team keys\nsk-file-1\n\nsk-file-2 # spare\nsk-sk-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const file = `upstreams:
  - name: one
    endpoint: https://a.example/v1
    sk: sk-sk-1
    keys:
      - sk-block-1
      - sk-block-2
    keys_file: keys.txt
  - name: two
    endpoint: https://b.example/v1
    sk: "sk-list-1, ,sk-list-2,sk-list-1"
    keys: [sk-flow-1, sk-flow-2]
`
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ups, err := cfg.Upstreams()
	if err != nil {
		t.Fatal(err)
	}
	keysFile := filepath.Join(dir, "keys.txt")
	want := [][2]string{
		{"sk-sk-1", path + ":4"}, // sk's line wins over the keys file's line 5
		{"sk-block-1", path + ":6"},
		{"sk-block-2", path + ":7"},
		{"sk-file-1", keysFile + ":2"},
		{"sk-file-2", keysFile + ":4"},
		{"sk-list-1", path + ":11[1]"}, // listed twice: its first place
		{"sk-list-2", path + ":11[3]"}, // the empty entry counts
		{"sk-flow-1", path + ":12[1]"},
		{"sk-flow-2", path + ":12[2]"},
	}
	var got []keypool.Key
	for _, u := range ups {
		got = append(got, u.Keys...)
	}
	if len(got) != len(want) {
		t.Fatalf("%d keys; want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].ID() != keypool.NewKey(w[0]).ID() || got[i].Source() != w[1] {
			t.Errorf("key %d: %s from %q; want %s from %q", i, got[i].ID(), got[i].Source(), keypool.NewKey(w[0]).ID(), w[1])
		}
		if strings.Contains(got[i].Source(), "sk-") {
			t.Errorf("source %q holds key text", got[i].Source())
		}
	}
}

// TestKeyOriginTopLevelKeysFile: a config with only a top-level keys_file
// labels its keys by the file's lines.
func TestKeyOriginTopLevelKeysFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.txt"), []byte("\n\nsk-three\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("keys_file: k.txt\n"), "c.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	ups, err := cfg.Upstreams()
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 1 || len(ups[0].Keys) != 1 || ups[0].Keys[0].Source() != filepath.Join(dir, "k.txt")+":3" {
		t.Fatalf("upstreams %+v", ups)
	}
}

func TestParseKeyList(t *testing.T) {
	tests := []struct {
		list    string
		want    []string // secret=source
		wantErr string
	}{
		{list: "sk-a", want: []string{"sk-a=OPENAI_KEY[1]"}},
		{list: " sk-a , sk-b,,sk-c,sk-a", want: []string{"sk-a=OPENAI_KEY[1]", "sk-b=OPENAI_KEY[2]", "sk-c=OPENAI_KEY[4]"}},
		{list: ",,", want: nil},
		{list: "sk-a,sk-proj-LISTSECRET x", wantErr: "key 2 has white space inside"},
	}
	for _, tt := range tests {
		t.Run(tt.list, func(t *testing.T) {
			keys, err := config.ParseKeyList(tt.list, "OPENAI_KEY")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "LISTSECRET") {
					t.Fatalf("error %v; want one with %q and no key", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != len(tt.want) {
				t.Fatalf("%d keys; want %d", len(keys), len(tt.want))
			}
			for i, w := range tt.want {
				secret, source, _ := strings.Cut(w, "=")
				if keys[i].ID() != keypool.NewKey(secret).ID() || keys[i].Source() != source {
					t.Errorf("key %d from %q; want %s from %q", i, keys[i].Source(), secret, source)
				}
			}
		})
	}
}
