// Package server is keypool's OpenAI-compatible proxy: an http.Handler that
// checks a client's token, limits the request body and sends every /v1/*
// request through a keypool.Transport, answering the errors it makes itself
// as the OpenAI API does, so that SDKs in front of it understand them.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
)

// DefaultMaxBody is the request body limit of an Options that sets none:
// enough for audio uploads (OpenAI's own limit is 25 MB) with room for the
// multipart framing.
const DefaultMaxBody = 32 << 20

// Options configures a Server. Only Transport is required.
type Options struct {
	// Transport sends every proxied request. Required.
	Transport *keypool.Transport

	// Tokens are the client tokens that may use every upstream without
	// tokens of its own (the config's top-level authorization).
	Tokens []secret.String
	// Upstreams are the access rules of the upstreams, in the transport's
	// order (the config's upstreams). They may be left empty when no
	// upstream has rules of its own.
	Upstreams []UpstreamAccess

	// MaxBody bounds a request body in bytes; a larger one gets a 413.
	// 0 means DefaultMaxBody; a negative value means no limit.
	MaxBody int64
	// BodyIdle is how long a client may pause while it sends a request
	// body before it gets a 408; 0 means DefaultBodyIdle, negative no limit.
	BodyIdle time.Duration
	// BodyMemory bounds the bytes of request bodies held in memory at once
	// (each is kept until its answer is done, for failover); a request
	// past it gets 503 with Retry-After. 0 means DefaultBodyMemory,
	// negative no limit.
	BodyMemory int64

	// CORS answers browsers' preflight requests to /v1/* and lets pages of
	// any origin read the answers, as openai-api-route does. It is ignored
	// when no client token is configured: any page a local browser opens
	// could then spend the keys.
	CORS bool

	// Logger receives one line per failed request and the proxy's own
	// errors; nil means silent. It never receives a token or a key.
	Logger *slog.Logger
	// AccessLog, when not nil, receives one info line per /v1 request of
	// an authorized client once answered: the client token's ID, method,
	// route, model, status, key ID of the final attempt, attempts,
	// latency and tokens. nil means none. Refused clients get no line
	// (they are counted, and Logger tells of them at a bounded rate):
	// anyone could fill the log with them.
	AccessLog *slog.Logger

	// Now is the clock that Retry-After is computed with; nil means
	// time.Now. It must be the transport's clock.
	Now func() time.Time

	// Records, when set, gets one record per /v1/* request once its
	// response is written (a records.Writer). Bodies keeps the request and
	// response bodies in it, each cut at BodyLimit bytes (0 means
	// DefaultBodyLimit). Headers are never kept.
	Records   RecordSink
	Bodies    bool
	BodyLimit int64
}

// UpstreamAccess is who may use one upstream, by openai-api-route's rule: an
// upstream with tokens of its own takes only those; one without takes the
// global tokens; a noauth one takes anyone.
type UpstreamAccess struct {
	// Name shows the upstream in logs.
	Name string
	// Tokens are the upstream's own client tokens (its authorization): when
	// there are any, only they may use it.
	Tokens []secret.String
	// InheritTokens lets the global tokens use the upstream besides its own
	// (inherit_authorization, a keypool extension).
	InheritTokens bool
	// NoAuth opens the upstream to every client, with a token or without.
	NoAuth bool
}

// allows reports whether a client may use u: anyone when u is noauth; else
// a holder of one of u's own tokens, or of a global token when u has none
// of its own (or inherits them).
func (u *UpstreamAccess) allows(global, own bool) bool {
	return u.NoAuth || own || global && (len(u.Tokens) == 0 || u.InheritTokens)
}

// Server is the proxy. Build it with New and serve its Handler. It is safe
// for simultaneous use by multiple goroutines.
//
// Client authorization is openai-api-route's: an upstream with tokens of its
// own may be used only with those; an upstream without takes the global
// tokens; a noauth upstream takes anyone. A request is refused when that
// leaves no upstream (401 for a missing or wrong token, 403 for a valid one),
// and its attempts never reach an upstream it may not use
// (keypool.ContextWithUpstreams). With no token configured anywhere and no
// noauth upstream, every request may use every upstream.
type Server struct {
	transport *keypool.Transport
	cur       atomic.Pointer[rules] // who may use what, and the limits: SetAccess swaps them
	records   RecordSink            // nil: records off
	bodyLimit int64                 // bytes of each body kept in a record; 0: none
	log       *slog.Logger
	accessLog *slog.Logger                 // nil: no access log
	answers   atomic.Pointer[answerCounts] // grows with the client tokens a reload adds
	now       func() time.Time
	proxy     *httputil.ReverseProxy
	handler   http.Handler
	refusals  refusals
	refused   [len(refusalReasons)]atomic.Uint64
	active    sync.WaitGroup // /v1 requests being served
	running   atomic.Int64   // their count
}

// rules are the parts of Options a reload may change: the client tokens,
// the upstreams' access rules and the limits on what clients send. A
// request reads them once, when it starts; they never change in place.
type rules struct {
	global    []secret.String  // the top-level tokens
	access    []UpstreamAccess // one per transport upstream, in its order
	globalIDs []string         // records.ClientID of each global token
	accessIDs [][]string       // records.ClientID of each access's tokens
	names     []string         // the transport's upstream names
	open      bool             // no token anywhere: every request may use every upstream
	cors      bool
	maxBody   int64
	bodyIdle  time.Duration
	bodyMem   *budget // nil: no limit
}

// New builds a Server from opts. It fails when opts has no Transport.
func New(opts Options) (*Server, error) {
	if opts.Transport == nil {
		return nil, errors.New("server: Options.Transport is nil")
	}
	s := &Server{
		transport: opts.Transport,
		log:       opts.Logger,
		accessLog: opts.AccessLog,
		now:       opts.Now,
		records:   opts.Records,
	}
	if opts.Bodies && s.records != nil {
		s.bodyLimit = opts.BodyLimit
		if s.bodyLimit <= 0 {
			s.bodyLimit = DefaultBodyLimit
		}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	ru, err := newRules(&opts, nil)
	if err != nil {
		return nil, err
	}
	s.cur.Store(ru)
	s.answers.Store(newAnswerCounts(ru.clientIDs()))
	s.proxy = &httputil.ReverseProxy{
		Rewrite:   rewrite,
		Transport: opts.Transport,
		// FlushInterval 0: ReverseProxy flushes text/event-stream and
		// responses of unknown length after every write on its own, and
		// buffers the rest (JSON of known length) for fewer writes.
		ErrorHandler:   s.proxyError,
		BufferPool:     copyBuffers{},
		ModifyResponse: filterAnswer,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/", s.serveAPI)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiError{
			Message: fmt.Sprintf("Unknown request URL: %s %s.", logPath(r.Method), logPath(r.URL.Path)),
			Type:    "invalid_request_error", Code: "unknown_url",
		})
	})
	s.handler = s.countAnswers(mux)
	return s, nil
}

// newRules makes the rules of opts, for the transport's upstreams as they
// are now. A body memory limit that stays keeps old's budget, so that the
// bodies in memory still count against it.
func newRules(opts *Options, old *rules) (*rules, error) {
	ru := &rules{maxBody: opts.MaxBody}
	if ru.maxBody == 0 {
		ru.maxBody = DefaultMaxBody
	}
	switch {
	case opts.BodyIdle == 0:
		ru.bodyIdle = DefaultBodyIdle
	case opts.BodyIdle > 0:
		ru.bodyIdle = opts.BodyIdle
	}
	memory := opts.BodyMemory
	if memory == 0 {
		memory = DefaultBodyMemory
	}
	switch {
	case memory < 0:
	case old != nil && old.bodyMem != nil && old.bodyMem.max == memory:
		ru.bodyMem = old.bodyMem
	default:
		ru.bodyMem = &budget{max: memory}
	}
	ru.global = opts.Tokens
	ru.names = opts.Transport.UpstreamNames()
	if len(opts.Upstreams) > len(ru.names) {
		return nil, fmt.Errorf("server: %d upstream access rules for %d upstreams", len(opts.Upstreams), len(ru.names))
	}
	ru.access = make([]UpstreamAccess, len(ru.names))
	copy(ru.access, opts.Upstreams)
	ru.globalIDs = clientIDs(ru.global)
	ru.accessIDs = make([][]string, len(ru.access))
	for i, u := range ru.access {
		ru.accessIDs[i] = clientIDs(u.Tokens)
	}
	ru.open = len(ru.global) == 0
	for _, u := range ru.access {
		if len(u.Tokens) > 0 || u.NoAuth {
			ru.open = false
		}
	}
	ru.cors = opts.CORS && !ru.open
	return ru, nil
}

// SetAccess puts the client tokens, the upstreams' access rules and the
// limits of opts (Tokens, Upstreams, MaxBody, BodyIdle, BodyMemory, CORS)
// in place of the server's, for the upstreams its transport has now: a
// reload calls it once the transport is updated. Requests already started
// finish under the rules they started with. Every other field of opts is
// ignored; a bad opts is an error and changes nothing.
func (s *Server) SetAccess(opts Options) error {
	opts.Transport = s.transport
	ru, err := newRules(&opts, s.cur.Load())
	if err != nil {
		return err
	}
	s.cur.Store(ru)
	s.answers.Store(s.answers.Load().grow(ru.clientIDs()))
	return nil
}

// clientIDs lists the IDs of every client token of ru, for the answer
// counts.
func (ru *rules) clientIDs() []string {
	return slices.Concat(append([][]string{ru.globalIDs}, ru.accessIDs...)...)
}

// Handler returns the proxy's http.Handler: /v1/* (every method) through the
// transport, and /healthz. Every answer it gives is counted (Answers).
func (s *Server) Handler() http.Handler { return s.handler }

// copyBuffers lends ReverseProxy the 32 KiB buffers it copies response
// bodies with, instead of one new buffer per response.
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (copyBuffers) Get() []byte { return copyBufferPool.Get().(*[32 << 10]byte)[:] }
func (copyBuffers) Put(b []byte) {
	if cap(b) == 32<<10 {
		copyBufferPool.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}

// filterAnswer passes on only the upstream headers clients read (an
// allowlist): the operator's organization and project, cookies set for the
// key's session, the upstream's own CORS headers and anything else it
// sends stay with the proxy; status and body pass through as they are.
func filterAnswer(resp *http.Response) error {
	keepOnly(resp.Header, responseHeaders, responsePrefixes)
	noteRefusal(resp)
	return nil
}

// CORS headers, as openai-api-route sends them.
const (
	corsMethods = "POST, GET, OPTIONS, PUT, DELETE, PATCH"
	corsHeaders = "Origin, Authorization, Content-Type"
)

// setCORS lets pages of any origin read the answer. No credentials
// (cookies) are allowed: clients authenticate with a bearer token.
func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", corsMethods)
	h.Set("Access-Control-Allow-Headers", corsHeaders)
}

// upstreamHost is where the proxy points outgoing requests; the transport
// moves each onto its key's upstream, so it is never dialled.
const upstreamHost = "upstream.keypool.invalid"

// rewrite prepares the outgoing request. Only the headers the API reads go
// on (an allowlist): a client's other credentials (X-Api-Key, Api-Key,
// cookies) and addresses (X-Real-IP, X-Forwarded-*) stay with the proxy.
// The transport replaces Authorization with the key's (or drops it, for an
// upstream without keys; only an upstream with sk: asis passes it on).
func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = upstreamHost
	pr.Out.Host = ""
	keepOnly(pr.Out.Header, requestHeaders, requestPrefixes)
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	ru := s.cur.Load()
	if ru.cors {
		setCORS(w.Header())
		if r.Method == http.MethodOptions {
			// A browser's preflight carries no token; it learns only
			// what the proxy lets pages do.
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	s.active.Add(1)
	defer s.active.Done()
	s.running.Add(1)
	defer s.running.Add(-1)
	// Who may use what is decided before anything of the request is read,
	// kept or recorded: a refused client costs a header and a log line
	// now and then, never a body, a record or memory.
	only, client, ok := ru.authorize(r)
	x := exchangeOf(w)
	s.setClient(x, client, r, ru.open)
	if !ok {
		s.refuse(w, r, client != "")
		return
	}
	x.api = true
	// MaxBytesReader tells the server's own writer to close the connection.
	orig := x.ResponseWriter
	var watch keypool.Observer // the request's observer: its record and its access log line
	if s.accessLog != nil {
		watch = x
		r = r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x))
	}
	if s.records != nil {
		var rec *recording
		rec, r = s.beginRecord(w, r, watch)
		defer func() {
			if p := recover(); p != nil {
				// ReverseProxy cuts a response off (http.ErrAbortHandler)
				// when the client or the upstream goes away mid-body.
				if rec.errKind == "" {
					rec.errKind = "aborted"
				}
				rec.finish(r)
				panic(p)
			}
			rec.finish(r)
		}()
		if client != "" {
			rec.pending.SetClient(client)
		}
		w = rec
	} else if watch != nil {
		r = r.WithContext(keypool.ContextWithObserver(r.Context(), watch))
	}
	if r.Body != nil && r.Body != http.NoBody {
		if ru.maxBody > 0 {
			if r.ContentLength > ru.maxBody {
				s.count("too_large")
				setError(w, "too_large")
				orig.Header().Set("Connection", "close") // the body is not read
				writeError(w, http.StatusRequestEntityTooLarge, ru.tooLarge())
				dropBody(orig)
				return
			}
			r.Body = http.MaxBytesReader(orig, r.Body, ru.maxBody)
		}
		g := &guardedBody{ReadCloser: r.Body, rc: http.NewResponseController(orig), idle: ru.bodyIdle, mem: ru.bodyMem}
		defer g.release()
		r.Body = g
	}
	if only != nil {
		r = r.WithContext(keypool.ContextWithUpstreams(r.Context(), only...))
	}
	s.proxy.ServeHTTP(w, r)
}

// Drain waits until no /v1 request is being served (their records are
// handed over), or ctx ends; then it returns how many still run. Call it
// after http.Server.Shutdown or Close, before the records writer closes.
func (s *Server) Drain(ctx context.Context) int64 {
	done := make(chan struct{})
	go func() {
		s.active.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return s.running.Load()
}

// InFlight is how many /v1 requests are being served now.
func (s *Server) InFlight() int64 { return s.running.Load() }

// refuse answers a client without a valid token (401) or whose token may use
// no upstream (403), and closes the connection, so that the server does not
// read what is left of its body.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, validToken bool) {
	status, e, reason := http.StatusUnauthorized, errInvalidToken, "unauthorized"
	if validToken {
		status, e, reason = http.StatusForbidden, errNoUpstream, "forbidden"
	}
	s.count(reason)
	s.refusals.log(r.Context(), s.log, s.now(), "client refused",
		slog.String("method", logPath(r.Method)), slog.String("path", logPath(r.URL.Path)),
		slog.String("remote", r.RemoteAddr), slog.Int("status", status))
	w.Header().Set("Connection", "close")
	writeError(w, status, e)
	dropBody(w)
}

// dropBody ends a request whose body the proxy will not read, once its
// answer (with "Connection: close") is written: the server's own read of
// what is left of the body (up to 256 KiB, at the client's pace) ends at
// once, and so does the connection.
func dropBody(w http.ResponseWriter) {
	http.NewResponseController(w).SetReadDeadline(time.Now())
}

// Stats counts what the proxy refused or cut off itself since it started,
// by reason, for metrics: unauthorized, forbidden, too_large, bad_model,
// body_memory, body_idle, bad_path.
func (s *Server) Stats() map[string]uint64 {
	out := make(map[string]uint64, len(refusalReasons))
	for i, r := range refusalReasons {
		out[r] = s.refused[i].Load()
	}
	return out
}

var refusalReasons = [...]string{"unauthorized", "forbidden", "too_large", "bad_model", "body_memory", "body_idle", "bad_path"}

func (s *Server) count(reason string) {
	for i, r := range refusalReasons {
		if r == reason {
			s.refused[i].Add(1)
			return
		}
	}
}

// authorize returns the upstreams r may use: nil for all of them, and ok
// false for none; and the client's ID (records.ClientID) when its token is
// a configured one. Every configured token is compared, each in constant
// time, so neither the time taken nor which token matched tells a client
// anything about the others.
func (s *rules) authorize(r *http.Request) (only []string, client string, ok bool) {
	if s.open {
		return nil, "", true
	}
	token, hasToken := clientToken(r.Header.Get("Authorization"))
	g := indexOf(s.global, token, hasToken)
	global := g >= 0
	if global {
		client = s.globalIDs[g]
	}
	all := true
	for i := range s.access {
		u := &s.access[i]
		k := indexOf(u.Tokens, token, hasToken)
		own := k >= 0
		if own && client == "" {
			client = s.accessIDs[i][k]
		}
		if u.allows(global, own) {
			only = append(only, s.names[i])
		} else {
			all = false
		}
	}
	switch {
	case len(only) == 0:
		return nil, client, false
	case all:
		return nil, client, true
	}
	return only, client, true
}

// indexOf returns where token is among tokens, -1 when it is not there or
// there is no token. It compares token with every one of tokens in constant
// time each, without stopping at a match.
func indexOf(tokens []secret.String, token string, hasToken bool) int {
	at := -1
	for i, t := range tokens {
		if t.Equal(token) && hasToken {
			at = i
		}
	}
	return at
}

// clientIDs returns the records.ClientID of each token: configured tokens
// are known by these IDs, never by themselves.
func clientIDs(tokens []secret.String) []string {
	ids := make([]string, len(tokens))
	for i, t := range tokens {
		ids[i] = records.ClientID(t.Reveal())
	}
	return ids
}

// clientToken returns the token of an "Authorization: Bearer <token>"
// value, or, as openai-api-route takes it, of a bare "Authorization:
// <token>" without a scheme.
func clientToken(h string) (string, bool) {
	const prefix = "bearer "
	h = strings.TrimSpace(h)
	switch {
	case len(h) > len(prefix) && equalFoldASCII(h[:len(prefix)], prefix):
		h = strings.TrimSpace(h[len(prefix):])
	case strings.ContainsAny(h, " \t"):
		return "", false // another scheme (Basic …)
	}
	return h, h != ""
}

// ClientAccess is a configured client token's ID (as records show it, never
// the token) and the upstreams it may use.
type ClientAccess struct {
	ID        string
	Upstreams []string
}

// Clients lists every configured client token by ID with the upstreams it
// may use, global tokens first, so that an operator can see who may spend
// which keys.
func (s *Server) Clients() []ClientAccess {
	return s.cur.Load().clients()
}

func (s *rules) clients() []ClientAccess {
	var out []ClientAccess
	add := func(id string, t secret.String, global bool) {
		c := ClientAccess{ID: id}
		for i := range s.access {
			u := &s.access[i]
			if !u.NoAuth && u.allows(global, indexOf(u.Tokens, t.Reveal(), true) >= 0) {
				c.Upstreams = append(c.Upstreams, s.names[i])
			}
		}
		out = append(out, c)
	}
	seen := map[string]bool{}
	for i, t := range s.global {
		seen[s.globalIDs[i]] = true
		add(s.globalIDs[i], t, true)
	}
	for i, u := range s.access {
		for k, t := range u.Tokens {
			if id := s.accessIDs[i][k]; !seen[id] {
				seen[id] = true
				add(id, t, false)
			}
		}
	}
	return out
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
