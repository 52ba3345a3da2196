package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/records"
)

// RecordSink takes finished request records; records.Writer is one. Add must
// not block.
type RecordSink interface {
	Add(records.Record) bool
}

// DefaultBodyLimit caps each body a record keeps, when bodies are on and
// Options.BodyLimit is 0.
const DefaultBodyLimit = 64 << 10

// recording is one request's record while the proxy serves it: the response
// writer that sees the status and the bytes sent, and the record gathering
// the request's attempts (it is the request's keypool observer).
type recording struct {
	http.ResponseWriter
	s       *Server
	pending records.Pending
	start   time.Time
	status  int
	ttfb    time.Duration
	errKind string // the proxy's own error class, if it answered itself
	reqBody *capture
	resBody *capture
}

// beginRecord starts the record of r, which also goes, when it is not nil,
// to the request's other observer.
func (s *Server) beginRecord(w http.ResponseWriter, r *http.Request, also keypool.Observer) (*recording, *http.Request) {
	start := s.now()
	ip := r.RemoteAddr
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	rec := &recording{ResponseWriter: w, s: s, start: start}
	rec.pending.Reset(start, "", ip, r.Method, r.URL.Path)
	if s.bodyLimit > 0 {
		rec.reqBody, rec.resBody = &capture{limit: s.bodyLimit}, &capture{limit: s.bodyLimit}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &teeBody{ReadCloser: r.Body, c: rec.reqBody}
		}
	}
	var obs keypool.Observer = &rec.pending
	if also != nil {
		obs = keypool.ObserverFuncs{OnAttempt: func(e keypool.AttemptEvent) {
			rec.pending.Attempt(e)
			also.Attempt(e)
		}}
	}
	ctx := context.WithValue(keypool.ContextWithObserver(r.Context(), obs), recordingKey{}, rec)
	return rec, r.WithContext(ctx)
}

type (
	recordingKey struct{}
	exchangeKey  struct{}
)

// noteRefusal notes on the request's record and access log line, when it
// has them, that the transport refused it for want of a key: the error
// class, and the model.
func noteRefusal(resp *http.Response) {
	e, ok := keypool.Refusal(resp)
	if !ok || resp.Request == nil {
		return
	}
	ctx := resp.Request.Context()
	if x, ok := ctx.Value(exchangeKey{}).(*exchange); ok {
		x.setModel(e.Model)
	}
	rec, ok := ctx.Value(recordingKey{}).(*recording)
	if !ok {
		return
	}
	kind := "no_key"
	if e.NotFound {
		kind = "model_not_found"
	}
	if rec.errKind == "" {
		rec.errKind = kind
	}
	rec.pending.SetModel(e.Model, false)
}

// finish hands the record to the sink once the response is written.
func (rec *recording) finish(r *http.Request) {
	o := records.Outcome{Status: rec.status, TTFB: rec.ttfb, Duration: rec.s.now().Sub(rec.start), Error: rec.errKind}
	if o.Error == "" && r.Context().Err() != nil {
		o.Error = "cancelled"
	}
	if rec.reqBody != nil {
		o.RequestBody, o.ResponseBody = rec.reqBody.String(), rec.resBody.String()
	}
	rec.s.records.Add(rec.pending.Finish(o))
}

func (rec *recording) WriteHeader(status int) {
	if rec.status == 0 && status >= 200 {
		rec.status, rec.ttfb = status, rec.s.now().Sub(rec.start)
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recording) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.resBody != nil {
		rec.resBody.add(b)
	}
	return rec.ResponseWriter.Write(b)
}

// Flush passes a flush on, for streams.
func (rec *recording) Flush() {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	if f, ok := rec.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	} else {
		http.NewResponseController(rec.ResponseWriter).Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (rec *recording) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// setError notes the proxy's own error class on w, when w is a recording.
func setError(w http.ResponseWriter, kind string) {
	if rec, ok := w.(*recording); ok && rec.errKind == "" {
		rec.errKind = kind
	}
}

// setModel notes the model of a request that made no attempt, on its
// record and its access log line.
func setModel(w http.ResponseWriter, model string) {
	if rec, ok := w.(*recording); ok {
		rec.pending.SetModel(model, false)
	}
	if x := exchangeOf(w); x != nil {
		x.setModel(model)
	}
}

// capture keeps the first limit bytes written to it. The transport may
// read a request body on a goroutine of its own, so it locks.
type capture struct {
	mu    sync.Mutex
	limit int64
	buf   []byte
}

func (c *capture) add(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.limit - int64(len(c.buf)); room > 0 {
		if int64(len(b)) > room {
			b = b[:room]
		}
		c.buf = append(c.buf, b...)
	}
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

// teeBody copies what is read of a request body into a capture.
type teeBody struct {
	io.ReadCloser
	c *capture
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	t.c.add(p[:n])
	return n, err
}
