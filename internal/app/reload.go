package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
)

// This file is the reload: SIGHUP (Options.Hangup) and POST /admin/reload
// re-read the config and swap what changed into the running parts, without
// a restart and without dropping a request.
//
// What a reload changes: the upstreams and their keys (keypool's
// Transport.Update: added keys are checked and serve, removed ones take no
// new request and drain, kept ones keep what the pool learned), the client
// tokens and who may use which upstream, and the limits on what clients
// send (max_body, body_idle_timeout, body_memory, cors). Everything else
// (listen, admin_token, the records database, the store, notify, checker,
// lb_policy, retry_time, max_connections) is read at start only: a reload
// that changes one says so in its answer and its log, and applies the rest.
//
// A config that does not load, or whose upstreams the pool refuses, changes
// nothing: the error (with the file and line) is logged and answered, and
// the config before keeps serving.

// ErrNoReload is the error of a reload when serve was given no way to read
// its config again (Options.Config is nil).
var ErrNoReload = errors.New("this server cannot reload its config: it was started without a config source")

// Reloaded is what a reload did: the keys by ID, added, removed (their
// requests in flight finish) and kept with what the pool knew of them; the
// upstreams, by name, in failover order; how many client tokens there are
// now; the upstreams left without a key (their requests get 503 until keys
// come back); and the settings that changed but take effect at the next
// start only. It holds no secret.
type Reloaded struct {
	Keys          keypool.KeyChanges `json:"keys"`
	Upstreams     []string           `json:"upstreams"`
	Clients       int                `json:"clients"`
	NoKeys        []string           `json:"no_keys,omitempty"`
	RestartNeeded []string           `json:"restart_needed,omitempty"`
}

// Reload re-reads the config through Options.Config and swaps what changed
// into the running parts. On any error it changes nothing, logs the error
// and returns it. Reloads run one at a time; Reload is safe to call from
// any goroutine, before or during Run.
func (a *App) Reload(ctx context.Context) (Reloaded, error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	r, err := a.reload()
	if err != nil {
		a.log.Error("config reload failed; the config before keeps serving", "err", err.Error())
		return Reloaded{}, err
	}
	a.log.Info("config reloaded", "added", len(r.Keys.Added), "removed", len(r.Keys.Removed), "kept", len(r.Keys.Kept),
		"upstreams", strings.Join(r.Upstreams, ","), "clients", r.Clients)
	logKeys(a.log, "key added", r.Keys.Added)
	logKeys(a.log, "key removed; its requests in flight finish", r.Keys.Removed)
	for _, name := range r.NoKeys {
		a.log.Warn("upstream has no key; its requests get 503 until a reload brings keys back", "upstream", name)
	}
	for _, s := range r.RestartNeeded {
		a.log.Warn("config changed a setting that takes effect at the next start only", "setting", s)
	}
	return r, nil
}

// maxKeyLines bounds the lines a reload logs per added or removed key: a
// reload of a thousand-key file says how many, not a thousand lines.
const maxKeyLines = 20

// logKeys logs msg for each of ids, or for the first maxKeyLines and then
// how many more.
func logKeys(log *slog.Logger, msg string, ids []keypool.KeyID) {
	for i, id := range ids {
		if i == maxKeyLines {
			log.Info(msg, "more", len(ids)-i)
			return
		}
		log.Info(msg, "key", string(id))
	}
}

// reload is Reload without its log. Requires a.reloadMu.
func (a *App) reload() (Reloaded, error) {
	if a.opts.Config == nil {
		return Reloaded{}, ErrNoReload
	}
	cfg, err := a.opts.Config()
	if err != nil {
		return Reloaded{}, err
	}
	if len(cfg.Upstream) == 0 {
		return Reloaded{}, errors.New("the config has no upstreams")
	}
	if openToAll(cfg) && !openToAll(a.cfg) && (a.addr == nil || !loopback(a.addr)) {
		// Serve refuses to start so; a reload must not open the keys
		// to everyone who can reach the address either.
		return Reloaded{}, errors.New("the config has no client tokens and no noauth upstream: anyone who can reach the proxy could use the keys; set authorization, or restart listening on 127.0.0.1")
	}
	ups, empty, err := cfg.UpstreamsForReload()
	if err != nil {
		return Reloaded{}, err
	}
	p := a.parts
	changes, err := p.transport.Update(ups...)
	if err != nil {
		return Reloaded{}, err
	}
	// The server's rules follow the transport's upstreams: they cannot
	// fail once the transport took ups, one rule per upstream.
	if err := p.server.SetAccess(serverOptions(cfg, p.transport, a.log)); err != nil {
		a.log.Error("client access not reloaded", "err", err.Error())
	}
	p.notifier.Seed(p.transport.Snapshot()) // a nil Notifier ignores it
	p.setUpstreams(cfg)
	r := Reloaded{Keys: changes, Upstreams: p.transport.UpstreamNames(), Clients: len(p.server.Clients()),
		NoKeys: empty, RestartNeeded: restartOnly(a.cfg, cfg)}
	if openToAll(cfg) && !openToAll(a.cfg) {
		a.log.Warn("no client tokens configured: any local process may use the keys", "addr", a.addr.String())
	}
	a.cfg, p.cfg = cfg, cfg
	logAccess(p, a.log) // the client tokens' IDs, and who may use what, as at start
	return r, nil
}

// restartOnly names the settings that differ between old and cfg and that
// a reload does not apply.
func restartOnly(old, cfg *config.Config) []string {
	settings := []struct {
		name     string
		was, now any
	}{
		{"listen", old.Listen, cfg.Listen},
		{"admin_token", old.AdminToken, cfg.AdminToken},
		{"dbtype", old.DBType, cfg.DBType},
		{"dbaddr", old.DBAddr, cfg.DBAddr},
		{"store", old.Store, cfg.Store},
		{"records", old.Records, cfg.Records},
		{"notify", old.Notify, cfg.Notify},
		{"checker", old.Checker, cfg.Checker},
		{"lb_policy", old.LBPolicy, cfg.LBPolicy},
		{"retry_time", old.RetryTime, cfg.RetryTime},
		{"max_connections", old.MaxConnections, cfg.MaxConnections},
	}
	var out []string
	for _, s := range settings {
		if !reflect.DeepEqual(s.was, s.now) {
			out = append(out, s.name)
		}
	}
	return out
}

// listening records the address Run serves on: a reload may open the
// proxy to every client on loopback only, as Serve may.
func (a *App) listening(addr net.Addr) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.addr = addr
}

// reloadForAdmin is POST /admin/reload's reload.
func (a *App) reloadForAdmin(ctx context.Context) (any, error) {
	return a.Reload(ctx)
}

// hangups reloads the config on every signal of hup until ctx ends; the
// channel it returns is closed once it has stopped. Signals that come while
// a reload runs make one more reload after it, however many they are: a
// storm of SIGHUPs costs two reloads, and two goroutines.
func (a *App) hangups(ctx context.Context, hup <-chan os.Signal) <-chan struct{} {
	done := make(chan struct{})
	pending := make(chan struct{}, 1)
	go func() {
		defer close(done)
		worker := make(chan struct{})
		go func() {
			defer close(worker)
			for {
				select {
				case <-ctx.Done():
					return
				case <-pending:
					start := time.Now()
					if _, err := a.Reload(ctx); err == nil {
						a.log.Debug("reload on SIGHUP done", "took", time.Since(start).String())
					}
				}
			}
		}()
		for {
			select {
			case <-ctx.Done():
				<-worker
				return
			case sig := <-hup:
				select {
				case pending <- struct{}{}:
					a.log.Info("reloading the config", "signal", sigName(sig))
				default: // a reload is pending already: it reads the file as it is then
				}
			}
		}
	}()
	return done
}

// sigName names sig for the log; a test may send nil.
func sigName(sig os.Signal) string {
	if sig == nil {
		return "hangup"
	}
	return sig.String()
}
