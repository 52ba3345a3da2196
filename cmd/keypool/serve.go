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
		configFile, listen string
		dbType, dbAddr     string
		store              string
		opts               = app.Options{Ready: hooks.ready, Hangup: hooks.hangup}
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
from the others. Budgets are not shared yet.

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
Logs go to stderr and show keys by ID only.`,
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
				return errors.New("--shutdown-timeout must be positive")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			// The same file, with the same flags over it, at start and
			// at every reload.
			load := func() (*config.Config, error) {
				cfg, err := app.Load(configFile, opts.Logger)
				if err != nil {
					return nil, err
				}
				app.SetStore(cfg, dbType, dbAddr)
				if err := app.SetStateStore(cfg, store); err != nil {
					return nil, err
				}
				return cfg, nil
			}
			cfg, err := load()
			if err != nil {
				return err
			}
			opts.Listen, opts.Config = listen, load
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
	f.StringVar(&dbType, "dbtype", "", "request records: sqlite, postgres or none (default the config's, else sqlite)")
	f.StringVar(&dbAddr, "dbaddr", "", "SQLite file or PostgreSQL DSN of the records (default the config's, else ./db.sqlite)")
	f.StringVar(&store, "store", "", "Redis `URL` (redis://[:PASSWORD@]HOST:PORT/DB or rediss://) that replicas share key states through, instead of the records database (default the config's store)")
	f.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", app.DefaultShutdownTimeout, "time in-flight requests get to finish on shutdown")
	return cmd
}
