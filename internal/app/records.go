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

// recordsPart is the request records: the store cfg names and the writer in
// front of it.
type recordsPart struct {
	store  records.Store
	writer *records.Writer
	log    *slog.Logger
}

// newRecords opens the store cfg names and builds its writer, which gets
// drain to write what is queued at shutdown; nil when records are off. A
// store out of reach is not an error: the writer tries it until it
// answers, while requests go on.
func newRecords(cfg *config.Config, drain time.Duration, logger *slog.Logger) (*recordsPart, error) {
	store, err := records.Open(cfg.DBType, cfg.DBAddr) // "" is ./db.sqlite
	if errors.Is(err, records.ErrNone) {
		logger.Info("request records off (dbtype none)")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	logger.Info("request records", "store", fmt.Sprint(store), "bodies", cfg.Records.Bodies)
	w := records.NewWriter(store, writerOptions(cfg, drain, logger))
	return &recordsPart{store: store, writer: w, log: logger}, nil
}

// Run pings the store once, in the background, and runs the writer until
// ctx ends; once the writer has written what was queued (see
// records.Writer.Run, whose error it returns), it closes the store.
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
	err := r.writer.Run(ctx)
	cancel()
	<-pinged
	r.store.Close()
	return err
}
