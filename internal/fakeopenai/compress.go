package fakeopenai

import (
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// The content codings the fake answers in. The real API's edge also sends br;
// the fake keeps to what the standard library can write.
const (
	codingGzip    = "gzip"
	codingDeflate = "deflate" // HTTP's "deflate" is the zlib format (RFC 9110, 8.4.1.2)
)

// negotiateCoding picks the coding of an answer from the request's
// Accept-Encoding values (each a comma-separated list): gzip when it is
// acceptable, else deflate, else "" for plain bytes. A coding is acceptable
// when it is listed with a q-value above 0, or is not listed and "*" is.
// No Accept-Encoding at all gets plain bytes, as the real edge sends them to
// a client that asked for nothing. Malformed elements are ignored.
func negotiateCoding(values []string) string {
	var gzipQ, deflateQ, anyQ float64 = -1, -1, -1 // -1: not listed
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(elem, ";")
			q, ok := qValue(params)
			if !ok {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "gzip", "x-gzip":
				gzipQ = max(gzipQ, q)
			case "deflate":
				deflateQ = max(deflateQ, q)
			case "*":
				anyQ = max(anyQ, q)
			}
		}
	}
	acceptable := func(q float64) bool { return q > 0 || q < 0 && anyQ > 0 }
	switch {
	case acceptable(gzipQ):
		return codingGzip
	case acceptable(deflateQ):
		return codingDeflate
	}
	return ""
}

// qValue reads the weight among an Accept-Encoding element's parameters
// (";q=0.5"); 1 when there is none. It reports false for a malformed weight.
func qValue(params string) (float64, bool) {
	q := 1.0
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(f >= 0 && f <= 1) { // NaN too
			return 0, false
		}
		q = f
	}
	return q, true
}

// flushWriteCloser is what gzip.Writer and zlib.Writer have in common.
type flushWriteCloser interface {
	io.WriteCloser
	Flush() error
}

// writerPools keep gzip and zlib writers for reuse: each holds hundreds of
// KB of tables, too much to allocate for every answer of a load test. They
// compress at BestSpeed, which resets cheaply: the fake's answers are small
// and how well they compress does not matter, only that they are compressed.
type writerPools struct{ gzip, zlib sync.Pool }

// get returns a writer of coding that writes to w.
func (p *writerPools) get(coding string, w io.Writer) flushWriteCloser {
	if coding == codingGzip {
		if zw, ok := p.gzip.Get().(*gzip.Writer); ok {
			zw.Reset(w)
			return zw
		}
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		return zw
	}
	if zw, ok := p.zlib.Get().(*zlib.Writer); ok {
		zw.Reset(w)
		return zw
	}
	zw, _ := zlib.NewWriterLevel(w, zlib.BestSpeed)
	return zw
}

// put takes back a closed writer, letting go of what it wrote to.
func (p *writerPools) put(zw flushWriteCloser) {
	switch zw := zw.(type) {
	case *gzip.Writer:
		zw.Reset(io.Discard)
		p.gzip.Put(zw)
	case *zlib.Writer:
		zw.Reset(io.Discard)
		p.zlib.Put(zw)
	}
}

// encoder is an http.ResponseWriter that encodes the body written to it with
// one content coding, as the CDN edge in front of the real API does: it adds
// Content-Encoding and Vary to the headers, drops any Content-Length (the one
// net/http may compute from the encoded bytes is right), and flushes the
// encoder before the connection so that each stream event reaches a decoding
// client as soon as it is sent. An answer whose status allows no body passes
// through untouched. Close must be called once the handler has written
// everything, and the encoder not used after.
type encoder struct {
	http.ResponseWriter
	coding  string // codingGzip or codingDeflate
	pools   *writerPools
	zw      flushWriteCloser // nil until the headers go out, and for an answer without a body
	started bool             // WriteHeader was called
}

func newEncoder(w http.ResponseWriter, coding string, pools *writerPools) *encoder {
	return &encoder{ResponseWriter: w, coding: coding, pools: pools}
}

func (e *encoder) WriteHeader(status int) {
	if e.started {
		e.ResponseWriter.WriteHeader(status) // net/http logs the superfluous call
		return
	}
	if status >= http.StatusOK { // 1xx answers are informational: the real one follows
		e.started = true
		if bodyAllowed(status) {
			h := e.Header()
			h.Set("Content-Encoding", e.coding)
			h.Add("Vary", "Accept-Encoding")
			h.Del("Content-Length")
			e.zw = e.pools.get(e.coding, e.ResponseWriter)
		}
	}
	e.ResponseWriter.WriteHeader(status)
}

func (e *encoder) Write(p []byte) (int, error) {
	if !e.started {
		e.WriteHeader(http.StatusOK)
	}
	if e.zw == nil {
		return e.ResponseWriter.Write(p)
	}
	return e.zw.Write(p)
}

// FlushError flushes the encoder, then the connection. http.ResponseController
// calls it.
func (e *encoder) FlushError() error {
	if !e.started {
		e.WriteHeader(http.StatusOK)
	}
	if e.zw != nil {
		if err := e.zw.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(e.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection's other controls.
func (e *encoder) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// Close ends the encoded body (gzip's or zlib's trailer). It writes nothing
// when no answer was started, so a request whose client left stays unanswered.
func (e *encoder) Close() error {
	if e.zw == nil {
		return nil
	}
	err := e.zw.Close()
	e.pools.put(e.zw)
	e.zw = nil
	return err
}

// bodyAllowed reports whether an answer with status may carry a body.
func bodyAllowed(status int) bool {
	return status >= http.StatusOK && status != http.StatusNoContent && status != http.StatusNotModified
}
