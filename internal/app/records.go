package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/records"
)

// pingTimeout bounds the records store's start-up ping.
const pingTimeout = 10 * time.Second

// recordsPart is the request records and the key states: the store cfg
// names, the writer of records in front of it, and the key states kept in
// it (the transport's keypool.StateStore).
type recordsPart struct {
	store  records.Store
	writer *records.Writer
	states *records.StateStore // nil: Redis keeps the key states
	log    *slog.Logger
}

// newRecords opens the store cfg names and builds its writer and, unless
// cfg names a Redis store for them, its key states, which get drain to
// write what waits at shutdown; nil when records are off. A store out of
// reach is not an error: the writers try it until it answers, while
// requests go on.
func newRecords(cfg *config.Config, drain time.Duration, logger *slog.Logger) (*recordsPart, error) {
	store, err := records.Open(cfg.DBType, cfg.DBAddr) // "" is ./db.sqlite
	if errors.Is(err, records.ErrNone) {
		logger.Info("request records off, and key states forgotten at exit (dbtype none)")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	logger.Info("request records", "store", fmt.Sprint(store), "bodies", cfg.Records.Bodies)
	w := records.NewWriter(store, writerOptions(cfg, drain, logger))
	r := &recordsPart{store: store, writer: w, log: logger}
	if cfg.Store.IsZero() { // else Redis keeps them (see newRedis)
		r.states = records.NewStateStore(store, records.StateStoreOptions{DrainTimeout: drain, Logger: logger})
	}
	return r, nil
}

// Run pings the store once, in the background, and runs the writer and the
// key states until ctx ends; once both have written what waited (see
// records.Writer.Run and records.StateStore.Run, whose errors it returns),
// it closes the store.
func (r *recordsPart) Run(ctx context.Context) error {
	// Start-up never waits on the store: a PostgreSQL that takes
	// connections and never answers must not hold the proxy up.
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		// Cancelled means serve is stopping: nothing to warn about.
		if err := r.store.Ping(pctx); err != nil && !errors.Is(context.Cause(pctx), context.Canceled) {
			r.log.Warn("records store out of reach; records queue until it answers", "store", fmt.Sprint(r.store), "err", err.Error())
		}
	}()
	var saved <-chan error
	if r.states != nil {
		saved = start(ctx, r.states)
	}
	err := r.writer.Run(ctx)
	if saved != nil {
		err = errors.Join(err, <-saved)
	}
	cancel()
	<-pinged
	r.store.Close()
	return err
}
