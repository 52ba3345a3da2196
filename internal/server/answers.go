package server

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keypool/keypool"
)

// This file counts every answer the proxy gives, those of the upstreams
// and those it makes itself (401, 403, 404, 413, 429 and 503 without a
// key), and writes the access log: one line per proxied request.

// Routes are the values of an answer's route label: the API's endpoint
// families, so that a path of IDs or of a client's choosing cannot grow the
// series. A path under /v1 of no family counts as /v1/other, any other path
// as "other".
var Routes = [...]string{
	"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
	"/v1/models", "/v1/moderations", "/v1/audio", "/v1/images", "/v1/files",
	"/v1/uploads", "/v1/batches", "/v1/fine_tuning", "/v1/vector_stores",
	"/v1/assistants", "/v1/threads", "/v1/realtime", "/v1/other", "/healthz", "other",
}

const (
	routeV1Other = len(Routes) - 3
	routeHealth  = len(Routes) - 2
	routeOther   = len(Routes) - 1
)

// routeIndex returns the index in Routes of path's route.
func routeIndex(path string) int {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		if path == "/healthz" {
			return routeHealth
		}
		return routeOther
	}
	for i, r := range Routes[:routeV1Other] {
		family := r[len("/v1/"):]
		if tail, ok := strings.CutPrefix(rest, family); ok && (tail == "" || tail[0] == '/') {
			return i
		}
	}
	return routeV1Other
}

// StatusClasses are the values of an answer's class label; "aborted" is a
// request that ended without an answer (the client or the upstream went
// away before the headers).
var StatusClasses = [...]string{"aborted", "1xx", "2xx", "3xx", "4xx", "5xx"}

func classIndex(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}

// Client labels of answers to requests with no configured token: none sent
// (or none needed: the proxy is open, or the path is not the API's), or a
// token the proxy does not know.
const (
	ClientNone    = "none"
	ClientInvalid = "invalid"
)

// answerCounts counts answers by client, route and class. Its clients are
// ClientNone, ClientInvalid and the configured tokens' IDs: a set only the
// config grows (a reload adds the IDs of new tokens and keeps the counts of
// the old), so that clients cannot grow the series. A client's index never
// changes, so a request counts alike into the set it started with or a
// later one.
type answerCounts struct {
	clients []string           // labels, by index
	index   map[string]int     // client ID → index
	n       []*[]atomic.Uint64 // by client, then route and class; shared by the sets grown from this one
}

// The indexes of the clients every set has.
const (
	clientNone = iota
	clientInvalid
)

func newAnswerCounts(ids []string) *answerCounts {
	c := &answerCounts{clients: []string{ClientNone, ClientInvalid}, index: map[string]int{},
		n: []*[]atomic.Uint64{newClientCounts(), newClientCounts()}}
	return c.grow(ids)
}

func newClientCounts() *[]atomic.Uint64 {
	n := make([]atomic.Uint64, len(Routes)*len(StatusClasses))
	return &n
}

// grow returns a set with c's clients and counts, and ids added.
func (c *answerCounts) grow(ids []string) *answerCounts {
	g := &answerCounts{clients: slices.Clone(c.clients), index: maps.Clone(c.index), n: slices.Clone(c.n)}
	for _, id := range ids {
		if _, dup := g.index[id]; !dup {
			g.index[id] = len(g.clients)
			g.clients = append(g.clients, id)
			g.n = append(g.n, newClientCounts())
		}
	}
	return g
}

func (c *answerCounts) add(client, route, class int) {
	(*c.n[client])[route*len(StatusClasses)+class].Add(1)
}

// Answers calls yield with the count of every client, route and status
// class that has answers, for metrics.
func (s *Server) Answers(yield func(client, route, class string, n uint64)) {
	c := s.answers.Load()
	for client, counts := range c.n {
		for i := range *counts {
			if n := (*counts)[i].Load(); n > 0 {
				yield(c.clients[client], Routes[i/len(StatusClasses)], StatusClasses[i%len(StatusClasses)], n)
			}
		}
	}
}

// exchange is one request while the proxy answers it: the writer that sees
// the status, and, for the access log, the request's observer that sees
// its attempts (keypool.ContextWithObserver).
type exchange struct {
	http.ResponseWriter
	status int
	client int  // index in the answer counts
	api    bool // a /v1 request, served by serveAPI

	mu       sync.Mutex // the transport reports attempts from its goroutines
	model    string
	key      keypool.KeyID
	attempts int
	usage    keypool.Usage
}

// countAnswers wraps h: every answer it gives is counted, and with an
// access log every /v1 request is logged once answered.
func (s *Server) countAnswers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		x := &exchange{ResponseWriter: w, client: clientNone}
		defer func() {
			// Also when ReverseProxy aborts (http.ErrAbortHandler):
			// the panic goes on after.
			route := routeIndex(r.URL.Path)
			s.answers.Load().add(x.client, route, classIndex(x.status)) // the latest set holds every index given
			if x.api && s.accessLog != nil {
				s.logAccess(r, x, route, s.now().Sub(start))
			}
		}()
		h.ServeHTTP(x, r)
	})
}

// setClient notes the request's client: the ID of its configured token,
// else whether it sent a token where tokens are needed (open: none is).
func (s *Server) setClient(x *exchange, id string, r *http.Request, open bool) {
	switch _, sent := clientToken(r.Header.Get("Authorization")); {
	case id != "":
		if i, ok := s.answers.Load().index[id]; ok {
			x.client = i
		}
	case sent && !open:
		x.client = clientInvalid
	}
}

func (x *exchange) WriteHeader(status int) {
	// 100 Continue and 103 Early Hints come before the answer.
	if x.status == 0 && (status >= 200 || status == http.StatusSwitchingProtocols) {
		x.status = status
	}
	x.ResponseWriter.WriteHeader(status)
}

func (x *exchange) Write(b []byte) (int, error) {
	if x.status == 0 {
		x.status = http.StatusOK
	}
	return x.ResponseWriter.Write(b)
}

// Flush passes a flush on, for streams.
func (x *exchange) Flush() {
	if x.status == 0 {
		x.status = http.StatusOK
	}
	if f, ok := x.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	} else {
		http.NewResponseController(x.ResponseWriter).Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (x *exchange) Unwrap() http.ResponseWriter { return x.ResponseWriter }

// Attempt notes one attempt of the request (keypool.Observer).
func (x *exchange) Attempt(e keypool.AttemptEvent) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.attempts++
	x.key, x.model = e.Key, e.Model
	if e.Final {
		x.usage = e.Usage
	}
}

// StateChange ignores state changes (keypool.Observer).
func (x *exchange) StateChange(keypool.StateEvent) {}

// Checked ignores check results (keypool.Observer).
func (x *exchange) Checked(keypool.CheckResult) {}

// setModel notes the model of a request the proxy answered without an
// attempt, unless an attempt named it.
func (x *exchange) setModel(model string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.model == "" {
		x.model = model
	}
}

// exchangeOf returns the exchange under w (itself, or under a recording),
// or nil.
func exchangeOf(w http.ResponseWriter) *exchange {
	if rec, ok := w.(*recording); ok {
		w = rec.ResponseWriter
	}
	x, _ := w.(*exchange)
	return x
}

// logAccess writes the access log line of one answered request: who (the
// client token's ID, never the token), what, the answer, the key of its
// final attempt (by ID) and the tokens it used. The model, of the
// client's choosing, is clipped; the route is one of Routes, never the
// path, which may hold IDs.
func (s *Server) logAccess(r *http.Request, x *exchange, route int, took time.Duration) {
	x.mu.Lock()
	model, key, attempts, usage := x.model, x.key, x.attempts, x.usage
	x.mu.Unlock()
	s.accessLog.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("client", s.answers.Load().clients[x.client]),
		slog.String("method", logPath(r.Method)),
		slog.String("route", Routes[route]),
		slog.String("model", logPath(model)),
		slog.Int("status", x.status),
		slog.String("key", string(key)),
		slog.Int("attempts", attempts),
		slog.Duration("latency", took),
		slog.Int64("input_tokens", usage.InputTokens),
		slog.Int64("output_tokens", usage.OutputTokens),
	)
}
