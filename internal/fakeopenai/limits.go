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

// bucketID names one pair of buckets: per key, per org, and per model family
// when the key has PerModel.
type bucketID struct{ org, model string }

// limits is the pair of buckets a request draws on.
type limits struct {
	requests, tokens bucket
	trial            bool
}

// A bucket refills continuously: it holds up to capacity units and regains
// capacity units per window. It starts full.
type bucket struct {
	capacity float64
	window   time.Duration
	level    float64
	at       time.Time
}

func newBucket(capacity int, window time.Duration, now time.Time) bucket {
	return bucket{capacity: float64(capacity), window: window, level: float64(capacity), at: now}
}

// advance refills b up to now. A clock that goes backwards refills nothing.
func (b *bucket) advance(now time.Time) {
	if now.After(b.at) {
		b.level = min(b.capacity, b.level+b.perSecond()*now.Sub(b.at).Seconds())
		b.at = now
	}
}

func (b *bucket) perSecond() float64 { return b.capacity / b.window.Seconds() }

// until is how long until b holds n units; 0 if it already does.
func (b *bucket) until(n float64) time.Duration {
	if b.level >= n {
		return 0
	}
	return time.Duration((n - b.level) / b.perSecond() * float64(time.Second))
}

// remaining is what the x-ratelimit-remaining-* headers say: whole units left.
func (b *bucket) remaining() int { return int(math.Floor(b.level + 1e-9)) }

// bucketsFor returns the buckets a request of org for model draws on, created
// full and refilled up to now. It requires Server.mu held.
func (ks *keyState) bucketsFor(org Org, model string, now time.Time) *limits {
	id := bucketID{org: org.ID}
	if ks.key.PerModel {
		id.model = modelFamily(model)
	}
	l := ks.buckets[id]
	if l == nil {
		rpm, window := firstPositive(org.RPM, ks.key.RPM, paidRPM), time.Minute
		tpm := firstPositive(org.TPM, ks.key.TPM, paidTPM)
		if ks.key.Trial {
			rpm, window = firstPositive(org.RPM, ks.key.RPM, trialRPD), day
			tpm = firstPositive(org.TPM, ks.key.TPM, trialTPM)
		}
		l = &limits{requests: newBucket(rpm, window, now), tokens: newBucket(tpm, time.Minute, now), trial: ks.key.Trial}
		ks.buckets[id] = l
	}
	l.requests.advance(now)
	l.tokens.advance(now)
	return l
}

// take charges one request of tokens tokens, or returns the 429 that refuses
// it (charging nothing).
func (l *limits) take(model, org string, tokens int) *apiError {
	req, tok := &l.requests, &l.tokens
	cost := float64(tokens)
	switch {
	case cost > tok.capacity:
		msg := fmt.Sprintf("Request too large for %s in organization %s on tokens per min (TPM): Limit %d, Requested %d. The input or output tokens must be reduced in order to run successfully. %s",
			model, org, int(tok.capacity), tokens, rateLimitsURL)
		return l.rateLimitError("tokens", msg, 0)
	case req.level < 1:
		wait := req.until(1)
		unit := "requests per min (RPM)"
		if l.trial {
			unit = "requests per day (RPD)"
		}
		msg := fmt.Sprintf("Rate limit reached for %s in organization %s on %s: Limit %d, Used %d, Requested 1. Please try again in %s. %s",
			model, org, unit, int(req.capacity), int(req.capacity)-req.remaining(), formatDuration(wait), rateLimitsURL)
		return l.rateLimitError("requests", msg, wait)
	case tok.level < cost:
		wait := tok.until(cost)
		msg := fmt.Sprintf("Rate limit reached for %s in organization %s on tokens per min (TPM): Limit %d, Used %d, Requested %d. Please try again in %s. %s",
			model, org, int(tok.capacity), int(tok.capacity)-tok.remaining(), tokens, formatDuration(wait), rateLimitsURL)
		return l.rateLimitError("tokens", msg, wait)
	}
	req.level--
	tok.level -= cost
	return nil
}

// refuseIfEmpty is take's 429 for an empty bucket, for a request that costs
// no tokens of its own (the refused probe).
func (l *limits) refuseIfEmpty(model, org string) *apiError {
	if l.requests.level >= 1 && l.tokens.level >= 1 {
		return nil
	}
	return l.take(model, org, 1)
}

func (l *limits) rateLimitError(typ, msg string, wait time.Duration) *apiError {
	if l.trial {
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
}

func (l *limits) headers() *rateHeaders {
	return &rateHeaders{
		limitRequests: int(l.requests.capacity), remainingRequests: l.requests.remaining(),
		resetRequests: l.requests.until(l.requests.capacity),
		limitTokens:   int(l.tokens.capacity), remainingTokens: l.tokens.remaining(),
		resetTokens: l.tokens.until(l.tokens.capacity),
	}
}

func (h *rateHeaders) set(hdr http.Header) {
	hdr.Set("x-ratelimit-limit-requests", strconv.Itoa(h.limitRequests))
	hdr.Set("x-ratelimit-remaining-requests", strconv.Itoa(h.remainingRequests))
	hdr.Set("x-ratelimit-reset-requests", formatDuration(h.resetRequests))
	hdr.Set("x-ratelimit-limit-tokens", strconv.Itoa(h.limitTokens))
	hdr.Set("x-ratelimit-remaining-tokens", strconv.Itoa(h.remainingTokens))
	hdr.Set("x-ratelimit-reset-tokens", formatDuration(h.resetTokens))
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

func firstPositive(vs ...int) int {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return 0
}
