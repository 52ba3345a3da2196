package app

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/metrics"
	"github.com/keypool/keypool/internal/notify"
	"github.com/keypool/keypool/internal/redisstore"
	"github.com/keypool/keypool/internal/server"
	"github.com/keypool/keypool/internal/status"
)

// parts is everything a config turns into: one set, built by build, run by
// App.Run. A reload builds a new set from the new config.
type parts struct {
	cfg       *config.Config
	registry  *prometheus.Registry
	transport *keypool.Transport
	notifier  *notify.Notifier  // nil: no notifications configured
	records   *recordsPart      // nil: records off (dbtype none)
	redis     *redisstore.Store // nil: no store URL; the records keep key states
	server    *server.Server
	checker   *keypool.Checker
	status    *status.Page
	handler   http.Handler // the proxy, the admin API, the status page and the metrics
	// upstreams are the status page's, by name and type; set by build and
	// by each reload.
	upstreams atomic.Pointer[[]status.Upstream]
}

// setUpstreams names the upstreams of cfg as the status page shows them:
// the transport's names, in its order (the config's, with default names
// filled in), each with its type.
func (p *parts) setUpstreams(cfg *config.Config) {
	names := p.transport.UpstreamNames()
	ups := make([]status.Upstream, len(names))
	for i, name := range names {
		ups[i] = status.Upstream{Name: name, Type: keypool.TypeOpenAI.String()}
		if i < len(cfg.Upstream) && cfg.Upstream[i].Type != "" {
			ups[i].Type = cfg.Upstream[i].Type
		}
	}
	p.upstreams.Store(&ups)
}

// build makes the parts of cfg, whose transport options (see
// transportOptions) are topts, and starts none of them. On an error it
// leaves nothing open.
//
// reload, when not nil, is what POST /admin/reload calls.
func build(cfg *config.Config, opts Options, topts []keypool.Option, reload func(context.Context) (any, error)) (_ *parts, err error) {
	log := opts.Logger
	p := &parts{cfg: cfg, registry: metrics.NewRegistry()}
	// The snapshot is read at scrape time only, once p.transport is set
	// below and the server (which starts the scrapes) is running.
	m, err := metrics.New(p.registry, func() []keypool.KeyInfo { return p.transport.Snapshot() })
	if err != nil {
		return nil, err
	}
	keys := &keyLogs{log: log, key: func(id keypool.KeyID) (keypool.KeyInfo, bool) {
		if p.transport == nil { // an event of New, before it returned
			return keypool.KeyInfo{}, false
		}
		return p.transport.Pool().Key(id)
	}}
	topts = append(topts, keypool.WithLogger(slog.New(atLeast{log.Handler(), slog.LevelInfo})),
		keypool.WithObserver(m), keypool.WithObserver(keys.observer()))
	if nc, ok := notifyConfig(cfg.Notify, log); ok {
		if p.notifier, err = notify.New(nc); err != nil {
			return nil, err
		}
		if err := metrics.RegisterNotify(p.registry, p.notifier.Stats); err != nil {
			return nil, err
		}
		topts = append(topts, keypool.WithObserver(p.notifier))
		log.Info("notifications", "to", p.notifier.String())
	}
	// The records store comes before the transport: the pool starts from
	// the key states kept in it (New loads them).
	if p.records, err = newRecords(cfg, opts.ShutdownTimeout, log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && p.records != nil {
			p.records.store.Close()
		}
	}()
	// The status page watches the transport; it reads the parts made
	// below only once a page is open, after build returned.
	sopt := status.Options{
		Keys:      func() []keypool.KeyInfo { return p.transport.Snapshot() },
		Upstreams: func() []status.Upstream { return *p.upstreams.Load() },
		InFlight:  func() int64 { return p.server.InFlight() },
		Interval:  opts.StatusInterval,
		Logger:    log,
	}
	if p.records != nil {
		sopt.Records = p.records.store
	}
	p.status = status.New(sopt)
	topts = append(topts, keypool.WithObserver(p.status))
	if p.redis, err = newRedis(cfg, opts.ShutdownTimeout, log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && p.redis != nil {
			p.redis.Close()
		}
	}()
	switch {
	case p.redis != nil:
		topts = append(topts, keypool.WithStateStore(p.redis))
		if err := metrics.RegisterStateStore(p.registry, p.redis.Stats); err != nil {
			return nil, err
		}
	case p.records != nil:
		topts = append(topts, keypool.WithStateStore(p.records.states))
	}
	if p.transport, err = keypool.New(append(topts, opts.Transport...)...); err != nil {
		return nil, err
	}
	p.notifier.Seed(p.transport.Snapshot()) // a nil Notifier ignores it
	p.setUpstreams(cfg)

	sopts := serverOptions(cfg, p.transport, log)
	if p.records != nil {
		sopts.Records, sopts.Bodies, sopts.BodyLimit = p.records.writer, cfg.Records.Bodies, cfg.Records.BodyLimit
		if err := metrics.RegisterRecords(p.registry, p.records.writer.Stats); err != nil {
			return nil, err
		}
	}
	if p.server, err = server.New(sopts); err != nil {
		return nil, err
	}
	if err := metrics.RegisterProxy(p.registry, p.server.Stats, p.server.Answers); err != nil {
		return nil, err
	}
	if p.checker, err = keypool.NewChecker(p.transport, append(CheckerOptions(cfg), keypool.WithCheckLogger(log))...); err != nil {
		return nil, err
	}
	admin := server.NewAdmin(server.AdminOptions{Transport: p.transport, Checker: p.checker, Token: cfg.AdminToken, Logger: log,
		Reload: reload, Status: p.status.Handler()})
	if cfg.AdminToken.IsZero() {
		log.Info("no admin_token configured: the admin API answers on loopback only")
	}
	p.handler = routes(p.server.Handler(), admin, metrics.Handler(p.registry))
	logAccess(p, log)
	return p, nil
}

// routes sends the metrics (at /metrics, and at /v1/metrics as
// openai-api-route has them), the admin API, the status page and /readyz
// to their handlers, and every other request to the proxy.
func routes(proxy, admin, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	mux.Handle("/v1/metrics", metrics)
	mux.Handle("/admin/", admin)
	mux.Handle("/readyz", admin)
	mux.Handle("/status", admin)
	mux.Handle("/status/", admin)
	mux.Handle("/", proxy)
	return mux
}
