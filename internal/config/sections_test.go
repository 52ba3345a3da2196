package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/config"
)

// sectionsFile has one field with an unset variable in each part of the
// file: the admin token, an upstream's client tokens, the records store.
const sectionsFile = `listen: ${KP_UNSET_LISTEN}
admin_token: ${KP_UNSET_ADMIN}
dbtype: sqlite
dbaddr: ./records.sqlite
checker:
  rate: 2
upstreams:
  - sk: sk-sections-1111111111
    authorization: ${KP_UNSET_CLIENT}
    timeout: 7s
`

// TestLoadSections: a command that reads some sections of the file is not
// stopped by an unset variable in another; one that reads them all is, at
// that variable's line.
func TestLoadSections(t *testing.T) {
	for _, v := range []string{"KP_UNSET_LISTEN", "KP_UNSET_ADMIN", "KP_UNSET_CLIENT"} {
		t.Setenv(v, "") // restored when the test ends
		os.Unsetenv(v)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(sectionsFile), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("database", func(t *testing.T) {
		cfg, err := config.LoadSections(path, config.DatabaseSection)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.DBType != "sqlite" || cfg.DBAddr.Reveal() != "./records.sqlite" {
			t.Errorf("dbtype %q, dbaddr %q", cfg.DBType, cfg.DBAddr.Reveal())
		}
		if len(cfg.Upstream) != 0 || cfg.Checker.Rate != 0 {
			t.Errorf("sections not asked for were read: %d upstreams, checker %+v", len(cfg.Upstream), cfg.Checker)
		}
	})

	t.Run("upstreams", func(t *testing.T) {
		cfg, err := config.LoadSections(path, config.UpstreamsSection)
		if err != nil {
			t.Fatal(err)
		}
		ups, err := cfg.Upstreams()
		if err != nil {
			t.Fatal(err)
		}
		if len(ups) != 1 || len(ups[0].Keys) != 1 || ups[0].Timeout.Seconds() != 7 || cfg.Checker.Rate != 2 {
			t.Errorf("upstreams %+v, checker %+v", ups, cfg.Checker)
		}
		if cfg.DBType != "" || !cfg.AdminToken.IsZero() || len(cfg.Upstream[0].Authorization) != 0 {
			t.Errorf("sections not asked for were read: dbtype %q, admin token set %v, client tokens %d",
				cfg.DBType, !cfg.AdminToken.IsZero(), len(cfg.Upstream[0].Authorization))
		}
	})

	t.Run("all", func(t *testing.T) {
		_, err := config.Load(path)
		want := []string{
			path + ":1: listen: environment variable KP_UNSET_LISTEN is not set",
			path + ":2: admin_token: environment variable KP_UNSET_ADMIN is not set",
			path + ":9: upstream 1: authorization: environment variable KP_UNSET_CLIENT is not set",
		}
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Load: %v\nwant it to hold %q", err, w)
			}
		}
	})
}

// TestLoadSectionsReportsWhatItReads: problems in the sections read are
// reported as Load reports them, with their lines; an unknown field
// anywhere is still one.
func TestLoadSectionsReportsWhatItReads(t *testing.T) {
	t.Setenv("KP_UNSET_DSN", "")
	os.Unsetenv("KP_UNSET_DSN")
	tests := []struct {
		name     string
		sections config.Sections
		in, want string
	}{
		{"unset variable read", config.DatabaseSection,
			"admin_token: x\ndbtype: postgres\ndbaddr: ${KP_UNSET_DSN}\n",
			"c.yaml:3: dbaddr: environment variable KP_UNSET_DSN is not set"},
		{"bad value read", config.DatabaseSection, "dbtype: mysql\n", "c.yaml:1: dbtype"},
		{"bad upstream", config.UpstreamsSection,
			"upstreams:\n  - sk: sk-aaaaaaaaaaaa\n    timeout: -3s\n", "c.yaml:3: upstream 1: timeout"},
		{"misspelt field", config.DatabaseSection, "dbadr: x.sqlite\n", `c.yaml:1: unknown field "dbadr" (did you mean "dbaddr"?)`},
		{"misspelt in an upstream", config.UpstreamsSection,
			"upstreams:\n  - sk: sk-aaaaaaaaaaaa\n    endpiont: http://x/v1\n", `c.yaml:3: unknown field "endpiont" in upstream 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.ParseSections([]byte(tt.in), "c.yaml", "", tt.sections)
			var cerr *config.Error
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &cerr) {
				t.Errorf("err = %v, want a config.Error holding %q", err, tt.want)
			}
		})
	}
}
