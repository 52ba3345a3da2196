package keypool

import (
	"math"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Unknown marks a count or duration that an answer did not state, or stated in
// a form that could not be read. It is never confused with zero.
const Unknown = -1

// trialRequestLimit is the largest x-ratelimit-limit-requests of a trial key:
// free keys have a per-day request bucket of 200 (the seed's rule, <= 250).
const trialRequestLimit = 250

// RateLimits is what one upstream answer said about the key's limits, from its
// x-ratelimit-* and Retry-After headers. Every field is Unknown (-1) when the
// header was missing, negative or unreadable.
type RateLimits struct {
	LimitRequests, RemainingRequests int64
	ResetRequests                    time.Duration // until the request bucket is full again
	LimitTokens, RemainingTokens     int64
	ResetTokens                      time.Duration
	LimitProjectTokens               int64
	RemainingProjectTokens           int64
	ResetProjectTokens               time.Duration
	// RetryAfter is retry-after-ms if readable, else Retry-After (seconds or an
	// HTTP date, relative to the time given to ParseRateLimits).
	RetryAfter time.Duration
}

// Canonical header names, so lookups index the map without canonicalizing.
const (
	hLimitRequests     = "X-Ratelimit-Limit-Requests"
	hRemainingRequests = "X-Ratelimit-Remaining-Requests"
	hResetRequests     = "X-Ratelimit-Reset-Requests"
	hLimitTokens       = "X-Ratelimit-Limit-Tokens"
	hRemainingTokens   = "X-Ratelimit-Remaining-Tokens"
	hResetTokens       = "X-Ratelimit-Reset-Tokens"
	hLimitProject      = "X-Ratelimit-Limit-Project-Tokens"
	hRemainingProject  = "X-Ratelimit-Remaining-Project-Tokens"
	hResetProject      = "X-Ratelimit-Reset-Project-Tokens"
	hRetryAfter        = "Retry-After"
	hRetryAfterMs      = "Retry-After-Ms"
	hShouldRetry       = "X-Should-Retry"
)

// ParseRateLimits reads the rate-limit headers of an answer received at now.
// It never fails: what cannot be read is Unknown.
func ParseRateLimits(h http.Header, now time.Time) RateLimits {
	return parseRateLimits(canonicalHeader(h), now)
}

// responseLimits is ParseRateLimits for the transport's hot path: headers
// from net/http are canonical, so the check for hand-built keys runs only
// when nothing was found.
func responseLimits(h http.Header, now time.Time) RateLimits {
	l := parseRateLimits(h, now)
	if !l.Known() {
		if c, copied := canonicalCopy(h); copied {
			l = parseRateLimits(c, now)
		}
	}
	return l
}

func parseRateLimits(h http.Header, now time.Time) RateLimits {
	return RateLimits{
		LimitRequests:          headerCount(h, hLimitRequests),
		RemainingRequests:      headerCount(h, hRemainingRequests),
		ResetRequests:          headerReset(h, hResetRequests),
		LimitTokens:            headerCount(h, hLimitTokens),
		RemainingTokens:        headerCount(h, hRemainingTokens),
		ResetTokens:            headerReset(h, hResetTokens),
		LimitProjectTokens:     headerCount(h, hLimitProject),
		RemainingProjectTokens: headerCount(h, hRemainingProject),
		ResetProjectTokens:     headerReset(h, hResetProject),
		RetryAfter:             parseRetryAfter(h, now),
	}
}

// Trial reports whether the request limit marks a trial key: at most 250
// requests (a free key's bucket is 200 a day; the seed's rule).
func (l RateLimits) Trial() bool {
	return l.LimitRequests > 0 && l.LimitRequests <= trialRequestLimit
}

// Known reports whether the answer carried any readable rate-limit header.
func (l RateLimits) Known() bool {
	return l.LimitRequests >= 0 || l.RemainingRequests >= 0 || l.ResetRequests >= 0 ||
		l.LimitTokens >= 0 || l.RemainingTokens >= 0 || l.ResetTokens >= 0 ||
		l.LimitProjectTokens >= 0 || l.RemainingProjectTokens >= 0 || l.ResetProjectTokens >= 0 ||
		l.RetryAfter >= 0
}

// headerValue reads the first value of a header by its canonical name from a
// header whose keys are canonical (see canonicalHeader).
func headerValue(h http.Header, canonical string) string {
	if v := h[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// canonicalHeader returns h itself when every key is in canonical form, as
// net/http makes them, and otherwise a canonical copy: headers built by hand
// may hold "retry-after". The check costs a pass over the keys, no allocation.
func canonicalHeader(h http.Header) http.Header {
	c, _ := canonicalCopy(h)
	return c
}

// canonicalCopy is canonicalHeader that also reports whether it copied.
func canonicalCopy(h http.Header) (http.Header, bool) {
	for k := range h {
		if textproto.CanonicalMIMEHeaderKey(k) != k {
			c := make(http.Header, len(h))
			for k, v := range h {
				ck := textproto.CanonicalMIMEHeaderKey(k)
				c[ck] = append(c[ck], v...)
			}
			return c, true
		}
	}
	return h, false
}

func headerCount(h http.Header, name string) int64 {
	n, ok := parseCount(headerValue(h, name))
	if !ok {
		return Unknown
	}
	return n
}

func headerReset(h http.Header, name string) time.Duration {
	d, ok := parseResetDuration(headerValue(h, name))
	if !ok {
		return Unknown
	}
	return d
}

// parseCount reads a non-negative integer count such as "3000". A value like
// "3000.0" is accepted; negative values (Azure's -1), garbage and overflow are
// not (ok false).
func parseCount(s string) (n int64, ok bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, n >= 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f >= math.MaxInt64 || f != f {
		return 0, false
	}
	return int64(f), true
}

// parseResetDuration reads an x-ratelimit-reset-* value: Go duration syntax as
// OpenAI sends it ("20ms", "6m0s", "11m32.334s", "23h55m16.126s"), or a bare
// number of seconds ("1.5"). Negative, garbage and overflowing values are not
// read (ok false); the parsed value is never capped.
func parseResetDuration(s string) (d time.Duration, ok bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	if c := s[len(s)-1]; c >= '0' && c <= '9' || c == '.' {
		return parseSeconds(s)
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}

// parseSeconds reads a non-negative decimal number of seconds.
func parseSeconds(s string) (time.Duration, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f != f || f*float64(time.Second) >= math.MaxInt64 {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

// parseRetryAfter reads how long an answer received at now asks to wait:
// retry-after-ms (milliseconds, may be fractional) first, then Retry-After
// (seconds, may be fractional, or an HTTP date; a date in the past means 0).
// It returns Unknown when neither is present or readable. h's keys must be
// canonical (see canonicalHeader).
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(headerValue(h, hRetryAfterMs)); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err == nil && f >= 0 && f == f && f*float64(time.Millisecond) < math.MaxInt64 {
			return time.Duration(f * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(headerValue(h, hRetryAfter))
	if v == "" {
		return Unknown
	}
	if d, ok := parseSeconds(v); ok {
		return d
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return Unknown
	}
	if d := t.Sub(now); d > 0 {
		return d
	}
	return 0
}
