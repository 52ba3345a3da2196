package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// This file bounds what a client can make the proxy hold: how long a
// request body may stall, how many bytes of bodies are kept in memory for
// failover at once, how many connections are open, and how much a refused
// client can make the proxy log.

// Defaults of the limits an Options leaves at zero.
const (
	// DefaultBodyIdle is how long a client may pause while it sends a
	// request body (or after "Expect: 100-continue") before it is cut off.
	DefaultBodyIdle = 30 * time.Second
	// DefaultBodyMemory bounds the request bodies held in memory at once:
	// each is kept whole until its answer is done, to be sent again on
	// failover. Past it, requests get 503 with Retry-After.
	DefaultBodyMemory = 256 << 20
	// DefaultMaxConns bounds the open client connections (LimitListener).
	DefaultMaxConns = 4096
	// maxLogPath bounds a request path in a log line.
	maxLogPath = 256
	// refusedLogEvery is how often a refused client is logged at most; the
	// next line says how many were refused meanwhile.
	refusedLogEvery = 10 * time.Second
)

// errBodyMemory refuses a request body when the bodies held in memory
// reach Options.BodyMemory.
var errBodyMemory = errors.New("server: request bodies in memory are at their limit")

// errBodyIdle cuts off a client that stopped sending its request body.
var errBodyIdle = errors.New("server: the client stopped sending its request body")

// budget counts the bytes of request bodies held in memory.
type budget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes, or reports false when that would pass the limit.
func (b *budget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *budget) give(n int64) { b.used.Add(-n) }

// guardedBody is a client's request body with the proxy's limits on it:
// every read must bring a byte within the idle limit (a read deadline on
// the connection, cleared once the body ends), and every byte read counts
// against the memory budget until the request is done (release).
type guardedBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	idle  time.Duration
	mem   *budget
	taken int64
	ended bool
	timed bool // the connection has a read deadline of ours
}

func (g *guardedBody) Read(p []byte) (int, error) {
	if g.ended {
		return 0, io.EOF
	}
	if g.idle > 0 && g.rc.SetReadDeadline(time.Now().Add(g.idle)) == nil {
		g.timed = true
	}
	n, err := g.ReadCloser.Read(p)
	if n > 0 && g.mem != nil {
		if !g.mem.take(int64(n)) {
			g.clear()
			return 0, errBodyMemory
		}
		g.taken += int64(n)
	}
	if err != nil {
		g.clear()
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			err = errBodyIdle
		}
	}
	if err == io.EOF {
		g.ended = true
	}
	return n, err
}

// clear lifts the read deadline: once the body is read the server reads
// the connection only to notice a client that goes away.
func (g *guardedBody) clear() {
	if g.timed {
		g.rc.SetReadDeadline(time.Time{})
		g.timed = false
	}
}

// release gives the body's bytes back to the budget once the request is done.
func (g *guardedBody) release() {
	g.clear()
	if g.mem != nil {
		g.mem.give(g.taken)
		g.taken = 0
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refusals logs refused clients at most once per refusedLogEvery, with how
// many were refused in between: a client without a token must not be able
// to fill the disk with log lines.
type refusals struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (f *refusals) log(ctx context.Context, l *slog.Logger, now time.Time, msg string, attrs ...slog.Attr) {
	f.mu.Lock()
	if !f.last.IsZero() && now.Sub(f.last) < refusedLogEvery {
		f.suppressed++
		f.mu.Unlock()
		return
	}
	n := f.suppressed
	f.last, f.suppressed = now, 0
	f.mu.Unlock()
	if n > 0 {
		attrs = append(attrs, slog.Int("refused_since_last_line", n))
	}
	l.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

// logPath is a request path as logs show it: at most maxLogPath bytes.
func logPath(p string) string {
	if len(p) <= maxLogPath {
		return p
	}
	n := maxLogPath
	for n > 0 && !utf8.RuneStart(p[n]) {
		n--
	}
	return p[:n] + "…"
}

// LimitListener returns a listener that holds at most n connections open
// at once; Accept waits while n are. n <= 0 means DefaultMaxConns.
func LimitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		n = DefaultMaxConns
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Headers that cross the proxy, on an allowlist both ways: a client's
// credentials and addresses never go upstream, and the upstream's account
// details (organization, project, cookies) never reach the client.
var (
	// requestHeaders are what the API reads of a client's request.
	// Authorization is the transport's: it puts the key's own there (or
	// none), and passes the client's on only to an sk: asis upstream.
	requestHeaders = headerSet("Accept", "Authorization", "Content-Type", "Content-Encoding",
		"Openai-Beta", "Openai-Organization", "Openai-Project", "Idempotency-Key", "User-Agent",
		"X-Client-Request-Id")
	// requestPrefixes: the SDKs' own telemetry (X-Stainless-Retry-Count …).
	requestPrefixes = []string{"X-Stainless-"}

	// responseHeaders are what the SDKs and clients read of an answer.
	responseHeaders = headerSet("Content-Type", "Content-Length", "Content-Disposition", "Cache-Control",
		"Date", "Etag", "Last-Modified", "Retry-After", "Retry-After-Ms", "X-Should-Retry",
		"X-Request-Id", "Openai-Processing-Ms", "Openai-Version", "Openai-Model")
	// responsePrefixes: every rate-limit header (x-ratelimit-limit-requests …).
	responsePrefixes = []string{"X-Ratelimit-"}
)

func headerSet(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[http.CanonicalHeaderKey(n)] = true
	}
	return m
}

// keepOnly deletes from h every header not in allowed and not starting with
// one of prefixes.
func keepOnly(h http.Header, allowed map[string]bool, prefixes []string) {
	for name := range h {
		if allowed[name] {
			continue
		}
		keep := false
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				keep = true
				break
			}
		}
		if !keep {
			delete(h, name)
		}
	}
}
