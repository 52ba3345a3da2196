package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
)

func newServeCmd() *cobra.Command { return newServeCmdWith(serveHooks{}) }

// serveHooks are what tests give serve: ready, when not nil, is told the
// address serve listens on once it accepts connections (tests listen on
// 127.0.0.1:0); base, when not nil, carries every upstream request (tests
// answer for the hosts of an unchanged config without a network).
type serveHooks struct {
	ready  func(net.Addr)
	base   http.RoundTripper
	hangup <-chan os.Signal // nil: SIGHUP
}

// newServeCmdWith is newServeCmd with hooks for tests.
func newServeCmdWith(hooks serveHooks) *cobra.Command {
	var (
		configFile, listen  string
		dbType, dbAddr      string
		store               string
		logLevel, logFormat string
		accessLog           bool
		opts                = app.Options{Ready: hooks.ready, Hangup: hooks.hangup}
	)
	if hooks.base != nil {
		opts.Transport = []keypool.Option{keypool.WithBase(hooks.base)}
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve an OpenAI-compatible proxy over the pool of keys",
		Long: `serve hosts the keypool transport behind an OpenAI-compatible proxy: every
/v1/* request is sent with the best key of the pool and fails over to another
key or upstream when one fails. Point any OpenAI client's base URL at
http://ADDR/v1 and give it one of the config's client tokens as its API key.

The config comes from --config FILE, else ./` + app.DefaultConfigFile + ` when there is one; it is
a superset of openai-api-route's config.yaml. With no config at all, the keys
of OPENAI_KEY (comma-separated) serve the official API (or OPENAI_BASE_URL),
open to any client that can reach the address.

One record per request goes to SQLite (./db.sqlite unless the config's dbtype
and dbaddr, or --dbtype and --dbaddr, say otherwise; dbtype none turns records
off); see keypool records. Records never hold up a request: when the store is
slow or down they queue, and beyond the queue they are dropped and counted.
The same database keeps each key's state (never the key), so that a restart
starts from it: a key found revoked or over quota gets no traffic and no
start-up check until its recheck is due. With a store URL (the config's
store, or --store), Redis keeps the key states instead, shared by every
replica over the same keys: a key one replica finds revoked gets no traffic
from the others, and together they spend each organization's rate-limit
budget as one.

SIGHUP, or POST /admin/reload, reloads the config: added keys, upstreams and
client tokens take effect, removed ones take no new request while theirs
finish, and what the pool learned of the keys that stay is kept. A config
that does not load is refused (logged with its line) and the one before keeps
serving. SIGINT and SIGTERM shut down: requests in flight finish and the
records are written.

Prometheus metrics are at /metrics and /v1/metrics; /healthz and /readyz
answer probes. The admin API (/admin/keys, see keypool keys) needs the
config's admin_token, or without one answers on loopback only.

The address is --listen, else the config's listen, else ` + app.DefaultListen + `.
Logs go to stderr and show keys by ID only: each change of a key's state
(revoked, over quota, cooling until T, recovered, disabled) and each failover
that rested a key at info, other failovers at debug. --access-log adds one
line per proxied request.`,
		Example: `  OPENAI_KEY=sk-…,sk-… keypool serve
  keypool serve --config config.yaml --listen 127.0.0.1:9000`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return errors.New("serve takes no arguments; give keys with OPENAI_KEY or --config")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.ShutdownTimeout <= 0 {
				return usageErrorf("--shutdown-timeout must be positive")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			// The config may set the level and format: what is logged
			// while it loads at start waits for the logger it sets.
			var early app.LogBuffer
			// The same file, with the same flags over it, at start and
			// at every reload.
			load := func(log *slog.Logger) (*config.Config, error) {
				cfg, err := app.Load(configFile, log)
				if err != nil {
					return nil, err
				}
				setLogging(cfg, cmd.Flags().Changed, logLevel, logFormat, accessLog)
				app.SetStore(cfg, dbType, dbAddr)
				if err := app.SetStateStore(cfg, store); err != nil {
					return nil, err
				}
				return cfg, nil
			}
			cfg, err := load(early.Logger())
			if err != nil {
				fallback, _ := app.NewLogger(cmd.ErrOrStderr(), logLevel, logFormat)
				early.Replay(fallback)
				return err
			}
			if opts.Logger, err = app.NewLogger(cmd.ErrOrStderr(), cfg.LogLevel, cfg.LogFormat); err != nil {
				return err // cannot happen: the flags and the config took only known values
			}
			early.Replay(opts.Logger)
			opts.Listen = listen
			opts.Config = func() (*config.Config, error) { return load(opts.Logger) }
			if opts.Hangup == nil {
				// SIGHUP reloads the config; it would end the process.
				hup := make(chan os.Signal, 1)
				signal.Notify(hup, syscall.SIGHUP)
				defer signal.Stop(hup)
				opts.Hangup = hup
			}
			return app.Serve(ctx, cfg, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "config `file` (default ./"+app.DefaultConfigFile+" when present)")
	f.StringVar(&listen, "listen", "", "`address` to listen on (default the config's listen, else "+app.DefaultListen+")")
	enumFlag(cmd, &dbType, "dbtype", "request records' store (default the config's, else sqlite)", "sqlite", "postgres", "none")
	f.StringVar(&dbAddr, "dbaddr", "", "SQLite file or PostgreSQL DSN of the records (default the config's, else ./db.sqlite)")
	f.StringVar(&store, "store", "", "Redis `URL` (redis://[:PASSWORD@]HOST:PORT/DB or rediss://) that replicas share key states and rate-limit budgets through, instead of the records database (default the config's store)")
	enumFlag(cmd, &logLevel, "log-level", "level of what is logged (default the config's log_level, else info)", app.LogLevels...)
	enumFlag(cmd, &logFormat, "log-format", "format of log lines, json for one JSON object per line (default the config's log_format, else text)", app.LogFormats...)
	f.BoolVar(&accessLog, "access-log", false, "log one line per proxied request: client token ID, method, route, model, status, key ID, attempts, latency, tokens (default the config's access_log)")
	f.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", app.DefaultShutdownTimeout, "time in-flight requests get to finish on shutdown")
	return cmd
}

// setLogging puts --log-level, --log-format and --access-log over cfg's
// log_level, log_format and access_log: a flag given wins.
func setLogging(cfg *config.Config, given func(flag string) bool, level, format string, accessLog bool) {
	if given("log-level") {
		cfg.LogLevel = level
	}
	if given("log-format") {
		cfg.LogFormat = format
	}
	cfg.AccessLog = cfg.AccessLog || accessLog
}
