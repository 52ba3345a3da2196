package records

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/keypool/keypool"
)

// ClientID is the ID records and logs show for a client token: "ct_" and 16
// hex digits of the token's SHA-256. The token cannot be had back from it.
func ClientID(token string) string {
	sum := sha256.Sum256([]byte("keypool client token\x00" + token))
	return "ct_" + hex.EncodeToString(sum[:8])
}

// Limits, in bytes, of what a record keeps of the strings a client chooses:
// Pending clips a longer one at a rune boundary and ends it with "…", so a
// clipped string is at most this long and still valid UTF-8 when it was.
// Without them one request could put a path of hundreds of kilobytes into
// the queue and the store.
const (
	// MaxPath bounds Record.Path, the request's URL path.
	MaxPath = 1 << 10
	// MaxModel bounds Record.Model, the model named in the request body.
	MaxModel = 256
	// MaxMethod bounds Record.Method. Real methods are far shorter.
	MaxMethod = 16
	// MaxIP bounds Record.IP, the client's address as the server saw it.
	MaxIP = 64
)

// ellipsis marks where clip cut a string.
const ellipsis = "…"

// clip returns s if it is at most limit bytes long (limit > len(ellipsis));
// otherwise its start, cut before the rune that would cross limit, followed by
// ellipsis. The result is a new string: it does not keep s's bytes alive.
func clip(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit - len(ellipsis)
	// Back up to the start of the rune cut falls in; a valid rune has at
	// most UTFMax-1 continuation bytes, and invalid bytes need no care.
	for i := 1; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return s[:cut] + ellipsis
}

// maxAttempts bounds the attempts one record keeps; the transport's own
// limit is far lower, this only guards a custom one.
const maxAttempts = 32

// Pending gathers one request's record while the request runs: the proxy
// starts one with Reset, hands it to the transport as the request's observer
// (keypool.ContextWithObserver), and calls Finish once the response is
// written. It is safe for simultaneous use by multiple goroutines.
type Pending struct {
	mu   sync.Mutex
	rec  Record
	last keypool.Outcome // the last attempt's
	buf  [2]Attempt      // room for the attempts of most requests
}

// Reset starts p as the record of a request that arrived at t. The zero
// Pending is ready for Reset; a proxy keeps one in its per-request value.
// The ip, method and path kept are clipped to MaxIP, MaxMethod and MaxPath.
func (p *Pending) Reset(t time.Time, client, ip, method, path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rec, p.last = Record{Time: t, Client: client, IP: clip(ip, MaxIP), Method: clip(method, MaxMethod),
		Path: clip(path, MaxPath), Attempts: p.buf[:0]}, 0
}

// Attempt takes one attempt of the request (keypool.Observer). The model
// kept is clipped to MaxModel.
func (p *Pending) Attempt(e keypool.AttemptEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &p.rec
	if len(r.Attempts) < maxAttempts {
		r.Attempts = append(r.Attempts, Attempt{Key: string(e.Key), Upstream: e.Upstream, Outcome: e.Outcome.String(), Status: e.Status})
	}
	r.Model, r.Stream, r.Upstream, r.Key = clip(e.Model, MaxModel), e.Stream, e.Upstream, string(e.Key)
	p.last = e.Outcome
	if e.Final {
		r.InputTokens, r.OutputTokens = e.Usage.InputTokens, e.Usage.OutputTokens
		r.CachedTokens, r.ReasoningTokens = e.Usage.CachedTokens, e.Usage.ReasoningTokens
	}
}

// StateChange ignores key state changes (keypool.Observer).
func (p *Pending) StateChange(keypool.StateEvent) {}

// Checked ignores check results (keypool.Observer).
func (p *Pending) Checked(keypool.CheckResult) {}

// SetClient sets the client's ID (ClientID of its token).
func (p *Pending) SetClient(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rec.Client = id
}

// SetModel sets the model of a request that made no attempt (the proxy may
// know it from the request); an attempt's model takes precedence. The model
// kept is clipped to MaxModel.
func (p *Pending) SetModel(model string, stream bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.rec.Attempts) == 0 {
		p.rec.Model, p.rec.Stream = clip(model, MaxModel), stream
	}
}

// Outcome is how the proxy ended a request, for Finish.
type Outcome struct {
	Status   int           // sent to the client; 0 if none was
	TTFB     time.Duration // until the status line was sent
	Duration time.Duration // until the response was written
	// Error is the proxy's own error class ("unauthorized", "too_large",
	// "no_key", "cancelled", "proxy_error"), or "" to take the last
	// attempt's outcome when it failed.
	Error                     string
	RequestBody, ResponseBody string
}

// Finish completes the record. The record shares nothing with p, which may
// be Reset for another request.
func (p *Pending) Finish(o Outcome) Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rec
	if len(r.Attempts) == 0 {
		r.Attempts = nil
	} else {
		r.Attempts = append(make([]Attempt, 0, len(r.Attempts)), r.Attempts...)
	}
	r.Status, r.TTFB, r.Duration = o.Status, o.TTFB, o.Duration
	r.RequestBody, r.ResponseBody = o.RequestBody, o.ResponseBody
	r.Error = o.Error
	if r.Error == "" && len(r.Attempts) > 0 && p.last != keypool.OutcomeSuccess {
		r.Error = p.last.String()
	}
	if r.Error == "" && o.Status >= 400 {
		r.Error = "status_" + strconv.Itoa(o.Status)
	}
	return r
}
