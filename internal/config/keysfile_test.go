package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
)

// TestReadKeysFile: the keys file a config or `keypool check --keys-file`
// names is read with keypool.ReadKeys; its errors start with "keypool: ",
// name the line and the file, never a key, and wrap fs.ErrNotExist for a
// missing file.
func TestReadKeysFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "keys.txt")
	if err := os.WriteFile(good, []byte("# keys\nsk-one\r\nsk-two # spare\n\nsk-one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("sk-one\nsk-proj-FILEWORD1 sk-proj-FILEWORD2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tab := filepath.Join(dir, "tab.txt")
	if err := os.WriteFile(tab, []byte("sk-proj-SECRETSECRET123\tsk-proj-OTHER\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "no-such-file.txt")

	tests := []struct {
		name     string
		path     string
		want     []keypool.Key
		wantErr  bool
		notExist bool
		errLine  int
	}{
		{name: "good file", path: good, want: []keypool.Key{keypool.NewKey("sk-one"), keypool.NewKey("sk-two")}},
		{name: "two words on line 2", path: bad, wantErr: true, errLine: 2},
		{name: "a tab between two keys", path: tab, wantErr: true, errLine: 1},
		{name: "missing file", path: missing, wantErr: true, notExist: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := config.ReadKeysFile(tt.path)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("ReadKeysFile: %v", err)
				}
				if !slices.Equal(ids(keys), ids(tt.want)) {
					t.Errorf("ReadKeysFile = %v; want %v", keys, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ReadKeysFile = %d keys, nil error; want an error", len(keys))
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "keypool: ") {
				t.Errorf("error %q does not start with the package name", msg)
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tt.notExist {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v; want %v", err, got, tt.notExist)
			}
			if tt.errLine > 0 && !regexp.MustCompile(`\bline `+strconv.Itoa(tt.errLine)+`\b`).MatchString(msg) {
				t.Errorf("error %q does not name line %d", msg, tt.errLine)
			}
			if !tt.notExist && !strings.Contains(msg, tt.path) {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, leak := range []string{"FILEWORD", "SECRETSECRET", "OTHER"} {
				if strings.Contains(msg, leak) {
					t.Errorf("error %q contains key text", msg)
				}
			}
		})
	}
}

// TestKeysEntryWithComma: one entry of a config's keys list is one key; a
// comma inside it is an error naming the entry's line, never its text.
func TestKeysEntryWithComma(t *testing.T) {
	_, err := config.Parse([]byte("upstreams:\n  - endpoint: https://a.example/v1\n    keys:\n      - k1\n      - \"sk-proj-COMMA1,sk-proj-COMMA2\"\n"), "c.yaml", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "c.yaml:5: upstream 1: keys: entry 2 has white space or a comma inside") {
		t.Fatalf("err %v", err)
	}
	if strings.Contains(err.Error(), "COMMA") {
		t.Errorf("error %q contains key text", err)
	}
}
