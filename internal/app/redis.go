package app

import (
	"log/slog"
	"time"

	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/redisstore"
)

// newRedis builds the Redis store of cfg's store URL, which gets drain to
// write what waits at shutdown; nil without one. It connects nowhere: New
// (keypool's) loads the states through it, bounded, and Run keeps trying a
// Redis that is down while requests go on.
func newRedis(cfg *config.Config, drain time.Duration, log *slog.Logger) (*redisstore.Store, error) {
	if cfg.Store.IsZero() {
		return nil, nil
	}
	// go-redis logs every failed dial to stderr; the store logs an outage
	// once.
	redisstore.QuietClientLog()
	s, err := redisstore.New(cfg.Store, redisstore.Options{DrainTimeout: drain, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("state store redis", "addr", s.Addr())
	return s, nil
}

// SetStateStore puts --store, when given, in place of cfg's store. Its error
// does not quote the URL.
func SetStateStore(cfg *config.Config, store string) error {
	if store == "" {
		return nil
	}
	s, err := config.ParseStoreURL(store)
	if err != nil {
		return err
	}
	cfg.Store = s
	return nil
}
