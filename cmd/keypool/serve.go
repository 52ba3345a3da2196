package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/metrics"
	"github.com/keypool/keypool/internal/notify"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// Defaults of serve.
const (
	defaultConfigFile = "config.yaml"
	defaultListen     = "127.0.0.1:8080"
	readHeaderTimeout = 10 * time.Second
)

func newServeCmd() *cobra.Command { return newServeCmdWith(serveHooks{}) }

// serveHooks are what tests give serve: ready, when not nil, is told the
// address serve listens on once it accepts connections (tests listen on
// 127.0.0.1:0); base, when not nil, carries every upstream request (tests
// answer for the hosts of an unchanged config without a network).
type serveHooks struct {
	ready func(net.Addr)
	base  http.RoundTripper
}

// newServeCmdWith is newServeCmd with hooks for tests.
func newServeCmdWith(hooks serveHooks) *cobra.Command {
	var (
		configFile, listen string
		dbType, dbAddr     string
		shutdownTimeout    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve an OpenAI-compatible proxy over the pool of keys",
		Long: `serve hosts the keypool transport behind an OpenAI-compatible proxy: every
/v1/* request is sent with the best key of the pool and fails over to another
key or upstream when one fails. Point any OpenAI client's base URL at
http://ADDR/v1 and give it one of the config's client tokens as its API key.

The config comes from --config FILE, else ./` + defaultConfigFile + ` when there is one; it is
a superset of openai-api-route's config.yaml. With no config at all, the keys
of OPENAI_KEY (comma-separated) serve the official API (or OPENAI_BASE_URL),
open to any client that can reach the address.

One record per request goes to SQLite (./db.sqlite unless the config's dbtype
and dbaddr, or --dbtype and --dbaddr, say otherwise; dbtype none turns records
off); see keypool records. Records never hold up a request: when the store is
slow or down they queue, and beyond the queue they are dropped and counted.

Prometheus metrics are at /metrics and /v1/metrics; /healthz and /readyz
answer probes. The admin API (/admin/keys, see keypool keys) needs the
config's admin_token, or without one answers on loopback only.

The address is --listen, else the config's listen, else ` + defaultListen + `.
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
			if shutdownTimeout <= 0 {
				return errors.New("--shutdown-timeout must be positive")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			cfg, err := serveConfig(configFile, logger)
			if err != nil {
				return err
			}
			if dbType != "" {
				if storeType(dbType) != storeType(cfg.DBType) {
					cfg.DBAddr = secret.String{} // the config's address is for another type of store
				}
				cfg.DBType = dbType
			}
			if dbAddr != "" {
				cfg.DBAddr = secret.New(dbAddr)
			}
			switch {
			case listen != "":
			case cfg.Listen != "":
				listen = cfg.Listen
			default:
				listen = defaultListen
			}
			return serve(ctx, cfg, listen, shutdownTimeout, logger, hooks)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "config `file` (default ./"+defaultConfigFile+" when present)")
	f.StringVar(&listen, "listen", "", "`address` to listen on (default the config's listen, else "+defaultListen+")")
	f.StringVar(&dbType, "dbtype", "", "request records: sqlite, postgres or none (default the config's, else sqlite)")
	f.StringVar(&dbAddr, "dbaddr", "", "SQLite file or PostgreSQL DSN of the records (default the config's, else ./db.sqlite)")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 30*time.Second, "time in-flight requests get to finish on shutdown")
	return cmd
}

// serveConfig loads the config to serve: configFile, else ./config.yaml when
// present, else one upstream made of OPENAI_KEY.
func serveConfig(configFile string, logger *slog.Logger) (*config.Config, error) {
	if configFile == "" {
		if _, err := os.Stat(defaultConfigFile); err == nil {
			configFile = defaultConfigFile
		}
	}
	if configFile != "" {
		cfg, err := config.Load(configFile)
		if err != nil {
			return nil, err
		}
		if len(cfg.Upstream) == 0 {
			return nil, fmt.Errorf("%s: no upstreams, so no keys to serve with", configFile)
		}
		for _, w := range cfg.Warnings {
			logger.Warn("config: " + w)
		}
		logger.Info("config loaded", "file", configFile, "upstreams", len(cfg.Upstream))
		return cfg, nil
	}
	env := os.Getenv("OPENAI_KEY")
	if env == "" {
		return nil, errors.New("nothing to serve: pass --config FILE, put a " + defaultConfigFile + " here, or set OPENAI_KEY")
	}
	keys, err := keypool.ParseKeys(env)
	if err != nil {
		return nil, fmt.Errorf("OPENAI_KEY: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("OPENAI_KEY holds no key")
	}
	baseURL := os.Getenv("OPENAI_BASE_URL")
	if baseURL == "" {
		baseURL = officialBaseURL
	}
	logger.Info("no config file: serving OPENAI_KEY's keys", "upstream", baseURL, "keys", len(keys))
	return &config.Config{Upstream: []config.Upstream{{Endpoint: baseURL, Keys: keys}}}, nil
}

// serve runs the proxy for cfg on listen until ctx ends, then shuts it down,
// giving in-flight requests shutdownTimeout to finish.
func serve(ctx context.Context, cfg *config.Config, listen string, shutdownTimeout time.Duration,
	logger *slog.Logger, hooks serveHooks) error {
	topts, err := cfg.TransportOptions()
	if err != nil {
		return err
	}
	// Listen first: a serve that may not start leaves nothing behind (no
	// records file, no checks).
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	defer ln.Close() // on the early returns; Serve closes it too
	ln = server.LimitListener(ln, cfg.MaxConnections)
	if openToAll(cfg) {
		if !loopback(ln.Addr()) {
			return fmt.Errorf("refusing to serve on %s without client tokens: anyone who can reach it could use the keys; set authorization in the config, or listen on 127.0.0.1", ln.Addr())
		}
		logger.Warn("no client tokens configured: any local process may use the keys", "addr", ln.Addr().String())
	}
	reg := metrics.NewRegistry()
	var tr *keypool.Transport
	// The snapshot is read at scrape time only, once tr is set below and
	// the server (which starts the scrapes) is running.
	m, err := metrics.New(reg, func() []keypool.KeyInfo { return tr.Snapshot() })
	if err != nil {
		return err
	}
	observers := []keypool.Option{keypool.WithLogger(logger), keypool.WithObserver(m)}
	if hooks.base != nil {
		observers = append(observers, keypool.WithBase(hooks.base))
	}
	var notifier *notify.Notifier
	if nc, ok := notifyConfig(cfg.Notify, logger); ok {
		if notifier, err = notify.New(nc); err != nil {
			return err
		}
		if err := metrics.RegisterNotify(reg, notifier.Stats); err != nil {
			return err
		}
		observers = append(observers, keypool.WithObserver(notifier))
		logger.Info("notifications", "to", notifier.String())
	}
	tr, err = keypool.New(append(topts, observers...)...)
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	if notifier != nil {
		notifier.Seed(tr.Snapshot())
	}
	recs, err := startRecords(ctx, cfg, logger)
	if err != nil {
		return err
	}
	var srv *server.Server // drained before the records close
	defer func() { recs.close(logger, shutdownTimeout, srv) }()
	tokens, access := server.AccessFromConfig(cfg)
	sopts := server.Options{Transport: tr, Tokens: tokens, Upstreams: access, Logger: logger, MaxBody: cfg.MaxBody,
		CORS: !cfg.NoCORS, BodyIdle: cfg.BodyIdleTimeout, BodyMemory: cfg.BodyMemory}
	if recs != nil {
		sopts.Records, sopts.Bodies, sopts.BodyLimit = recs.writer, cfg.Records.Bodies, cfg.Records.BodyLimit
		if err := metrics.RegisterRecords(reg, recs.writer.Stats); err != nil {
			return err
		}
	}
	srv, err = server.New(sopts)
	if err != nil {
		return err
	}
	if err := metrics.RegisterProxy(reg, srv.Stats); err != nil {
		return err
	}
	checker, err := keypool.NewChecker(tr, append(cfg.CheckerOptions(), keypool.WithCheckLogger(logger))...)
	if err != nil {
		return err
	}
	admin := server.NewAdmin(server.AdminOptions{Transport: tr, Checker: checker, Token: cfg.AdminToken, Logger: logger})
	if cfg.AdminToken.IsZero() {
		logger.Info("no admin_token configured: the admin API answers on loopback only")
	}

	logAccess(srv, tr, cfg, logger)
	logger.Info("listening", "addr", ln.Addr().String(), "keys", len(tr.Snapshot()))

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		checker.Run(runCtx)
	}()
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		if notifier != nil {
			// After runCtx ends it delivers what is queued, briefly.
			notifier.Run(runCtx)
		}
	}()
	hs := &http.Server{
		Handler:           serveMux(srv.Handler(), admin, metrics.Handler(reg)),
		IdleTimeout:       2 * time.Minute,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	if hooks.ready != nil {
		hooks.ready(ln.Addr())
	}

	select {
	case err = <-served: // the listener failed
	case <-ctx.Done():
		logger.Info("shutting down", "timeout", shutdownTimeout.String())
		// A fresh context: ctx is already done, and Shutdown must get time
		// to let in-flight streams finish.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		err = hs.Shutdown(sctx)
		cancel()
		if err != nil {
			hs.Close()
			err = fmt.Errorf("shutdown: %w", err)
		} else {
			err = <-served
		}
	}
	stop()
	<-checked
	<-notified
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logger.Info("stopped")
	return nil
}

// serveMux routes the metrics (at /metrics, and at /v1/metrics as
// openai-api-route has them), the admin API and /readyz, and sends every
// other request to the proxy.
func serveMux(proxy, admin, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	mux.Handle("/v1/metrics", metrics)
	mux.Handle("/admin/", admin)
	mux.Handle("/readyz", admin)
	mux.Handle("/", proxy)
	return mux
}

// openToAll reports whether cfg leaves the proxy open to every client
// without anyone having said so: no token anywhere and no noauth upstream.
func openToAll(cfg *config.Config) bool {
	if len(cfg.Authorization) > 0 {
		return false
	}
	for _, u := range cfg.Upstream {
		if u.NoAuth || len(u.Authorization) > 0 {
			return false
		}
	}
	return true
}

// loopback reports whether addr is a loopback address, reachable only from
// this machine.
func loopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// recordsRun is the records store of a running serve and its writer.
type recordsRun struct {
	store    records.Store
	writer   *records.Writer
	pinged   chan struct{} // closed when the start-up ping is done
	stopPing context.CancelFunc
}

// startRecords opens the store cfg names and starts its writer; nil when
// records are off. A store out of reach is not an error: the writer tries
// it until it answers, while requests go on.
func startRecords(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*recordsRun, error) {
	store, err := records.Open(cfg.DBType, cfg.DBAddr) // "" is ./db.sqlite
	if errors.Is(err, records.ErrNone) {
		logger.Info("request records off (dbtype none)")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	logger.Info("request records", "store", fmt.Sprint(store), "bodies", cfg.Records.Bodies)
	// Start-up never waits on the store: a PostgreSQL that takes
	// connections and never answers must not hold the proxy up.
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		defer cancel()
		// Cancelled means serve is stopping: nothing to warn about.
		if err := store.Ping(pctx); err != nil && !errors.Is(context.Cause(pctx), context.Canceled) {
			logger.Warn("records store out of reach; records queue until it answers", "store", fmt.Sprint(store), "err", err.Error())
		}
	}()
	w := records.NewWriter(store, records.WriterOptions{Queue: cfg.Records.Queue, QueueBytes: cfg.Records.QueueBytes,
		Batch: cfg.Records.Batch, Keep: cfg.Records.Keep, Logger: logger})
	return &recordsRun{store: store, writer: w, pinged: pinged, stopPing: cancel}, nil
}

// close writes what is queued, giving the store up to timeout (a store
// known dead gets a couple of seconds), and closes it. It first gives the
// requests srv still serves (those the shutdown cut off) a moment to hand
// their records over; those still running then are counted as dropped.
func (r *recordsRun) close(logger *slog.Logger, timeout time.Duration, srv *server.Server) {
	if r == nil {
		return
	}
	var unfinished int64
	if srv != nil {
		dctx, cancel := context.WithTimeout(context.Background(), min(timeout, 2*time.Second))
		unfinished = srv.Drain(dctx)
		cancel()
	}
	r.stopPing()
	<-r.pinged
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := r.writer.Close(ctx); err != nil {
		logger.Warn("records", "err", err.Error())
	}
	s := r.writer.Stats()
	logger.Info("records flushed", "written", s.Written, "dropped", s.Dropped+uint64(unfinished))
	r.store.Close()
}

// logAccess logs who may use what: the ID that records and logs show for
// each client token (never the token) with the upstreams it may use, the
// noauth upstreams, and the upstreams without keys of their own, so that an
// operator can check the rules and tell the clients of keypool records apart.
func logAccess(srv *server.Server, tr *keypool.Transport, cfg *config.Config, logger *slog.Logger) {
	for _, c := range srv.Clients() {
		logger.Info("client token", "id", c.ID, "upstreams", strings.Join(c.Upstreams, ","))
	}
	names := tr.UpstreamNames()
	for i, u := range cfg.Upstream {
		switch {
		case u.NoAuth:
			logger.Info("upstream open to every client (noauth)", "upstream", names[i])
		case len(u.Authorization) == 0 && len(cfg.Authorization) == 0 && !openToAll(cfg):
			logger.Warn("no client may use this upstream: it has no authorization of its own, there is none at the top level, and it is not noauth",
				"upstream", names[i])
		}
		switch u.Auth {
		case keypool.AuthNone:
			logger.Info("upstream without a key: its requests carry no Authorization", "upstream", names[i])
		case keypool.AuthCaller:
			logger.Info("upstream with sk: asis: each client's own Authorization goes to it", "upstream", names[i])
		}
	}
}
