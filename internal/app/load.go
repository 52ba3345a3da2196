package app

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
)

// This file holds where the commands find their config, keys and records
// store when the flags do not say: written once, for serve, check, records
// and keys.

// DefaultConfigFile is the config file serve and records read from the
// working directory when --config names none.
const DefaultConfigFile = "config.yaml"

// ConfigFile returns file, else DefaultConfigFile when the working
// directory has one, else "".
func ConfigFile(file string) string {
	if file != "" {
		return file
	}
	if _, err := os.Stat(DefaultConfigFile); err == nil {
		return DefaultConfigFile
	}
	return ""
}

// EnvKeys returns the keys of OPENAI_KEY (comma-separated): none and no
// error when it is not set, an error when it is set but holds no key. Each
// key's source is its place in the list, from 1: "OPENAI_KEY[3]".
func EnvKeys() ([]keypool.Key, error) {
	env := os.Getenv("OPENAI_KEY")
	if env == "" {
		return nil, nil
	}
	keys, err := config.ParseKeyList(env, "OPENAI_KEY")
	if err != nil {
		return nil, fmt.Errorf("OPENAI_KEY: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("OPENAI_KEY holds no key")
	}
	return keys, nil
}

// BaseURL returns baseURL, else OPENAI_BASE_URL, else
// config.DefaultEndpoint: the upstream of keys given without one.
func BaseURL(baseURL string) string {
	return cmp.Or(baseURL, os.Getenv("OPENAI_BASE_URL"), config.DefaultEndpoint)
}

// Load loads the config serve runs: file, else ./config.yaml when present,
// else one upstream made of OPENAI_KEY's keys at BaseURL(""). It logs the
// config's warnings and what it loaded.
func Load(file string, logger *slog.Logger) (*config.Config, error) {
	if file = ConfigFile(file); file != "" {
		cfg, err := config.Load(file)
		if err != nil {
			return nil, err
		}
		if len(cfg.Upstream) == 0 {
			return nil, fmt.Errorf("%s: no upstreams, so no keys to serve with", file)
		}
		for _, w := range cfg.Warnings {
			logger.Warn("config: " + w)
		}
		logger.Info("config loaded", "file", file, "upstreams", len(cfg.Upstream))
		return cfg, nil
	}
	keys, err := EnvKeys()
	if err != nil {
		return nil, err
	}
	if keys == nil {
		return nil, errors.New("nothing to serve: pass --config FILE, put a " + DefaultConfigFile + " here, or set OPENAI_KEY")
	}
	baseURL := BaseURL("")
	logger.Info("no config file: serving OPENAI_KEY's keys", "upstream", baseURL, "keys", len(keys))
	return &config.Config{Upstream: []config.Upstream{{Endpoint: baseURL, Keys: keys}}}, nil
}

// SetStore puts --dbtype and --dbaddr over cfg's dbtype and dbaddr: a flag
// given wins, and a --dbtype of another type than cfg's drops cfg's
// address, which is for that other type ("" is SQLite, the default).
func SetStore(cfg *config.Config, dbType, dbAddr string) {
	if dbType != "" {
		if storeType(dbType) != storeType(cfg.DBType) {
			cfg.DBAddr = secret.String{}
		}
		cfg.DBType = dbType
	}
	if dbAddr != "" {
		cfg.DBAddr = secret.New(dbAddr)
	}
}

// storeType is typ with "" read as SQLite, the default.
func storeType(typ string) string {
	return cmp.Or(typ, records.TypeSQLite)
}
