package fakeopenai

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	paidRPM, paidTPM   = 3000, 150000
	trialRPD, trialTPM = 200, 40000
	day                = 24 * time.Hour

	rateLimitsURL = "Visit https://platform.openai.com/account/rate-limits to learn more."
	trialSuffix   = " You can increase your rate limit by adding a payment method to your account at https://platform.openai.com/account/billing."
)

// bucketID names one pair of buckets: an organization's (project "") or a
// project's token bucket in it, per model family when the key has PerModel.
// Keys do not appear: every key of an org draws on the same buckets.
type bucketID struct{ org, project, model string }

// limits is the pair of buckets of one org (and model family).
type limits struct {
	requests, tokens bucket
	trial            bool
}

// A bucket holds up to capacity units and regains capacity units per
// period. It starts full. It refills continuously, unless fixed: then it
// counts in fixed windows of period, the first starting when the bucket was
// created; nothing frees before a window's end, and each new window starts
// full.
type bucket struct {
	capacity float64
	period   time.Duration
	fixed    bool
	level    float64
	at       time.Time // the time level is computed for
	start    time.Time // fixed: the current window's start
}

func newBucket(capacity int, period time.Duration, now time.Time) bucket {
	return bucket{capacity: float64(capacity), period: period, level: float64(capacity), at: now, start: now}
}

// advance brings b up to now. A clock that goes backwards changes nothing.
func (b *bucket) advance(now time.Time) {
	if !now.After(b.at) {
		return
	}
	if b.fixed {
		if n := now.Sub(b.start) / b.period; n > 0 {
			b.start = b.start.Add(n * b.period)
			b.level = b.capacity
		}
	} else {
		b.level = min(b.capacity, b.level+b.perSecond()*now.Sub(b.at).Seconds())
	}
	b.at = now
}

func (b *bucket) perSecond() float64 { return b.capacity / b.period.Seconds() }

// windowLeft is the time from b's last advance to the end of its window.
func (b *bucket) windowLeft() time.Duration { return b.start.Add(b.period).Sub(b.at) }

// until is how long until b holds n (at most its capacity) units; 0 if it
// already does. A fixed bucket holds more only once its window ends.
func (b *bucket) until(n float64) time.Duration {
	switch {
	case b.level >= n:
		return 0
	case b.fixed:
		return b.windowLeft()
	}
	return time.Duration((n - b.level) / b.perSecond() * float64(time.Second))
}

// reset is what an x-ratelimit-reset-* header says: the time until b is
// full again, or for a fixed bucket the time to its window's end, whatever
// it holds.
func (b *bucket) reset() time.Duration {
	if b.fixed {
		return b.windowLeft()
	}
	return b.until(b.capacity)
}

// remaining is what the x-ratelimit-remaining-* headers say: whole units left.
func (b *bucket) remaining() int { return int(math.Floor(b.level + 1e-9)) }

// used is what a 429 message says was used: whole units spent.
func (b *bucket) used() int { return int(b.capacity) - b.remaining() }

// requestsUnit names a requests bucket's limit in 429 messages.
func (b *bucket) requestsUnit() string {
	switch b.period {
	case time.Minute:
		return "requests per min (RPM)"
	case day:
		return "requests per day (RPD)"
	}
	return "requests per " + formatDuration(b.period)
}

// charge is what one request draws on: its org's buckets and, for a key
// with a project limit, its project's token bucket.
type charge struct {
	*limits
	org       string  // the org's ID, for messages
	project   *bucket // nil = no project limit
	projectID string
}

// chargeFor returns what a request of ks in org for model draws on, the
// buckets created full and brought up to now. An org's buckets are sized
// by the first request that needs them: the org's RPM, TPM and Window when
// set, else its key's (Key.RPM, TPM, Window, Trial). It requires Server.mu
// held.
func (s *Server) chargeFor(ks *keyState, org Org, model string, now time.Time) *charge {
	k := &ks.key
	id := bucketID{org: org.ID}
	if k.PerModel {
		id.model = modelFamily(model)
	}
	l := s.buckets[id]
	if l == nil {
		rpm, period := firstPositive(org.RPM, k.RPM, paidRPM), time.Minute
		tpm := firstPositive(org.TPM, k.TPM, paidTPM)
		if k.Trial {
			rpm, period = firstPositive(org.RPM, k.RPM, trialRPD), day
			tpm = firstPositive(org.TPM, k.TPM, trialTPM)
		}
		l = &limits{requests: newBucket(rpm, period, now), tokens: newBucket(tpm, time.Minute, now), trial: k.Trial}
		if w := firstPositive(org.Window, k.Window); w > 0 {
			l.requests.period, l.requests.fixed = w, true
		}
		s.buckets[id] = l
	}
	l.requests.advance(now)
	l.tokens.advance(now)
	c := &charge{limits: l, org: org.ID}
	if k.Project != "" && k.ProjectTPM > 0 {
		id.project = k.Project
		p := s.projects[id]
		if p == nil {
			b := newBucket(k.ProjectTPM, time.Minute, now)
			p = &b
			s.projects[id] = p
		}
		p.advance(now)
		c.project, c.projectID = p, k.Project
	}
	return c
}

// take charges one request of tokens tokens, or returns the 429 that
// refuses it (charging nothing).
func (c *charge) take(model string, tokens int) *apiError {
	req, tok, proj := &c.requests, &c.tokens, c.project
	cost := float64(tokens)
	switch {
	case cost > tok.capacity:
		return c.tooLarge(model, "organization "+c.org, tok, tokens)
	case proj != nil && cost > proj.capacity:
		return c.tooLarge(model, "project "+c.projectID, proj, tokens)
	case req.level < 1:
		wait := req.until(1)
		msg := fmt.Sprintf("Rate limit reached for %s in organization %s on %s: Limit %d, Used %d, Requested 1. Please try again in %s. %s",
			model, c.org, req.requestsUnit(), int(req.capacity), req.used(), formatDuration(wait), rateLimitsURL)
		return c.rateLimitError("requests", msg, wait)
	case tok.level < cost:
		return c.tokensLimited(model, "organization "+c.org, tok, tokens)
	case proj != nil && proj.level < cost:
		return c.tokensLimited(model, "project "+c.projectID, proj, tokens)
	}
	req.level--
	tok.level -= cost
	if proj != nil {
		proj.level -= cost
	}
	return nil
}

// tooLarge refuses a request that costs more tokens than the bucket of
// scope ("organization org-…" or "project proj_…") ever holds: no wait helps.
func (c *charge) tooLarge(model, scope string, tok *bucket, tokens int) *apiError {
	msg := fmt.Sprintf("Request too large for %s in %s on tokens per min (TPM): Limit %d, Requested %d. The input or output tokens must be reduced in order to run successfully. %s",
		model, scope, int(tok.capacity), tokens, rateLimitsURL)
	return c.rateLimitError("tokens", msg, 0)
}

// tokensLimited refuses a request the token bucket of scope cannot hold yet.
func (c *charge) tokensLimited(model, scope string, tok *bucket, tokens int) *apiError {
	wait := tok.until(float64(tokens))
	msg := fmt.Sprintf("Rate limit reached for %s in %s on tokens per min (TPM): Limit %d, Used %d, Requested %d. Please try again in %s. %s",
		model, scope, int(tok.capacity), tok.used(), tokens, formatDuration(wait), rateLimitsURL)
	return c.rateLimitError("tokens", msg, wait)
}

// refuseIfEmpty is take's 429 for an empty bucket, for a request that costs
// no tokens of its own (the refused probe).
func (c *charge) refuseIfEmpty(model string) *apiError {
	if c.requests.level >= 1 && c.tokens.level >= 1 && (c.project == nil || c.project.level >= 1) {
		return nil
	}
	return c.take(model, 1)
}

func (c *charge) rateLimitError(typ, msg string, wait time.Duration) *apiError {
	if c.trial {
		msg += trialSuffix
	}
	return &apiError{status: http.StatusTooManyRequests, retryAfter: wait, Message: msg, Type: typ, Code: "rate_limit_exceeded"}
}

// rateHeaders is what the x-ratelimit-* headers of one answer say.
type rateHeaders struct {
	limitRequests, remainingRequests int
	resetRequests                    time.Duration
	limitTokens, remainingTokens     int
	resetTokens                      time.Duration

	project                                    bool // the project-tokens headers are sent
	limitProjectTokens, remainingProjectTokens int
	resetProjectTokens                         time.Duration
}

func (c *charge) headers() *rateHeaders {
	h := &rateHeaders{
		limitRequests: int(c.requests.capacity), remainingRequests: c.requests.remaining(),
		resetRequests: c.requests.reset(),
		limitTokens:   int(c.tokens.capacity), remainingTokens: c.tokens.remaining(),
		resetTokens: c.tokens.reset(),
	}
	if p := c.project; p != nil {
		h.project = true
		h.limitProjectTokens, h.remainingProjectTokens, h.resetProjectTokens = int(p.capacity), p.remaining(), p.reset()
	}
	return h
}

func (h *rateHeaders) set(hdr http.Header) {
	hdr.Set("x-ratelimit-limit-requests", strconv.Itoa(h.limitRequests))
	hdr.Set("x-ratelimit-remaining-requests", strconv.Itoa(h.remainingRequests))
	hdr.Set("x-ratelimit-reset-requests", formatDuration(h.resetRequests))
	hdr.Set("x-ratelimit-limit-tokens", strconv.Itoa(h.limitTokens))
	hdr.Set("x-ratelimit-remaining-tokens", strconv.Itoa(h.remainingTokens))
	hdr.Set("x-ratelimit-reset-tokens", formatDuration(h.resetTokens))
	if h.project {
		hdr.Set("x-ratelimit-limit-project-tokens", strconv.Itoa(h.limitProjectTokens))
		hdr.Set("x-ratelimit-remaining-project-tokens", strconv.Itoa(h.remainingProjectTokens))
		hdr.Set("x-ratelimit-reset-project-tokens", formatDuration(h.resetProjectTokens))
	}
}

// formatDuration renders d as the API's reset headers and 429 messages do:
// Go duration syntax at millisecond precision ("20ms", "7m12s",
// "23h55m16.126s"), and "0s" only for no wait at all.
func formatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return max(d.Round(time.Millisecond), time.Millisecond).String()
}

// retryAfter is the Retry-After value for d: whole seconds, rounded up.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(d.Round(time.Millisecond).Seconds())))
}

// modelFamily strips a dated snapshot suffix ("-2024-08-06", "-0613"), so
// that a snapshot shares its alias's buckets.
func modelFamily(model string) string {
	if i := len(model) - len("-2006-01-02"); i > 0 {
		if _, err := time.Parse("-2006-01-02", model[i:]); err == nil {
			return model[:i]
		}
	}
	if i := strings.LastIndexByte(model, '-'); i > 0 && len(model)-i == 5 {
		if _, err := strconv.Atoi(model[i+1:]); err == nil {
			return model[:i]
		}
	}
	return model
}

func firstPositive[T int | time.Duration](vs ...T) T {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return 0
}
