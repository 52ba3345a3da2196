package notify

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// t0 is the fake clock's start.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// clock is a fake Config.Now that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// request is what a receiver got.
type request struct {
	Method string
	Path   string // escaped, as on the wire
	Query  string
	Header http.Header
	Body   string
}

// receiver records requests and answers them with reply (200 "{}" if nil).
// Requests also go to got, if set, without blocking the handler forever:
// got must be buffered enough.
type receiver struct {
	reply func(w http.ResponseWriter, r *http.Request)
	got   chan request

	mu   sync.Mutex
	reqs []request
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(body)}
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, req)
	rc.mu.Unlock()
	if rc.got != nil {
		rc.got <- req
	}
	if rc.reply != nil {
		rc.reply(w, r)
		return
	}
	io.WriteString(w, "{}")
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

// handlerTransport serves requests in process with a handler, so that tests
// run in a synctest bubble without sockets. Like a real transport it gives
// up when the request's context ends.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		defer req.Body.Close()
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

// hostMux routes in-process requests by host, so one transport serves every
// notifier of a test.
type hostMux map[string]http.Handler

func (m hostMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, ok := m[r.URL.Host]
	if !ok {
		http.Error(w, "no such host", http.StatusBadGateway)
		return
	}
	h.ServeHTTP(w, r)
}

// newTestNotifier returns a Notifier with a webhook nobody receives (Run is
// not called) and the fake clock, for tests of what gets queued.
func newTestNotifier(t *testing.T, c *clock, edit func(*Config)) *Notifier {
	t.Helper()
	cfg := Config{Webhook: &Webhook{URL: secret.New("http://hook.invalid/x")}, Now: c.Now}
	if edit != nil {
		edit(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// takeQueued takes the messages waiting in n's queue.
func takeQueued(n *Notifier) []Event {
	var out []Event
	for {
		select {
		case m := <-n.queue:
			out = append(out, m.Event)
		default:
			return out
		}
	}
}

func kinds(evs []Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Kind)
	}
	return out
}

func change(up string, key keypool.KeyID, from, to keypool.State, reason string) keypool.StateEvent {
	return keypool.StateEvent{Key: key, Upstream: up, From: from, To: to, Reason: reason}
}
