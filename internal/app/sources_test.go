package app_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
)

// adminSources asks a's admin API for its keys, from loopback, and returns
// each key's source by ID; the answer must hold no secret.
func adminSources(t *testing.T, a *app.App, secrets ...string) map[keypool.KeyID]string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/admin/keys", nil)
	req.RemoteAddr = "127.0.0.1:4321"
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /admin/keys: %d %s", rec.Code, rec.Body)
	}
	for _, s := range secrets {
		if strings.Contains(rec.Body.String(), s) {
			t.Fatalf("a key is in the admin answer: %s", rec.Body)
		}
	}
	var keys []struct {
		ID     keypool.KeyID `json:"id"`
		Source string        `json:"source"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &keys); err != nil {
		t.Fatal(err)
	}
	out := map[keypool.KeyID]string{}
	for _, k := range keys {
		out[k.ID] = k.Source
	}
	return out
}

// TestSourcesFromEnv: serving OPENAI_KEY's keys (no config file), each
// key's source is its place in the list, counted from 1, in the admin API.
func TestSourcesFromEnv(t *testing.T) {
	t.Chdir(t.TempDir()) // no config.yaml here
	t.Setenv("OPENAI_KEY", "sk-env-ONE-1111, ,sk-env-THREE-3333")
	cfg, err := app.Load("", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBType = "none"
	a, err := app.New(cfg, app.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := adminSources(t, a, "ONE-1111", "THREE-3333")
	want := map[keypool.KeyID]string{
		keypool.NewKey("sk-env-ONE-1111").ID():   "OPENAI_KEY[1]",
		keypool.NewKey("sk-env-THREE-3333").ID(): "OPENAI_KEY[3]",
	}
	if len(got) != len(want) {
		t.Fatalf("sources %v; want %v", got, want)
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("%s: source %q; want %q", id, got[id], w)
		}
	}
}

// TestSourcesFromConfig: a config's keys show their line in the config or
// in its keys file, in the admin API.
func TestSourcesFromConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keysFile := write("keys.txt", "# spare keys\nsk-file-TWO-2222\n")
	path := write("config.yaml", "dbtype: none\nupstreams:\n  - endpoint: https://a.example/v1\n    sk: sk-conf-ONE-1111\n    keys_file: keys.txt\n")
	cfg, err := app.Load(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := adminSources(t, a, "ONE-1111", "TWO-2222")
	want := map[keypool.KeyID]string{
		keypool.NewKey("sk-conf-ONE-1111").ID(): path + ":4",
		keypool.NewKey("sk-file-TWO-2222").ID(): keysFile + ":2",
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("%s: source %q; want %q", id, got[id], w)
		}
	}
}
