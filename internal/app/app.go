// Package app is keypool serve's composition root: it turns a loaded config
// into running parts and owns their lifecycles, so that cmd/keypool is flags,
// then a config, then one call (Serve).
//
// The parts are the transport (keypool.Transport, with the metrics and the
// notifier as its observers), the key checker, the proxy server with the
// admin API and the metrics handler, the request records (a store and the
// writer in front of it), the key states kept in the same store (the
// transport's keypool.StateStore, so that a restart starts from what the
// pool knew) or, with a store URL (store: or --store), in Redis instead
// (redisstore.Store, shared with the other replicas over the same keys),
// the notifier and the metrics registry. One
// function, build, makes all of them from one config into one struct and
// starts nothing; a reload would build a second set and swap it in.
//
// Every long-lived part starts and stops the same way: its constructor
// starts nothing, and Run(ctx) blocks until ctx ends, then finishes what it
// holds within a bound set when it was built, and returns once its
// goroutines are done (keypool.Checker.Run, notify.Notifier.Run,
// records.Writer.Run, records.StateStore.Run, redisstore.Store.Run). The
// HTTP server is net/http's: Serve, then Shutdown with a timeout.
//
// With records on, the transport is built after the records store: New
// loads the key states kept there (bounded by records.DefaultLoadTimeout;
// without them the pool starts as if new), and every change of a key's
// state is saved there in the background. With a store URL, Redis keeps
// the key states instead of the records database: New loads them from
// Redis (bounded by redisstore.DefaultLoadTimeout), every change is saved
// there and published, and the states the other replicas save reach the
// pool through the store's subscription (keypool.StateSubscriber), while
// the records database keeps only the requests.
//
// Once the context of App.Run ends, the parts stop in this order:
//
//  1. The server stops accepting connections, and in-flight requests get
//     the shutdown timeout to finish (http.Server.Shutdown).
//  2. The requests the shutdown cut off get up to 2s more to hand their
//     records over (server.Server.Drain).
//  3. The records writer writes what is queued, and beside it the key
//     states what changed since their last write (to the records store, or
//     to Redis), each within the shutdown timeout; then the stores close
//     ("key states saved", "records flushed"). The Redis store stops
//     listening to the other replicas here. A key state changed after this (a check that ends before
//     step 4) is not kept: that key starts from its older state next time.
//  4. The checker stops, and the notifier, which delivers its queue
//     briefly.
//  5. The transport's idle connections close ("stopped").
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/server"
)

// Defaults of Options.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultShutdownTimeout = 30 * time.Second
)

// Timeouts of the HTTP server, and of the records of requests cut off at
// shutdown.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	drainRequests     = 2 * time.Second
)

// Options are what the flags decide, and what tests and harnesses put in;
// everything else comes from the config. The zero value is usable.
type Options struct {
	// Listen is the address Serve listens on; "" means the config's listen,
	// else DefaultListen.
	Listen string
	// ShutdownTimeout is the time in-flight requests get to finish at
	// shutdown, and then the records to be written; 0 means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger receives what the parts log; nil means silent. It never
	// receives a key or a token.
	Logger *slog.Logger
	// Transport are more options of keypool.New, applied after the
	// config's: tests and harnesses answer upstream requests in memory
	// (keypool.WithBase), watch them (keypool.WithObserver) or shorten
	// the backoff.
	Transport []keypool.Option
	// Ready, when not nil, is told the address Serve listens on once it
	// accepts connections (tests listen on 127.0.0.1:0).
	Ready func(net.Addr)
	// Config reads the config again for a reload (App.Reload, SIGHUP on
	// Hangup, POST /admin/reload): keypool serve loads the same file with
	// the same flags over it. nil means the config cannot be reloaded, and
	// a reload fails with ErrNoReload.
	Config func() (*config.Config, error)
	// Hangup, when not nil, delivers the signals that ask Run for a reload:
	// keypool serve relays SIGHUP here (signal.Notify), so that SIGHUP
	// reloads and never ends the process; tests send on it. Signals that
	// come during a reload make one more reload after it.
	Hangup <-chan os.Signal
	// StatusInterval is how often open status pages get a snapshot
	// (status.Options.Interval); 0 means status.DefaultInterval. keypool
	// serve leaves it 0; benchmarks shorten it so that the pages' cost
	// shows.
	StatusInterval time.Duration
}

// withDefaults is o with its zero fields set to what they mean.
func (o Options) withDefaults() Options {
	o.ShutdownTimeout = cmp.Or(o.ShutdownTimeout, DefaultShutdownTimeout)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// App is keypool serve's parts, built from a config. Build it with New, then
// call Run once; Serve does both and listens.
type App struct {
	opts     Options
	log      *slog.Logger
	parts    *parts
	reloadMu sync.Mutex     // one reload at a time
	cfg      *config.Config // the config serving now; guarded by reloadMu
	addr     net.Addr       // where Run serves; nil: not known; guarded by reloadMu
}

// New builds the parts cfg describes. It starts nothing and listens nowhere,
// but it opens the records store (SQLite makes its file) and loads the key
// states kept there.
func New(cfg *config.Config, opts Options) (*App, error) {
	topts, err := transportOptions(cfg)
	if err != nil {
		return nil, err
	}
	return newApp(cfg, opts, topts)
}

// newApp is New with cfg's transport options already made.
func newApp(cfg *config.Config, opts Options, topts []keypool.Option) (*App, error) {
	opts = opts.withDefaults()
	a := &App{opts: opts, log: opts.Logger, cfg: cfg}
	var reload func(context.Context) (any, error)
	if opts.Config != nil {
		reload = a.reloadForAdmin
	}
	p, err := build(cfg, opts, topts, reload)
	if err != nil {
		return nil, err
	}
	a.parts = p
	return a, nil
}

// Handler serves the whole HTTP surface: the proxy, the admin API, the
// status page, the probes and the metrics. A caller that serves it itself
// (Run with no listener) ends Run's context before its own server's
// Shutdown: open status pages' streams end only then, and Shutdown would
// wait for them.
func (a *App) Handler() http.Handler { return a.parts.handler }

// Transport is the transport the proxy sends every request with.
func (a *App) Transport() *keypool.Transport { return a.parts.transport }

// Serve listens on opts.Listen (else cfg's listen, else DefaultListen),
// builds cfg's parts as New does and runs them with Run until ctx ends. It
// reads the keys files, then listens, before it builds anything, so that a
// serve that cannot start leaves nothing behind (no records file, no
// checks); and it refuses an address off loopback when cfg lets every
// client use the keys.
func Serve(ctx context.Context, cfg *config.Config, opts Options) error {
	opts = opts.withDefaults()
	topts, err := transportOptions(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cmp.Or(opts.Listen, cfg.Listen, DefaultListen))
	if err != nil {
		return err
	}
	defer ln.Close() // on the early returns; Run's http.Server closes it too
	ln = server.LimitListener(ln, cfg.MaxConnections)
	if openToAll(cfg) {
		if !loopback(ln.Addr()) {
			return fmt.Errorf("refusing to serve on %s without client tokens: anyone who can reach it could use the keys; set authorization in the config, or listen on 127.0.0.1", ln.Addr())
		}
		opts.Logger.Warn("no client tokens configured: any local process may use the keys", "addr", ln.Addr().String())
	}
	a, err := newApp(cfg, opts, topts)
	if err != nil {
		return err
	}
	return a.Run(ctx, ln)
}

// Run runs the parts, and serves Handler on ln (when ln is not nil; else
// the caller serves Handler itself), until ctx ends; then it stops them in
// the order the package's documentation gives. It returns nil after a clean
// shutdown, or the listener's or the shutdown's error.
func (a *App) Run(ctx context.Context, ln net.Listener) error {
	p := a.parts
	if ln != nil {
		a.log.Info("listening", "addr", ln.Addr().String(), "keys", len(p.transport.Snapshot()))
		a.listening(ln.Addr())
	}
	// Each part outlives ctx until its turn in the shutdown.
	recordsCtx, stopRecords := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRecords()
	backgroundCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var recorded, shared <-chan error
	if p.records != nil {
		recorded = start(recordsCtx, p.records)
	}
	if p.redis != nil {
		shared = start(recordsCtx, p.redis)
	}
	background := []<-chan error{start(backgroundCtx, p.checker), start(backgroundCtx, p.status)}
	if p.notifier != nil {
		background = append(background, start(backgroundCtx, p.notifier))
	}
	var hangups <-chan struct{}
	if a.opts.Hangup != nil {
		hangups = a.hangups(ctx, a.opts.Hangup)
	}

	err := a.serve(ctx, ln) // 1
	if hangups != nil {
		<-hangups // a reload under way ends before the parts stop
	}
	if p.records != nil { // 2 and 3
		a.drainRecords(ctx, stopRecords, recorded)
	}
	if p.redis != nil { // 3, beside the records
		stopRecords()
		a.drainRedis(shared)
	}
	stopBackground() // 4
	for _, done := range background {
		<-done
	}
	p.transport.CloseIdleConnections() // 5
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	a.log.Info("stopped")
	return nil
}

// serve serves Handler on ln until ctx ends or the listener fails, then
// shuts the HTTP server down, giving in-flight requests the shutdown
// timeout. Without a listener it waits for ctx.
func (a *App) serve(ctx context.Context, ln net.Listener) error {
	timeout := a.opts.ShutdownTimeout
	if ln == nil {
		<-ctx.Done()
		a.log.Info("shutting down", "timeout", timeout.String())
		a.parts.status.Shutdown() // its streams would hold the caller's server up
		return nil
	}
	hs := &http.Server{
		Handler:           a.parts.handler,
		IdleTimeout:       idleTimeout,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	// Open status pages' streams end when the shutdown starts: Shutdown
	// waits for every request, and a stream never ends by itself.
	hs.RegisterOnShutdown(a.parts.status.Shutdown)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	if a.opts.Ready != nil {
		a.opts.Ready(ln.Addr())
	}
	select {
	case err := <-served: // the listener failed
		return err
	case <-ctx.Done():
	}
	a.log.Info("shutting down", "timeout", timeout.String())
	// A fresh context: ctx is already done, and Shutdown must get time to
	// let in-flight streams finish.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	return <-served
}

// drainRecords gives the requests the shutdown cut off a moment to hand
// their records over (those still running then are counted as dropped),
// then stops the records with stop and waits for them on recorded: the
// writer writes what is queued, the key states what changed, and the store
// closes.
func (a *App) drainRecords(ctx context.Context, stop context.CancelFunc, recorded <-chan error) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(a.opts.ShutdownTimeout, drainRequests))
	unfinished := a.parts.server.Drain(dctx)
	cancel()
	stop()
	if err := <-recorded; err != nil {
		a.log.Warn("records", "err", err.Error())
	}
	if states := a.parts.records.states; states != nil {
		ks := states.Stats()
		a.log.Info("key states saved", "written", ks.Written, "dropped", ks.Dropped)
	}
	s := a.parts.records.writer.Stats()
	a.log.Info("records flushed", "written", s.Written, "dropped", s.Dropped+uint64(unfinished))
}

// drainRedis waits for the Redis store, whose context has ended, to write
// the key states that changed since its last write.
func (a *App) drainRedis(shared <-chan error) {
	if err := <-shared; err != nil {
		a.log.Warn("state store", "err", err.Error())
	}
	s := a.parts.redis.Stats()
	a.log.Info("key states saved", "store", "redis", "written", s.Written, "dropped", s.Dropped,
		"outages", s.Outages, "errors", s.Errors)
}

// runner is a long-lived part: it runs until ctx ends, finishes what it
// holds, and returns once its goroutines are done.
type runner interface {
	Run(ctx context.Context) error
}

// start runs r on a goroutine of its own; the channel gets what Run returns.
func start(ctx context.Context, r runner) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return done
}
