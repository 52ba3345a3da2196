package app

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/secret"
)

func parse(t testing.TB, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(text), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTransportOptionsMigrationFields: what openai-api-route's config has
// beyond the samples (lb_policy random, sk: asis, an upstream without a key)
// converts to the transport's options.
func TestTransportOptionsMigrationFields(t *testing.T) {
	cfg := parse(t, `lb_policy: random
hostname: node-1
upstreams:
  - sk: asis
    endpoint: https://api.openai.com/v1
    noauth: true
    keep_header: true
  - endpoint: http://127.0.0.1:11434/v1
    authorization: team
    inherit_authorization: true
`)
	opts, err := transportOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keypool.New(opts...); err != nil {
		t.Fatal(err)
	}
}

// TestExtensionsConvert: every keypool extension of the config converts to
// options the transport and the checker take.
func TestExtensionsConvert(t *testing.T) {
	cfg, err := config.Load(filepath.Join("..", "config", "testdata", "keypool.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := transportOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := keypool.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keypool.NewChecker(tr, CheckerOptions(cfg)...); err != nil {
		t.Errorf("NewChecker: %v", err)
	}
	if n := len(CheckerOptions(cfg)); n != 3 {
		t.Errorf("%d checker options, want 3", n)
	}
	tokens, ups := access(cfg)
	if len(tokens) != 2 || len(ups) != 2 || len(ups[0].Tokens) != 1 || ups[0].Name != "main" || !ups[1].NoAuth {
		t.Errorf("access: %d tokens, upstreams %+v", len(tokens), ups)
	}
}

func TestCheckerOptions(t *testing.T) {
	for _, tc := range []struct {
		in    string
		nopts int
	}{
		{"", 0},
		{"checker:\n", 0},
		{"checker: {recheck: off}", 1},
		{"checker: {recheck: 0}", 1},
		{"checker: {recheck: 0s}", 1},
		{"checker: {recheck: 90}", 1},
		{"checker: {rate: 0.5, concurrency: 1}", 2},
		{"checker: {wait_for_check: on}", 0},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if n := len(CheckerOptions(parse(t, tc.in))); n != tc.nopts {
				t.Errorf("%d options, want %d", n, tc.nopts)
			}
		})
	}
}

// TestRetryTime: without retry_time, a request may fail over for the sum of
// the four longest upstream timeouts, and never less than the library's
// default.
func TestRetryTime(t *testing.T) {
	ups := func(timeouts ...time.Duration) []keypool.Upstream {
		var out []keypool.Upstream
		for _, d := range timeouts {
			out = append(out, keypool.Upstream{Timeout: d})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		cfg  config.Config
		ups  []keypool.Upstream
		want time.Duration
	}{
		{"retry_time given", config.Config{RetryTime: 90 * time.Second}, ups(time.Hour), 90 * time.Second},
		{"four longest", config.Config{}, ups(time.Minute, 5*time.Minute, 2*time.Minute, 3*time.Minute, 4*time.Minute), 14 * time.Minute},
		{"default timeout", config.Config{}, ups(0, 0), max(2*keypool.DefaultTimeout, keypool.DefaultRetryTime)},
		{"at least the default", config.Config{}, ups(time.Second), keypool.DefaultRetryTime},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryTime(&tc.cfg, tc.ups); got != tc.want {
				t.Errorf("retryTime = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSetStore: a flag wins over the config, and a type of store other than
// the config's drops the config's address.
func TestSetStore(t *testing.T) {
	for _, tc := range []struct {
		name               string
		cfgType, cfgAddr   string
		flagType, flagAddr string
		wantType, wantAddr string
	}{
		{"no flags", "postgres", "dsn", "", "", "postgres", "dsn"},
		{"same type", "postgres", "dsn", "postgres", "", "postgres", "dsn"},
		{"sqlite is the default", "", "a.sqlite", "sqlite", "", "sqlite", "a.sqlite"},
		{"another type", "postgres", "dsn", "sqlite", "", "sqlite", ""},
		{"address", "postgres", "dsn", "", "dsn2", "postgres", "dsn2"},
		{"both", "postgres", "dsn", "sqlite", "b.sqlite", "sqlite", "b.sqlite"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{DBType: tc.cfgType, DBAddr: secret.New(tc.cfgAddr)}
			SetStore(cfg, tc.flagType, tc.flagAddr)
			if cfg.DBType != tc.wantType || cfg.DBAddr.Reveal() != tc.wantAddr {
				t.Errorf("dbtype %q, dbaddr %q; want %q, %q", cfg.DBType, cfg.DBAddr, tc.wantType, tc.wantAddr)
			}
		})
	}
}

// FuzzConvert: any config Parse takes converts to the parts' options
// without panicking (keys files aside: no file is read here).
func FuzzConvert(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "config", "testdata", "openai-api-route", "*.yaml"))
	for _, name := range append(seeds, filepath.Join("..", "config", "testdata", "keypool.yaml")) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"lb_policy: random\nupstreams:\n  - sk: asis\n    noauth: true\n  - sk:\n    authorization: \" , \"\n",
		"checker: {rate: 1e400, concurrency: 99999999999999999999, recheck: -1h}\n",
		"timeout: 9223372036\nstream_timeout: 0x10\nretry_time: 1\n",
		"notify: {webhook: {url: 'https://h.example', headers: {X-A: b}}, dedup: 1m}\n",
	} {
		f.Add([]byte(s))
	}
	discard := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data, "fuzz.yaml", "")
		if err != nil {
			return
		}
		if !slices.ContainsFunc(cfg.Upstream, func(u config.Upstream) bool { return u.KeysFile != "" }) {
			transportOptions(cfg)
		}
		CheckerOptions(cfg)
		access(cfg)
		notifyConfig(cfg.Notify, discard)
		writerOptions(cfg, time.Second, discard)
	})
}
