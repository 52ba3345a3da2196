// Package status is keypool serve's status page: one page, at /status/,
// that shows an operator the pool live. It shows the upstreams, the keys by
// state (ID, source, scope, trial, models, cooldowns counting down), the
// budget left against its limit per scope and model, the requests in
// flight, requests, errors and tokens per minute over the last hour, and
// the latest failovers and state changes. Its buttons (recheck all,
// disable, enable and recheck a key) go through the admin API.
//
// The page is three embedded files (no CDN; it works offline) that read
// snapshots of the pool as JSON: GET data for one, GET events for a stream
// of them (server-sent events, one every Options.Interval and at once
// after a key changes state). A snapshot is built once and sent to every
// open page, and only while a page is open; a page that reads slowly
// skips snapshots rather than queueing them, so neither the server's nor
// the browser's memory grows with the pages or with time.
//
// No secret reaches the page: keys are shown by ID and source, as
// keypool.KeyInfo shows them, and the page is guarded like the admin API
// (server.AdminOptions.Status mounts it).
package status

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/records"
)

//go:embed assets
var assetFS embed.FS

// Upstream is an upstream as the page names it: its name and type
// ("openai", "azure", "replicate").
type Upstream struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

// Options configures a Page. Only Keys is required.
type Options struct {
	// Keys returns the pool's keys (keypool.Transport.Snapshot). It is
	// called for every snapshot, only once Run runs or a page asks: a
	// Page may be made, and passed to keypool.WithObserver, before its
	// transport is. Required.
	Keys func() []keypool.KeyInfo
	// Upstreams returns the upstreams with their types, in failover order;
	// it is called for every snapshot, so that a reload shows. Nil means
	// the upstreams the keys name, without types.
	Upstreams func() []Upstream
	// InFlight returns the proxy's requests in flight; nil means the sum of
	// the keys' requests in flight (attempts upstream).
	InFlight func() int64
	// Records, when set, is where the per-minute charts come from (every
	// replica's requests, and those before a restart), read at most every
	// RecordsEvery; nil means from what this Page observed.
	Records records.Store
	// Interval is how often open pages get a snapshot; 0 means 2 s.
	Interval time.Duration
	// MaxStreams bounds the event streams open at once (0 means 512); one
	// more is answered 503.
	MaxStreams int
	// Logger receives a line when the records store cannot be read; nil
	// means silent.
	Logger *slog.Logger
	// Now is the page's clock; nil means time.Now.
	Now func() time.Time
}

// Defaults of Options.
const (
	DefaultInterval   = 2 * time.Second
	DefaultMaxStreams = 512
	// RecordsEvery is how often the charts are read again from Options.Records.
	RecordsEvery = 15 * time.Second
	// maxEvents is how many failovers and state changes a snapshot lists.
	maxEvents = 50
	// maxKeys bounds the keys a snapshot lists (the counts cover them all).
	maxKeys = 2000
	// settle is the least time between two snapshots pushed because keys
	// changed state: a storm of changes makes one snapshot, not hundreds.
	settle = 250 * time.Millisecond
	// writeTimeout drops a stream whose page does not read a snapshot in time.
	writeTimeout = 10 * time.Second
)

// Page is the status page of one pool: its HTTP handler (Handler), the
// observer that counts requests and keeps the latest events (pass it to
// keypool.WithObserver), and the loop that pushes snapshots (Run). Its
// methods are safe for simultaneous use by multiple goroutines.
type Page struct {
	opts    Options
	history history
	assets  map[string]asset

	build sync.Mutex // held while a snapshot is built; guards recs
	recs  recordsCache

	mu      sync.Mutex // guards the fields below
	frame   *frame     // the latest snapshot; nil before the first
	fresh   chan struct{}
	streams int
	stopped bool

	kick chan struct{} // a key changed state: push soon
	stop chan struct{} // closed by Shutdown: streams end
	once sync.Once
}

type frame struct {
	at    time.Time
	event []byte // the snapshot as one server-sent event
	body  []byte // the snapshot's JSON, on one line: within event
}

const eventPrefix = "event: snapshot\ndata: "

func newFrame(at time.Time, body []byte) *frame {
	ev := make([]byte, 0, len(eventPrefix)+len(body)+2)
	ev = append(append(append(ev, eventPrefix...), body...), "\n\n"...)
	return &frame{at: at, event: ev, body: ev[len(eventPrefix) : len(ev)-2]}
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// New returns the page of the pool opts.Keys shows. It starts nothing:
// Run pushes snapshots to open pages. A nil Keys is a programmer's
// mistake: New panics.
func New(opts Options) *Page {
	if opts.Keys == nil {
		panic("status: Options.Keys is nil")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Page{opts: opts, assets: loadAssets(), fresh: make(chan struct{}),
		kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

func loadAssets() map[string]asset {
	out := map[string]asset{}
	types := map[string]string{".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	fs.WalkDir(assetFS, "assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assetFS.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		out[strings.TrimPrefix(name, "assets/")] = asset{body: body, contentType: types[path.Ext(name)],
			etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out
}

// Run pushes a snapshot to the open pages every Options.Interval, and
// soon after a key changes state, until ctx ends; then it ends every
// stream (Shutdown) and returns nil. It builds no snapshot while no page
// is open.
func (p *Page) Run(ctx context.Context) error {
	defer p.Shutdown()
	tick := time.NewTicker(p.opts.Interval)
	defer tick.Stop()
	var settling <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.stop:
			return nil
		case <-tick.C:
		case <-p.kick:
			if settling == nil {
				settling = time.After(settle)
			}
			continue
		case <-settling:
			settling = nil
		}
		if p.open() > 0 {
			p.publish()
		}
	}
}

// Shutdown ends every event stream now and refuses new ones; call it when
// the HTTP server shuts down (http.Server.RegisterOnShutdown), as a
// server's Shutdown waits for streams, which never end by themselves.
func (p *Page) Shutdown() {
	p.once.Do(func() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
		close(p.stop)
	})
}

func (p *Page) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.streams
}

// publish builds a snapshot and hands it to every open stream.
func (p *Page) publish() {
	p.build.Lock()
	defer p.build.Unlock()
	p.publishLocked()
}

// publishLocked returns the snapshot it published, and the channel closed
// when the next one is. It requires that p.build is held.
func (p *Page) publishLocked() (*frame, <-chan struct{}) {
	now := p.opts.Now()
	f := newFrame(now, p.snapshot(now))
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frame = f
	close(p.fresh)
	p.fresh = make(chan struct{})
	return f, p.fresh
}

// current returns a snapshot no older than half an interval, building one
// if needed (once, however many requests ask at the same time), and the
// channel closed when the next one is published.
func (p *Page) current() (*frame, <-chan struct{}) {
	p.build.Lock()
	defer p.build.Unlock()
	p.mu.Lock()
	f, fresh := p.frame, p.fresh
	p.mu.Unlock()
	if f != nil && p.opts.Now().Sub(f.at) < p.opts.Interval/2 {
		return f, fresh
	}
	return p.publishLocked()
}

// Handler serves the page and its data:
//
//	GET /status              redirects to /status/
//	GET /status/             the page; /status/app.js and /status/style.css its code and style
//	GET /status/data         one snapshot, as JSON
//	GET /status/events       snapshots as server-sent events ("event: snapshot")
//
// It guards nothing itself: server.AdminOptions.Status mounts it behind
// the admin API's guard.
func (p *Page) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		// Relative, so that the page works behind a path prefix.
		w.Header().Set("Location", "status/")
		w.WriteHeader(http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /status/data", p.data)
	mux.HandleFunc("GET /status/events", p.events)
	mux.HandleFunc("GET /status/{file...}", p.file)
	return secure(mux)
}

// secure sets the headers every answer of the page carries: a content
// security policy that lets the page load only its own files and talk only
// to its own server, and no framing, sniffing or referrer.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

func (p *Page) file(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "" {
		name = "index.html"
	}
	a, ok := p.assets[name]
	if !ok {
		http.Error(w, "404 page not found: the status page's files are /status/, app.js and style.css", http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache") // revalidate: a new keypool may bring new files
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}

func (p *Page) data(w http.ResponseWriter, _ *http.Request) {
	f, _ := p.current()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.Write(f.body)
}

// events streams snapshots until the client goes, the page shuts down, or
// a write takes longer than writeTimeout. A stream that missed snapshots
// while it wrote gets the latest only.
func (p *Page) events(w http.ResponseWriter, r *http.Request) {
	if !p.join() {
		w.Header().Set("Retry-After", "10")
		http.Error(w, "503 too many status streams open; try again later", http.StatusServiceUnavailable)
		return
	}
	defer p.leave()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	f, fresh := p.current()
	for {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(f.event); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-fresh:
		case <-r.Context().Done():
			return
		case <-p.stop:
			return
		}
		p.mu.Lock()
		f, fresh = p.frame, p.fresh
		p.mu.Unlock()
	}
}

func (p *Page) join() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.streams >= p.opts.MaxStreams {
		return false
	}
	p.streams++
	return true
}

func (p *Page) leave() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.streams--
}
