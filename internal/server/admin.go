package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// maxAdminBody bounds the body of an admin request: a disable reason.
const maxAdminBody = 4 << 10

// Rechecker asks for a pass of the key checker; *keypool.Checker is one.
type Rechecker interface{ Recheck() }

// KeyRechecker asks for a check of one key (see keypool.Checker.RecheckKey);
// *keypool.Checker is one. A Rechecker that is not one makes
// POST /admin/keys/{id}/recheck answer 503.
type KeyRechecker interface {
	RecheckKey(id keypool.KeyID) error
}

// AdminOptions configures the handler of NewAdmin. Only Transport is
// required.
type AdminOptions struct {
	// Transport holds the pool the admin API shows and changes. Required.
	Transport *keypool.Transport
	// Checker is asked for a pass by POST /admin/keys/recheck; nil makes
	// that route answer 503.
	Checker Rechecker
	// Token is the admin token (the config's admin_token). Empty means the
	// admin API answers only requests from a loopback address.
	Token secret.String
	// Logger receives one line per change made and per refused request;
	// nil means silent. It never receives a token.
	Logger *slog.Logger
	// Reload re-reads the config for POST /admin/reload and returns what
	// it changed (answered as JSON), or why it kept the config it had (a
	// 400 with the error, which must hold no secret); nil makes that route
	// answer 503.
	Reload func(ctx context.Context) (any, error)
	// Now is the clock key views are taken and refusals logged at; nil
	// means time.Now. It should be the transport's clock (operator actions
	// use the pool's own).
	Now func() time.Time
	// Status, when set, is the status page's handler (internal/status),
	// mounted at /status and under /status/. Its data (/status/data and
	// /status/events) is guarded as the /admin/ routes are. Its page and
	// files hold no data: with a token they are open to all (the page asks
	// for the token, and sends it as the admin API wants it); without
	// one, loopback only.
	Status http.Handler
}

// NewAdmin returns the admin API of a pool, for an operator and for probes:
//
//	GET  /admin/keys               every key's state, as a JSON array of keypool.KeyInfo (keys by ID and source only)
//	GET  /admin/keys/{id}          one key's state, as a keypool.KeyInfo
//	POST /admin/keys/recheck       asks the checker for a pass over every key: 202
//	POST /admin/keys/{id}/disable  takes a key out of selection; optional body {"reason":"…"}
//	POST /admin/keys/{id}/enable   returns a disabled, revoked or over-quota key to selection
//	POST /admin/keys/{id}/recheck  asks the checker to check that key now: 202
//	POST /admin/reload             re-reads the config: 200 with what changed, 400 with why not
//	GET  /readyz                   200 when at least one key is usable, else 503 with the reason
//	GET  /status/                  the status page, when AdminOptions.Status is set
//
// Disable and enable answer the key's new state as a keypool.KeyInfo; they,
// GET /admin/keys/{id} and the recheck of one key answer a 404 for an ID
// the pool does not hold.
//
// The /admin/ routes need "Authorization: Bearer <token>" when opts.Token is
// set (compared in constant time; 401 otherwise). Without a token they
// answer only requests whose remote address is a loopback one, and refuse
// every other with a 403: behind a reverse proxy on the same machine every
// request looks local, so set a token there. /readyz is open to all, as
// probes carry no token; it tells only counts of keys by state.
//
// A nil opts.Transport is a programmer's mistake: NewAdmin panics.
func NewAdmin(opts AdminOptions) http.Handler {
	if opts.Transport == nil {
		panic("server: AdminOptions.Transport is nil")
	}
	a := &admin{pool: opts.Transport.Pool(), snapshot: opts.Transport.Snapshot,
		checker: opts.Checker, token: opts.Token, log: opts.Logger, now: opts.Now, reloader: opts.Reload}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/keys", a.guard(a.keys))
	mux.HandleFunc("POST /admin/keys/recheck", a.guard(a.recheck))
	mux.HandleFunc("POST /admin/keys/{id}/disable", a.guard(a.disable))
	mux.HandleFunc("POST /admin/keys/{id}/enable", a.guard(a.enable))
	mux.HandleFunc("GET /admin/keys/{id}", a.guard(a.key))
	mux.HandleFunc("POST /admin/keys/{id}/recheck", a.guard(a.recheckKey))
	mux.HandleFunc("POST /admin/reload", a.guard(a.reload))
	mux.HandleFunc("/admin/", a.guard(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiError{
			Message: "Unknown admin URL or method; the routes are GET /admin/keys and /admin/keys/{id}, POST /admin/keys/recheck, POST /admin/keys/{id}/recheck, /disable and /enable, POST /admin/reload.",
			Type:    "invalid_request_error", Code: "unknown_url",
		})
	}))
	mux.HandleFunc("GET /readyz", a.readyz)
	if st := opts.Status; st != nil {
		mux.HandleFunc("/status/data", a.guard(st.ServeHTTP))
		mux.HandleFunc("/status/events", a.guard(st.ServeHTTP))
		page := st.ServeHTTP
		if a.token.IsZero() {
			page = a.guard(page)
		}
		mux.HandleFunc("/status", page)
		mux.HandleFunc("/status/", page)
	}
	return mux
}

type admin struct {
	pool     *keypool.Pool
	snapshot func() []keypool.KeyInfo
	checker  Rechecker
	token    secret.String
	log      *slog.Logger
	now      func() time.Time
	refusals refusals // refused requests are logged at most once per 10 s
	reloader func(ctx context.Context) (any, error)
}

// guard lets through the requests the admin API may answer: with a token,
// those that carry it; without one, those from loopback.
func (a *admin) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.token.IsZero() {
			token, ok := clientToken(r.Header.Get("Authorization"))
			if !ok || !a.token.Equal(token) {
				a.refused(r, http.StatusUnauthorized)
				w.Header().Set("Connection", "close")
				writeError(w, http.StatusUnauthorized, apiError{
					Message: "The admin API expects \"Authorization: Bearer <admin_token>\".",
					Type:    "invalid_request_error", Code: "invalid_api_key",
				})
				dropBody(w)
				return
			}
		} else if !fromLoopback(r) {
			a.refused(r, http.StatusForbidden)
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusForbidden, apiError{
				Message: "The admin API has no admin_token set, so it answers on loopback only.",
				Type:    "invalid_request_error", Code: "forbidden",
			})
			dropBody(w)
			return
		}
		h(w, r)
	}
}

func (a *admin) refused(r *http.Request, status int) {
	a.refusals.log(r.Context(), a.log, a.now(), "admin request refused",
		slog.String("method", logPath(r.Method)), slog.String("path", logPath(r.URL.Path)),
		slog.String("remote", r.RemoteAddr), slog.Int("status", status))
}

// fromLoopback reports whether r came from a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (a *admin) keys(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.snapshot())
}

func (a *admin) recheck(w http.ResponseWriter, r *http.Request) {
	if a.checker == nil {
		writeError(w, http.StatusServiceUnavailable, apiError{
			Message: "The proxy runs no key checker.", Type: "server_error", Code: "no_checker",
		})
		return
	}
	a.checker.Recheck()
	a.log.LogAttrs(r.Context(), slog.LevelInfo, "recheck asked", slog.String("remote", r.RemoteAddr))
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "recheck scheduled"})
}

// reload re-reads the config (AdminOptions.Reload) and answers what
// changed, or a 400 with why the config that serves was kept.
func (a *admin) reload(w http.ResponseWriter, r *http.Request) {
	if a.reloader == nil {
		writeError(w, http.StatusServiceUnavailable, apiError{
			Message: "The proxy cannot reload its config.", Type: "server_error", Code: "no_reload",
		})
		return
	}
	a.log.LogAttrs(r.Context(), slog.LevelInfo, "reload asked", slog.String("remote", r.RemoteAddr))
	changes, err := a.reloader(r.Context())
	if err != nil {
		writeError(w, http.StatusBadRequest, apiError{
			Message: "The config was not reloaded; the one before keeps serving: " + err.Error(),
			Type:    "invalid_request_error", Code: "invalid_config",
		})
		return
	}
	writeJSON(w, http.StatusOK, changes)
}

func (a *admin) disable(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason"`
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, apiError{
			Message: fmt.Sprintf("Request body too large: at most %d bytes.", maxAdminBody),
			Type:    "invalid_request_error", Code: "request_too_large",
		})
		return
	}
	if len(strings.TrimSpace(string(raw))) > 0 {
		if err := json.Unmarshal(raw, &body); err != nil {
			writeError(w, http.StatusBadRequest, apiError{
				Message: `The body must be empty or {"reason":"…"}.`,
				Type:    "invalid_request_error", Code: "invalid_json",
			})
			return
		}
	}
	if body.Reason == "" {
		body.Reason = "by the admin API"
	}
	a.change(w, r, "key disabled", func(id keypool.KeyID) error {
		return a.pool.Disable(id, body.Reason)
	})
}

func (a *admin) enable(w http.ResponseWriter, r *http.Request) {
	a.change(w, r, "key enabled", a.pool.Enable)
}

// change applies op to the key of the request's {id} and answers its new
// state, or 404 for a key the pool does not hold.
func (a *admin) change(w http.ResponseWriter, r *http.Request, msg string, op func(keypool.KeyID) error) {
	id := keypool.KeyID(r.PathValue("id"))
	if err := op(id); errors.Is(err, keypool.ErrUnknownKey) {
		writeUnknownKey(w)
		return
	} else if err != nil {
		writeError(w, http.StatusInternalServerError, apiError{
			Message: "The pool could not change the key.", Type: "server_error", Code: "internal_error",
		})
		return
	}
	a.log.LogAttrs(r.Context(), slog.LevelInfo, msg, slog.String("key", string(id)), slog.String("remote", r.RemoteAddr))
	info, _ := a.pool.Key(id)
	writeJSON(w, http.StatusOK, info)
}

// readyz answers 200 when the pool may select some key (unchecked, ready,
// or cooling, which ends by itself; see keypool.Pool.Counts), else 503 with
// the count of keys by state. It costs the same however many keys there
// are.
func (a *admin) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	c := a.pool.Counts()
	if c.Usable > 0 {
		fmt.Fprintln(w, "ok")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, "not ready: "+unusableReason(c))
}

// unusableReason says why no key is usable, as "no usable key: 2 revoked, 1 disabled".
func unusableReason(c keypool.Counts) string {
	switch {
	case c.String() == "":
		return "no key in the pool"
	case c.In(keypool.StateUnchecked) > 0:
		// Only keys that wait for their first check (WithCheckedKeysOnly)
		// are unchecked and unusable.
		return "no usable key: " + c.String() + " (unchecked keys wait for their first check)"
	}
	return "no usable key: " + c.String()
}

// writeJSON writes v as a JSON answer with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, apiError{
			Message: "The proxy could not encode its answer.", Type: "server_error", Code: "internal_error",
		})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// key answers one key's state, or 404 for a key the pool does not hold.
func (a *admin) key(w http.ResponseWriter, r *http.Request) {
	info, ok := a.pool.Key(keypool.KeyID(r.PathValue("id")))
	if !ok {
		writeUnknownKey(w)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// recheckKey asks the checker to check one key now.
func (a *admin) recheckKey(w http.ResponseWriter, r *http.Request) {
	kr, ok := a.checker.(KeyRechecker)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, apiError{
			Message: "The proxy runs no key checker that checks one key.", Type: "server_error", Code: "no_checker",
		})
		return
	}
	id := keypool.KeyID(r.PathValue("id"))
	switch err := kr.RecheckKey(id); {
	case errors.Is(err, keypool.ErrUnknownKey):
		writeUnknownKey(w)
		return
	case err != nil:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, apiError{
			Message: "The key checker has too many checks waiting; try again.", Type: "server_error", Code: "checker_busy",
		})
		return
	}
	a.log.LogAttrs(r.Context(), slog.LevelInfo, "key recheck asked", slog.String("key", string(id)), slog.String("remote", r.RemoteAddr))
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "recheck scheduled", "id": string(id)})
}

// writeUnknownKey answers 404 for a key ID the pool does not hold
// (keypool.ErrUnknownKey).
func writeUnknownKey(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, apiError{
		// The ID is not echoed: it may be a secret pasted by mistake.
		Message: "No key with that ID in the pool; GET /admin/keys lists them.",
		Type:    "invalid_request_error", Code: "key_not_found",
	})
}
