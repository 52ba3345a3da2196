package app

import (
	"cmp"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/notify"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// This file turns a config into the options of each part, and is the only
// place that does.

// transportOptions returns the options of keypool.New that cfg sets: its
// upstreams (see config.Config.Upstreams, which reads the keys files), the
// time a request may still fail over, the upstream order, the body buffer
// and, with checker.wait_for_check, keypool.WithCheckedKeysOnly.
func transportOptions(cfg *config.Config) ([]keypool.Option, error) {
	ups, err := cfg.Upstreams()
	if err != nil {
		return nil, err
	}
	opts := []keypool.Option{keypool.WithUpstreams(ups...), keypool.WithRetryTime(retryTime(cfg, ups))}
	if cfg.LBPolicy == "random" {
		opts = append(opts, keypool.WithUpstreamOrder(keypool.OrderRandom))
	}
	if cfg.MaxBody > 0 {
		// A body the proxy accepts can always be replayed on failover.
		opts = append(opts, keypool.WithMaxBodyBuffer(cfg.MaxBody))
	}
	if cfg.Checker.WaitForCheck {
		opts = append(opts, keypool.WithCheckedKeysOnly(true))
	}
	return opts, nil
}

// retryTime is cfg's retry_time, or when not given enough time for a hung
// upstream to fail over to the next, as openai-api-route does: the sum of
// the four longest timeouts of ups, at least keypool.DefaultRetryTime.
func retryTime(cfg *config.Config, ups []keypool.Upstream) time.Duration {
	if cfg.RetryTime > 0 {
		return cfg.RetryTime
	}
	timeouts := make([]time.Duration, len(ups))
	for i, u := range ups {
		timeouts[i] = cmp.Or(u.Timeout, keypool.DefaultTimeout)
	}
	slices.Sort(timeouts)
	var sum time.Duration
	for _, d := range timeouts[max(0, len(timeouts)-4):] {
		sum += d
	}
	return max(sum, keypool.DefaultRetryTime)
}

// CheckerOptions returns the options of keypool.NewChecker that cfg's
// checker section sets; fields not given are left to the library's
// defaults. keypool check uses them too.
func CheckerOptions(cfg *config.Config) []keypool.CheckOption {
	var opts []keypool.CheckOption
	if cfg.Checker.Rate > 0 {
		opts = append(opts, keypool.WithCheckRate(cfg.Checker.Rate))
	}
	if cfg.Checker.Concurrency > 0 {
		opts = append(opts, keypool.WithCheckConcurrency(cfg.Checker.Concurrency))
	}
	switch {
	case cfg.Checker.NoRecheck:
		opts = append(opts, keypool.WithRecheckEvery(0))
	case cfg.Checker.Recheck > 0:
		opts = append(opts, keypool.WithRecheckEvery(cfg.Checker.Recheck))
	}
	return opts
}

// serverOptions returns the options of the proxy server in front of tr:
// who may use which upstream, and the limits on what clients send. Records
// are the caller's to add.
func serverOptions(cfg *config.Config, tr *keypool.Transport, log *slog.Logger) server.Options {
	tokens, ups := access(cfg)
	opts := server.Options{Transport: tr, Tokens: tokens, Upstreams: ups, Logger: log, MaxBody: cfg.MaxBody,
		CORS: !cfg.NoCORS, BodyIdle: cfg.BodyIdleTimeout, BodyMemory: cfg.BodyMemory}
	if cfg.AccessLog {
		opts.AccessLog = log.With("log", "access") // one field to route or filter them by
	}
	return opts
}

// access returns the client tokens and the per-upstream access rules of
// cfg, for server.Options.Tokens and server.Options.Upstreams.
func access(cfg *config.Config) ([]secret.String, []server.UpstreamAccess) {
	ups := make([]server.UpstreamAccess, len(cfg.Upstream))
	for i, u := range cfg.Upstream {
		ups[i] = server.UpstreamAccess{Name: u.Name, Tokens: u.Authorization, InheritTokens: u.InheritAuthorization, NoAuth: u.NoAuth}
	}
	return cfg.Authorization, ups
}

// notifyConfig turns the config's notify section into the notifier's
// config; ok is false when no notifier is configured. As in
// openai-api-route, FEISHU_WEBHOOK in the environment is a Feishu bot when
// the config names none.
func notifyConfig(c config.Notify, logger *slog.Logger) (nc notify.Config, ok bool) {
	nc = notify.Config{
		Dedup: c.Dedup, Burst: c.Burst, Every: c.Every,
		FailureThreshold: c.Failures, FailureWindow: c.FailureWindow,
		Logger: logger,
	}
	if m := c.Matrix; m != nil {
		nc.Matrix = &notify.Matrix{Homeserver: m.Homeserver, Room: m.Room, Token: m.Token}
	}
	if f := c.Feishu; f != nil {
		nc.Feishu = &notify.Feishu{Webhook: f.Webhook, Secret: f.Secret}
	} else if hook := os.Getenv("FEISHU_WEBHOOK"); hook != "" {
		nc.Feishu = &notify.Feishu{Webhook: secret.New(hook)}
		logger.Info("feishu notifications to FEISHU_WEBHOOK (from the environment)")
	}
	if w := c.Webhook; w != nil {
		nc.Webhook = &notify.Webhook{URL: w.URL, Headers: w.Headers}
	}
	return nc, nc.Matrix != nil || nc.Feishu != nil || nc.Webhook != nil
}

// writerOptions returns the options of the records writer that cfg's
// records section sets; drain is the time it gets to write what is queued
// at shutdown.
func writerOptions(cfg *config.Config, drain time.Duration, logger *slog.Logger) records.WriterOptions {
	r := cfg.Records
	return records.WriterOptions{Queue: r.Queue, QueueBytes: r.QueueBytes, Batch: r.Batch, Keep: r.Keep,
		DrainTimeout: drain, Logger: logger}
}
