package keypool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	retry "github.com/sethvargo/go-retry"
)

// Transport is an http.RoundTripper that sends each request with the best key
// of its pool and fails over to another key or upstream when one is revoked,
// out of quota, rate-limited, failing or too slow. It learns from every answer
// (rate-limit headers, error types, model access) and uses that for every
// later request.
//
// Build one with New and put it under an http.Client:
//
//	t, err := keypool.New(keypool.WithUpstream("https://api.openai.com/v1", os.Getenv("OPENAI_KEY")))
//	client := &http.Client{Transport: t}
//
// A request's Authorization header is replaced by the chosen key's, and its
// URL is moved onto the key's upstream (the path after /v1 is kept). Once a
// response is handed back there is no more failover; before that, a stream is
// read up to its first event so that an error event or a stream that never
// starts still fails over. When every attempt failed the caller gets the last
// upstream answer with "x-should-retry: false", so SDK retries do not multiply
// the load.
//
// A Transport is safe for simultaneous use by multiple goroutines.
type Transport struct {
	pool        *Pool
	base        http.RoundTripper
	policy      Policy
	observer    Observer
	log         *slog.Logger
	now         func() time.Time
	maxAttempts int
	maxWait     time.Duration
	retryTime   time.Duration
	backoffBase time.Duration
	backoffCap  time.Duration
	maxBody     int64
	order       UpstreamOrder
	requests    atomic.Uint64
}

// New builds a Transport from options. It needs at least one upstream with at
// least one key (WithUpstream or WithUpstreams).
func New(opts ...Option) (*Transport, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.apply(&c); err != nil {
			return nil, err
		}
	}
	var obs Observer
	switch len(c.observers) {
	case 0:
	case 1:
		obs = c.observers[0]
	default:
		obs = c.observers
	}
	pool, err := newPool(c.upstreams, c.pool, obs, c.pool.now())
	if err != nil {
		return nil, err
	}
	if c.store != nil {
		pool.loadStates(c.store, c.logger)
		pool.store = c.store
		pool.budgets, _ = c.store.(BudgetStore)
		if sub, ok := c.store.(StateSubscriber); ok {
			pool.grown = make(chan struct{}, 1)
			sub.Subscribe(pool.hear)
		}
	}
	base := c.base
	if base == nil {
		base = defaultBase()
	}
	return &Transport{
		pool: pool, base: base, policy: c.policy, observer: obs, log: c.logger, now: c.pool.now,
		maxAttempts: c.maxAttempts, maxWait: c.maxWait, retryTime: c.retryTime,
		backoffBase: c.backoffBase, backoffCap: c.backoffCap, maxBody: c.maxBody, order: c.order,
	}, nil
}

// defaultBase is http.DefaultTransport with room for many idle connections
// per host: its default of 2 makes every request beyond the second open
// (and TLS-handshake) a new connection when all keys share one upstream.
func defaultBase() http.RoundTripper {
	dt, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultTransport
	}
	t := dt.Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	return t
}

// UpstreamNames returns the names of the transport's upstreams, in priority
// order, as events, snapshots and ContextWithUpstreams know them.
func (t *Transport) UpstreamNames() []string {
	t.pool.mu.Lock()
	defer t.pool.mu.Unlock()
	names := make([]string, len(t.pool.ups))
	for i, u := range t.pool.ups {
		names[i] = u.Name
	}
	return names
}

// Pool returns the transport's pool, for snapshots and operator actions.
func (t *Transport) Pool() *Pool { return t.pool }

// Snapshot is shorthand for t.Pool().Snapshot().
func (t *Transport) Snapshot() []KeyInfo { return t.pool.Snapshot() }

// CloseIdleConnections closes the idle connections of the base RoundTripper.
func (t *Transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

type upstreamsOnlyKey struct{}

// ContextWithUpstreams returns a copy of ctx under which a request may use
// only the upstreams named (Upstream.Name); with no names it may use none. A
// proxy uses it to keep each client token to the upstreams that allow it.
func ContextWithUpstreams(ctx context.Context, names ...string) context.Context {
	if names == nil {
		names = []string{}
	}
	return context.WithValue(ctx, upstreamsOnlyKey{}, names)
}

type requestObserverKey struct{}

// ContextWithObserver returns a copy of ctx under which the attempts of a
// request are also sent to obs, after the transport's own observers
// (WithObserver): a proxy uses it to gather one request's attempts into one
// record. obs gets the request's AttemptEvents only; its rules are
// Observer's.
func ContextWithObserver(ctx context.Context, obs Observer) context.Context {
	return context.WithValue(ctx, requestObserverKey{}, obs)
}

// ErrBadPath refuses a request whose path has "." or ".." segments (also
// percent-encoded ones, once decoded): they would lead a pool key out of the
// upstream's base path.
var ErrBadPath = errors.New("keypool: request path has . or .. segments")

// hasDotSegment reports whether a decoded URL path has a "." or ".." segment.
func hasDotSegment(p string) bool {
	for p != "" {
		seg := p
		if i := strings.IndexByte(p, '/'); i >= 0 {
			seg, p = p[:i], p[i+1:]
		} else {
			p = ""
		}
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// ErrAttemptTimeout is the cause of an attempt that got no response headers
// (for a stream: no first event) within its upstream's timeout.
var ErrAttemptTimeout = errors.New("keypool: upstream did not answer in time")

// ExhaustedError is returned when every attempt of a request failed without
// any response to hand back (network errors, timeouts).
type ExhaustedError struct {
	Attempts int
	Err      error // the last attempt's error
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("keypool: %d attempts failed, last: %v", e.Attempts, e.Err)
}

func (e *ExhaustedError) Unwrap() error { return e.Err }

// Bounds on what the transport reads for itself.
const (
	errorBodyLimit = 64 << 10 // error body read to classify it and kept for the caller
	drainLimit     = 256 << 10
	firstEventMax  = 64 << 10
)

// requestBody is a request's body, read once and replayed per attempt.
type requestBody struct {
	buf      []byte
	complete bool // buf is the whole body
	orig     io.ReadCloser
	getBody  func() (io.ReadCloser, error)
	used     bool // the original body has been handed to an attempt
}

// replayable reports whether another attempt can send the body again.
func (b *requestBody) replayable() bool {
	return b == nil || b.complete || b.getBody != nil || !b.used
}

// reader returns the body for the next attempt.
func (b *requestBody) reader() (io.ReadCloser, error) {
	switch {
	case b.complete && len(b.buf) == 0:
		return http.NoBody, nil
	case b.complete:
		// net/http knows a NopCloser of a bytes.Reader as in-memory and
		// writes headers and body in one go; an unknown reader type costs
		// a flush and a second write per request.
		return io.NopCloser(bytes.NewReader(b.buf)), nil
	case !b.used:
		b.used = true
		return &prefixedBody{prefix: b.buf, rc: b.orig}, nil
	case b.getBody != nil:
		return b.getBody()
	}
	return nil, errors.New("keypool: request body cannot be replayed")
}

// prefixedBody serves prefix and then the rest of rc.
type prefixedBody struct {
	prefix []byte
	rc     io.ReadCloser
}

func (p *prefixedBody) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.rc.Read(b)
}

func (p *prefixedBody) Close() error { return p.rc.Close() }

// readBody reads req.Body up to the buffer limit into rb; nil when the
// request has no body. It always leaves the original body closed or owned by
// rb.
func (t *Transport) readBody(req *http.Request, rb *requestBody) (*requestBody, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	size := 512
	if req.ContentLength > 0 && req.ContentLength <= t.maxBody {
		size = int(req.ContentLength) + 1
	}
	buf := make([]byte, 0, size)
	limit := t.maxBody + 1
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		end := min(int64(cap(buf)), limit)
		n, err := req.Body.Read(buf[len(buf):end])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			req.Body.Close()
			*rb = requestBody{buf: buf, complete: true}
			return rb, nil
		}
		if err != nil {
			req.Body.Close()
			return nil, fmt.Errorf("keypool: reading the request body: %w", err)
		}
	}
	*rb = requestBody{buf: buf, orig: req.Body, getBody: req.GetBody}
	return rb, nil
}

// RoundTrip sends req with the best key of the pool, failing over as the
// policy says. It never modifies req and always closes its body.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil {
		closeRequestBody(req)
		return nil, errors.New("keypool: request has no URL")
	}
	if hasDotSegment(req.URL.Path) {
		// /v1/%2e%2e/x would climb out of the upstream's base path with a
		// pool key attached.
		closeRequestBody(req)
		return nil, ErrBadPath
	}
	// One allocation holds the request's state, its body, the answer being
	// classified and the body wrapper handed back.
	r := &roundTrip{t: t, req: req}
	body, err := t.readBody(req, &r.rb)
	if err != nil {
		return nil, err
	}
	r.body, r.start, r.number = body, t.now(), t.requests.Add(1)
	if body != nil {
		if err := r.readModel(); err != nil {
			if !body.complete && !body.used {
				body.orig.Close()
			}
			return nil, err
		}
	}
	r.pick.model, r.pick.stream = r.model, r.stream
	ctx := req.Context()
	if only, ok := ctx.Value(upstreamsOnlyKey{}).([]string); ok {
		r.pick.only = only
	}
	if obs, ok := ctx.Value(requestObserverKey{}).(Observer); ok {
		r.obs = obs
	}
	if r.model == "" {
		r.model = req.URL.Path
		r.pick.model, r.pick.bucket = r.model, routeOf(r.model)
	}
	if r.pick.unreadable && !t.pool.anyWithoutLists(r.pick.only) {
		if body != nil && !body.complete && !body.used {
			body.orig.Close()
		}
		return nil, ErrUnreadableModel
	}
	r.pick.tried = r.triedBuf[:0]
	r.pick.random = t.order == OrderRandom
	resp, err := r.run()
	if err != nil && body != nil && !body.complete && !body.used {
		body.orig.Close()
	}
	return resp, err
}

// shuffled returns 0…n-1 in random order, in buf when it has room.
func shuffled(buf []int, n int) []int {
	for i := range n {
		buf = append(buf, i)
	}
	rand.Shuffle(n, func(i, j int) { buf[i], buf[j] = buf[j], buf[i] })
	return buf
}

// Bounds on a request's model name: real ones are under 100 bytes. A longer
// one, or one with control characters, is refused before it reaches the
// pool, where every name costs a bucket.
const maxModelName = 256

// ErrBadModel refuses a request whose JSON model is empty, longer than 256
// bytes, not valid UTF-8 or holds control characters: no upstream serves
// such a model, and the pool would have to remember it.
var ErrBadModel = errors.New("keypool: the request's model name is invalid")

// ErrUnreadableModel refuses a request whose model cannot be read (a body
// that is not a JSON object, or one compressed in a coding keypool cannot
// decode) when every upstream it may use has Allow or Deny lists: the lists
// could not be applied to it.
var ErrUnreadableModel = errors.New("keypool: the request's model cannot be read, and every upstream it may use has allow or deny lists")

// readModel reads the model and stream flag of r's body, decoding the body
// first when it is compressed, so that allow and deny lists see what the
// upstream will. A body whose model cannot be read is marked unreadable: it
// goes only to upstreams without model lists.
func (r *roundTrip) readModel() error {
	body := r.body
	coding, known := contentCoding(r.req.Header)
	switch {
	case coding != "" && known && body.complete && len(body.buf) > 0:
		plain, err := decodeRequestBody(body.buf, coding, r.t.maxBody)
		if err != nil {
			return err
		}
		body.buf, r.decoded = plain, true
	case coding != "":
		r.pick.unreadable = true // opaque bytes: nothing to read a model from
		return nil
	}
	model, stream, present, ok := scanRequest(body.buf)
	switch {
	case present && !validModel(model):
		return ErrBadModel
	case !ok && len(bytes.TrimSpace(body.buf)) > 0 && !isMultipart(r.req.Header):
		r.pick.unreadable = true
	}
	r.model, r.stream = model, stream
	return nil
}

// validModel reports whether a model name can be real: not empty, at most
// maxModelName bytes of valid UTF-8 without control characters.
func validModel(m string) bool {
	if m == "" || len(m) > maxModelName || !utf8.ValidString(m) {
		return false
	}
	for _, c := range m {
		if c < 0x20 || c == 0x7f || c == utf8.RuneError || 0x80 <= c && c < 0xa0 {
			return false
		}
	}
	return true
}

func isMultipart(h http.Header) bool {
	return strings.HasPrefix(strings.ToLower(headerValue(h, "Content-Type")), "multipart/")
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// roundTrip is the state of one RoundTrip.
type roundTrip struct {
	t        *Transport
	req      *http.Request
	body     *requestBody
	model    string
	stream   bool
	start    time.Time
	number   uint64
	pick     pick
	triedBuf [maxTried]*key
	decoded  bool // the body was compressed and is sent decoded
	backoff  retry.Backoff
	last     *lastAnswer
	lastErr  error
	rb       requestBody // body's storage
	answer   Answer      // the current attempt's
	metered  meteredBody // the body handed back on success
	obs      Observer    // the request's own (ContextWithObserver), or nil
}

// lastAnswer keeps a failed attempt's answer, so that it can be handed back
// when no later attempt does better.
type lastAnswer struct {
	status  int
	header  http.Header
	body    []byte
	outcome Outcome
	err     *APIError
	k       *key
}

func (r *roundTrip) run() (*http.Response, error) {
	t := r.t
	ctx := r.req.Context()
	for attempt := 1; ; attempt++ {
		deadline := r.start.Add(t.maxWait) // the request's wait budget, over all its picks
		if end := r.start.Add(t.retryTime); end.Before(deadline) {
			deadline = end
		}
		l, err := t.pool.acquireWait(ctx, &r.pick, deadline, t.now)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			var noKey *NoKeyError
			errors.As(err, &noKey)
			return r.giveUp(attempt-1, err, noKey)
		}
		resp, a, out := r.attempt(ctx, l, attempt)
		switch {
		case out == OutcomeSuccess:
			return resp, nil
		case out == OutcomeCancelled:
			if resp != nil {
				resp.Body.Close()
			}
			return nil, context.Cause(ctx)
		case !out.Retryable():
			if resp == nil {
				return r.giveUp(attempt, a.Err, nil)
			}
			return r.final(resp, a, out, l.k), nil
		}
		// Retryable: decide whether another attempt may go.
		r.pick.tried = append(r.pick.tried, l.k)
		if out == OutcomeServerError {
			// Its upstream is tried last, and a key that failed quickly
			// (a 5xx, a refused connection; not a timeout, which would
			// cost the caller the whole timeout again) may be tried again
			// when nothing else is left, after the backoff below.
			if !errors.Is(a.Err, ErrAttemptTimeout) {
				r.pick.transient = append(r.pick.transient, l.k)
			}
			if l.k.up.index < 64 {
				r.pick.avoid |= 1 << l.k.up.index
			}
		}
		last := attempt >= t.maxAttempts || !r.body.replayable() || t.now().Sub(r.start) >= t.retryTime
		var delay time.Duration
		if !last && out == OutcomeServerError {
			if r.backoff == nil {
				r.backoff = retry.WithCappedDuration(t.backoffCap, retry.WithJitterPercent(20, retry.NewExponential(t.backoffBase)))
			}
			delay, _ = r.backoff.Next()
			if ra := a.Limits.RetryAfter; ra > delay {
				delay = ra
			}
			if t.now().Add(delay).Sub(r.start) > t.retryTime {
				last = true
			}
		}
		if last {
			if resp != nil {
				return r.final(resp, a, out, l.k), nil
			}
			return r.giveUp(attempt, a.Err, nil)
		}
		if resp != nil {
			r.keep(resp, a, out, l.k)
		} else {
			r.lastErr = a.Err
		}
		if delay > 0 {
			if err := sleep(ctx, delay); err != nil {
				return nil, err
			}
		}
	}
}

// keep drains and closes a failed response, keeping its error body.
func (r *roundTrip) keep(resp *http.Response, a *Answer, out Outcome, k *key) {
	stop := time.AfterFunc(time.Second, func() { resp.Body.Close() })
	defer stop.Stop()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	resp.Body.Close()
	r.last = &lastAnswer{status: resp.StatusCode, header: resp.Header, body: b, outcome: out, err: a.Error, k: k}
}

// giveUp ends a request that found no more keys: the last upstream answer if
// there was one, else a typed error.
func (r *roundTrip) giveUp(attempts int, err error, noKey *NoKeyError) (*http.Response, error) {
	if r.last == nil {
		if noKey != nil && r.lastErr == nil {
			return r.refusal(noKey), nil
		}
		if attempts == 0 {
			return nil, err
		}
		if r.lastErr != nil {
			err = r.lastErr
		}
		return nil, &ExhaustedError{Attempts: attempts, Err: err}
	}
	var freeAt time.Time
	if noKey != nil {
		freeAt = noKey.FreeAt
	}
	last := r.last
	resp := &http.Response{
		Status:        fmt.Sprintf("%d %s", last.status, http.StatusText(last.status)),
		StatusCode:    last.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        last.header,
		Body:          io.NopCloser(bytes.NewReader(last.body)),
		ContentLength: int64(len(last.body)),
		Request:       r.req,
	}
	resp.Header.Del("Content-Length")
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Transfer-Encoding")
	if last.k.up.Auth != AuthCaller {
		scrubAnswer(resp, last.k)
		if status, body, ok := poolError(last.outcome, last.status, last.err, r.model); ok {
			r.replace(resp, status, body)
		} else {
			b := scrubBytes(last.body, last.k)
			resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}
	}
	return markFinal(resp, freeAt, r.t.now()), nil
}

// markFinal tells SDKs in front of the transport not to retry an answer the
// pool has already retried, and when a key frees up (Retry-After and
// retry-after-ms), whenever that is known: the caller may come back then.
func markFinal(resp *http.Response, freeAt, now time.Time) *http.Response {
	resp.Header.Set(hShouldRetry, "false")
	if d := freeAt.Sub(now); !freeAt.IsZero() && d > 0 {
		setRetryAfter(resp.Header, d)
	}
	return resp
}

// setRetryAfter says when to come back, in both forms the SDKs read.
func setRetryAfter(h http.Header, d time.Duration) {
	h.Set(hRetryAfter, strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))))
	h.Set(hRetryAfterMs, strconv.FormatInt(max(d.Milliseconds(), 1), 10))
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// attempt sends one attempt with e's key. It returns the response to hand
// back (success, or an answer not worth retrying), or for a retryable outcome
// the response still open (nil for a transport error); and the answer and its
// outcome. The key is observed and, unless the response body is handed back
// to be read, released.
func (r *roundTrip) attempt(ctx context.Context, l lease, n int) (*http.Response, *Answer, Outcome) {
	t, k := r.t, l.k
	start := t.now()
	ev := AttemptEvent{Request: r.number, Attempt: n, Key: k.cred.id, Upstream: k.up.Name,
		Model: r.pick.bucketName(), Stream: r.stream, Start: start, reqObs: r.obs}
	a := &r.answer
	*a = Answer{Clone: k.cred.org != "" && !k.cred.ServiceAccount(), Limits: noLimits}

	actx, cancel := context.WithCancelCause(ctx)
	timeout := k.up.Timeout
	if r.stream {
		timeout = k.up.StreamTimeout
	}
	timer := time.AfterFunc(timeout, func() { cancel(ErrAttemptTimeout) })

	out, err := r.outgoing(actx, l)
	var resp *http.Response
	if err == nil {
		if ad := adapterOf(k.up.Type); ad != nil {
			resp, err = ad.send(t.base, out, r.adaptInfo(k))
		} else {
			resp, err = t.base.RoundTrip(out)
		}
	}
	if err == nil {
		decodeResponse(resp)
	}
	var prefix []byte
	switch {
	case err != nil || !r.stream || resp.StatusCode/100 != 2:
	case isEventStream(resp.Header):
		prefix, a.Error, err = readFirstEvent(resp.Body)
	default:
		// A stream asked for and answered otherwise: its first bytes
		// must still come within the stream timeout.
		prefix, err = readFirstBytes(resp.Body)
	}
	if err != nil && resp != nil {
		resp.Body.Close()
		resp = nil
	}
	var errBody []byte
	if err == nil && resp.StatusCode/100 != 2 {
		// Read the error body while the attempt's limit still holds: an
		// upstream that sends headers and then stalls must not hang us.
		errBody, err = io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
		if err != nil {
			resp.Body.Close()
			resp = nil
		}
	}
	if !timer.Stop() && err == nil {
		// The limit struck as the answer arrived: its body is cut off.
		resp.Body.Close()
		resp, err = nil, ErrAttemptTimeout
	}
	ev.TimeToHeaders = t.now().Sub(start)
	now := t.now()
	switch {
	case ctx.Err() != nil:
		a.Cancelled = true
	case err != nil:
		if context.Cause(actx) == ErrAttemptTimeout {
			err = fmt.Errorf("%w (%s)", ErrAttemptTimeout, timeout)
		}
		a.Err = err
	default:
		a.Status, a.Header = resp.StatusCode, resp.Header
		a.Limits = responseLimits(resp.Header, now)
		if resp.StatusCode/100 != 2 {
			prefix = errBody
			a.Error = ParseAPIError(resp.StatusCode, prefix)
		}
	}
	outcome := t.policy.Classify(a)
	switch {
	case a.Cancelled:
		outcome = OutcomeCancelled
	case outcome == OutcomeCancelled:
		outcome = OutcomeServerError // only the caller's context cancels
	case resp == nil && outcome == OutcomeSuccess:
		outcome = OutcomeServerError // no answer is no success, whatever a policy says
	}
	ev.Status, ev.Outcome, ev.Err = a.Status, outcome, a.Err

	success := outcome == OutcomeSuccess
	t.pool.answered(l, a, outcome, r.pick.bucketName(), now)

	if resp == nil {
		cancel(nil)
		ev.Duration = now.Sub(start)
		t.emit(ev)
		return nil, a, outcome
	}
	if prefix != nil {
		resp.Body = &prefixedBody{prefix: prefix, rc: resp.Body}
	}
	resp.Request = r.req
	if !success {
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
		ev.Final = !outcome.Retryable() && outcome != OutcomeCancelled
		ev.Duration = now.Sub(start)
		t.emit(ev)
		return resp, a, outcome
	}
	ev.Final = true
	resp.Body = r.metered.start(t, l, r.pick.bucketName(), resp.Body, ev, actx, cancel, r.stream || isEventStream(resp.Header))
	return resp, a, outcome
}

// noLimits is an answer's rate limits before it is read.
var noLimits = RateLimits{
	LimitRequests: Unknown, RemainingRequests: Unknown, ResetRequests: Unknown,
	LimitTokens: Unknown, RemainingTokens: Unknown, ResetTokens: Unknown,
	LimitProjectTokens: Unknown, RemainingProjectTokens: Unknown, ResetProjectTokens: Unknown,
	RetryAfter: Unknown,
}

func (t *Transport) emit(ev AttemptEvent) {
	if t.log != nil && !ev.Final {
		t.log.LogAttrs(context.Background(), slog.LevelDebug, "keypool: failing over",
			slog.String("key", string(ev.Key)), slog.String("upstream", ev.Upstream),
			slog.String("model", ev.Model), slog.Int("status", ev.Status),
			slog.String("outcome", ev.Outcome.String()), slog.Int("attempt", ev.Attempt))
	}
	if t.observer != nil {
		t.observer.Attempt(ev)
	}
	if ev.reqObs != nil {
		ev.reqObs.Attempt(ev)
	}
}

// outgoing builds one attempt's request: req moved onto e's upstream with e's
// credentials. The caller's request is not changed.
func (r *roundTrip) outgoing(ctx context.Context, l lease) (*http.Request, error) {
	k := l.k
	// A shallow copy with a header map of its own: the caller's request is
	// not changed, and its header values are shared, never appended to
	// (req.Clone would copy every value and the URL for nothing).
	out := r.req.WithContext(ctx)
	h := make(http.Header, len(r.req.Header)+2)
	for name, v := range r.req.Header {
		h[name] = v
	}
	out.Header = h
	u := *k.up.base
	u.Path = joinPath(u.Path, r.req.URL.Path)
	u.RawPath = ""
	u.RawQuery = r.req.URL.RawQuery
	u.Fragment = ""
	out.URL = &u
	out.Host = ""
	out.RequestURI = ""
	setKeyHeaders(h, k)
	// net/http's Transport asks for gzip and decodes it when the request
	// does not ask for an encoding itself: the pool reads plain bytes.
	delete(h, "Accept-Encoding")
	if r.decoded {
		delete(h, "Content-Encoding")
	}
	if r.body != nil {
		b, err := r.body.reader()
		if err != nil {
			return nil, err
		}
		out.Body = b
		if r.body.complete {
			out.ContentLength = int64(len(r.body.buf))
			out.GetBody = func() (io.ReadCloser, error) { return r.body.reader() }
		} else {
			out.GetBody = r.body.getBody
		}
	}
	return out, nil
}

// routeOf names the rate-limit bucket of a request without a JSON model by
// its route: the path up to the first segment holding a digit (IDs do), so
// /v1/files/file-abc123/content counts as /v1/files and GETs by ID cannot
// crowd out the models' buckets.
func routeOf(path string) string {
	end := len(path)
	for i := 1; i < len(path); {
		j := strings.IndexByte(path[i:], '/')
		seg := path[i:]
		if j >= 0 {
			seg = path[i : i+j]
		}
		if i > 1 && strings.ContainsAny(seg, "0123456789") {
			end = i - 1
			break
		}
		if j < 0 {
			break
		}
		i += j + 1
	}
	return path[:end]
}

// joinPath appends a request path, less its /v1 prefix, to the upstream's
// base path: /v1/chat/completions on https://host/openai/v1 goes to
// /openai/v1/chat/completions.
func joinPath(base, p string) string {
	if p == "/v1" {
		p = ""
	} else if strings.HasPrefix(p, "/v1/") {
		p = p[3:]
	}
	return base + p
}

// adaptInfo is what an adapter knows of r's attempt with k.
func (r *roundTrip) adaptInfo(k *key) *adaptInfo {
	x := &adaptInfo{up: &k.up.Upstream, model: r.model, stream: r.stream, secret: k.cred.secret}
	if r.body != nil && r.body.complete {
		x.body = r.body.buf
	}
	return x
}

// auth returns the key's Authorization header value, built with the pool.
func (k *key) auth() []string { return k.authz() }

// bearer builds c's Authorization header value, "Bearer sk-…", once, so
// that a request costs no allocation for it, and returns it behind a func:
// fmt prints a func as an address at any depth and with any verb, so %v of
// the pool's key record, or of anything holding one, cannot show the
// secret (a []string field would print its text). The slice is shared by
// every request the key sends and must never be written to; http.Header's
// Set and Add replace or grow a value slice rather than write into it.
func bearer(c Key) func() []string {
	v := []string{"Bearer " + c.secret()}
	return func() []string { return v }
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(headerValue(h, "Content-Type"), "text/event-stream")
}

// readFirstBytes reads the first bytes of an answer (up to 4 KiB, whatever
// one read brings); a body that ends before any byte is an error.
func readFirstBytes(body io.Reader) ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		n, err := body.Read(buf)
		switch {
		case n > 0:
			return buf[:n], nil
		case err == io.EOF:
			return nil, errors.New("keypool: stream ended before its first byte")
		case err != nil:
			return nil, err
		}
	}
}

// cancelOnClose ends an attempt's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (c *cancelOnClose) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if err == io.EOF {
		c.cancel(nil)
	}
	return n, err
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel(nil)
	return err
}

// meteredBody passes a successful answer's body through byte for byte, counts
// its usage at the end, and releases the key's in-flight slot on EOF or Close,
// whichever comes first. An upstream that sends nothing for the idle timeout
// is cut off: the key counts a failure, a stream ends with an error event,
// any other body with ErrIdleTimeout.
type meteredBody struct {
	rc     io.ReadCloser
	t      *Transport
	l      lease
	model  string // the request's bucket name, for usage
	ev     AttemptEvent
	ctx    context.Context // the attempt's
	cancel context.CancelCauseFunc
	sse    bool
	idle   time.Duration
	timer  *time.Timer // cancels the attempt after idle without a byte; nil without a limit
	mu     sync.Mutex
	meter  *usageMeter // nil once finished
	tail   []byte      // the error event a cut stream ends with, being read
	done   atomic.Bool
}

// ErrIdleTimeout ends an answer whose upstream sent nothing for its idle
// timeout (Upstream.IdleTimeout) after it started.
var ErrIdleTimeout = errors.New("keypool: upstream sent nothing for too long")

var meterPool = sync.Pool{New: func() any { return new(usageMeter) }}

// start readies b to pass rc through for the attempt ev on e.
func (b *meteredBody) start(t *Transport, l lease, model string, rc io.ReadCloser, ev AttemptEvent,
	ctx context.Context, cancel context.CancelCauseFunc, sse bool) *meteredBody {
	m := meterPool.Get().(*usageMeter)
	m.reset(sse)
	b.rc, b.t, b.l, b.model, b.ev, b.ctx, b.cancel, b.meter, b.sse = rc, t, l, model, ev, ctx, cancel, m, sse
	if b.idle = l.k.up.IdleTimeout; b.idle > 0 {
		b.timer = time.AfterFunc(b.idle, func() { cancel(ErrIdleTimeout) })
	}
	return b
}

func (b *meteredBody) Read(p []byte) (int, error) {
	if b.tail != nil {
		n := copy(p, b.tail)
		if b.tail = b.tail[n:]; len(b.tail) == 0 {
			return n, io.EOF
		}
		return n, nil
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		if b.timer != nil {
			b.timer.Reset(b.idle)
		}
		b.mu.Lock()
		if b.meter != nil {
			b.meter.observe(p[:n])
		}
		b.mu.Unlock()
	}
	switch {
	case err == io.EOF:
		b.finish(nil)
	case err != nil && context.Cause(b.ctx) == ErrIdleTimeout:
		b.finish(ErrIdleTimeout)
		if b.sse {
			// A clean end: the client's SSE reader gets an error event
			// (after a blank line that ends any event cut in half).
			b.tail = []byte("\n\ndata: " + string(errorJSON(fmt.Sprintf(
				"keypool: the upstream sent nothing for %s, so the stream was cut off.", b.idle),
				"server_error", "upstream_idle")) + "\n")
			return n, nil
		}
		return n, fmt.Errorf("%w (%s)", ErrIdleTimeout, b.idle)
	}
	return n, err
}

func (b *meteredBody) Close() error {
	err := b.rc.Close()
	b.finish(nil)
	return err
}

// finish ends the attempt once: usage counted, the key released, the event
// sent. failed, when not nil, is why the answer was cut off: the key counts
// a failure.
func (b *meteredBody) finish(failed error) {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	b.mu.Lock()
	usage, _ := b.meter.usage()
	meterPool.Put(b.meter)
	b.meter = nil
	b.mu.Unlock()

	t := b.t
	now := t.now()
	t.pool.finished(b.l, usage, failed, b.model, now)
	b.cancel(nil)

	b.ev.Duration = now.Sub(b.ev.Start)
	b.ev.Usage = usage
	if failed != nil {
		b.ev.Outcome, b.ev.Err = OutcomeServerError, failed
	}
	t.emit(b.ev)
}

// redactURL shows a URL without user info or query, for error messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}
