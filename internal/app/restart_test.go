package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
)

// TestServeRestartRemembersKeyStates is issue 15's "a restart remembers",
// without Redis: run 1 of keypool serve learns, by its start-up checks, a
// revoked and an over-quota key, and stops; run 2, a minute later over the
// same SQLite file, starts from those states: it sends those keys no
// request at all, neither a check nor a client's, and serves its clients
// with the good key. Neither run writes a key or a token to the database
// or the log.
//
// It needs keypool.WithStateStore from the root package (issue 15): over
// the stub of zz_stub_statestore.go no state reaches the database, and
// run 1's check says so.
//
// Both runs share one synctest bubble, with the upstream answered in memory
// (fakeopenai.Router): synctest.Wait is then the moment the start-up checks
// are done, and the minute between the runs passes at once.
func TestServeRestartRemembersKeyStates(t *testing.T) {
	const (
		good      = "sk-restart-good-0000000000000000"
		revoked   = "sk-restart-revoked-1111111111111"
		overQuota = "sk-restart-quota-22222222222222"
		token     = "tok-restart-client-333333333333"
	)
	secrets := []string{good, revoked, overQuota, token}
	db := filepath.Join(t.TempDir(), "db.sqlite")
	synctest.Test(t, func(t *testing.T) {
		fake := fakeopenai.New(fakeopenai.Config{},
			fakeopenai.Key{Secret: revoked, Behavior: fakeopenai.Revoked},
			fakeopenai.Key{Secret: overQuota, Behavior: fakeopenai.OverQuota},
			fakeopenai.Key{Secret: good})
		router := &fakeopenai.Router{Handler: fake}
		ids := map[string]keypool.KeyID{}
		for _, s := range []string{good, revoked, overQuota} {
			ids[s] = keypool.NewKey(s).ID()
		}
		cfg := func() *config.Config {
			return &config.Config{
				Authorization: []secret.String{secret.New(token)},
				Upstream: []config.Upstream{{Endpoint: "https://api.openai.com/v1",
					Keys: []keypool.Key{keypool.NewKey(revoked), keypool.NewKey(overQuota), keypool.NewKey(good)}}},
				DBType: "sqlite",
				DBAddr: secret.New(db),
			}
		}
		logs := &syncBuffer{}
		run := func() (*app.App, func()) {
			a, err := app.New(cfg(), app.Options{ShutdownTimeout: 5 * time.Second,
				Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				Transport: []keypool.Option{keypool.WithBase(router)}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx, nil) }()
			time.Sleep(10 * time.Second) // the start-up checks, paced at 5 a second
			synctest.Wait()
			return a, func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}
		}
		states := func(a *app.App) map[keypool.KeyID]keypool.State {
			out := map[keypool.KeyID]keypool.State{}
			for _, k := range a.Transport().Snapshot() {
				out[k.ID] = k.State
			}
			return out
		}

		// Run 1 learns.
		a, stop := run()
		got := states(a)
		if got[ids[revoked]] != keypool.StateRevoked || got[ids[overQuota]] != keypool.StateOverQuota || got[ids[good]] != keypool.StateReady {
			t.Fatalf("run 1 after its checks: %v", got)
		}
		stop()
		stored := storedStates(t, db)
		if stored[ids[revoked]] != keypool.StateRevoked || stored[ids[overQuota]] != keypool.StateOverQuota {
			t.Fatalf("the records database holds %v after run 1, want the revoked and the over-quota key (is keypool.WithStateStore still the stub?)", stored)
		}

		// Run 2 remembers.
		time.Sleep(time.Minute)
		fake.Reset()
		a, stop = run()
		got = states(a)
		if got[ids[revoked]] != keypool.StateRevoked || got[ids[overQuota]] != keypool.StateOverQuota {
			t.Errorf("run 2 starts with %v, want the states run 1 learned", got)
		}
		for i := range 6 {
			req := httptest.NewRequest("POST", "/v1/chat/completions",
				strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			a.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
			}
		}
		synctest.Wait()
		stop()
		for _, s := range []string{revoked, overQuota} {
			if n := fake.Count(s); n != 0 {
				t.Errorf("run 2 sent %d requests with the %s key, known bad since run 1", n, ids[s])
			}
		}
		if n := fake.Completions(good); n != 6 {
			t.Errorf("run 2 served %d completions with the good key, want 6", n)
		}
		log := logs.String()
		if !strings.Contains(log, `msg="key states loaded"`) || !strings.Contains(log, "over_quota=1 revoked=1") {
			t.Errorf("run 2 did not log the key states it loaded:\n%s", log)
		}
		for _, s := range secrets {
			if strings.Contains(log, s) {
				t.Errorf("the log holds a secret (%.12s…)", s)
			}
		}
	})
	// The database's files, the key states and the records alike.
	files, _ := filepath.Glob(db + "*")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(data), s) {
				t.Errorf("%s holds a secret (%.12s…)", filepath.Base(f), s)
			}
		}
	}
}

// storedStates returns the key states in the records database at path.
func storedStates(t *testing.T, path string) map[keypool.KeyID]keypool.State {
	t.Helper()
	st, err := records.Open(records.TypeSQLite, secret.New(path))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	states, skipped, err := st.LoadKeyStates(t.Context())
	if err != nil || len(skipped) > 0 {
		t.Fatalf("LoadKeyStates: %v, skipped %v", err, skipped)
	}
	out := map[keypool.KeyID]keypool.State{}
	for _, s := range states {
		out[s.ID] = s.State
	}
	return out
}
