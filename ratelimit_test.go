package keypool

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rlNow is when the answers in these tests arrive; whole seconds, so an
// HTTP date (second precision) can be an exact offset from it.
var rlNow = time.Date(2026, time.March, 14, 15, 9, 26, 0, time.UTC)

// rlUnknown is RateLimits with every field Unknown.
var rlUnknown = RateLimits{
	LimitRequests: Unknown, RemainingRequests: Unknown, ResetRequests: Unknown,
	LimitTokens: Unknown, RemainingTokens: Unknown, ResetTokens: Unknown,
	LimitProjectTokens: Unknown, RemainingProjectTokens: Unknown, ResetProjectTokens: Unknown,
	RetryAfter: Unknown,
}

// rlHeader builds a header the way net/http does (canonical keys) from
// name, value pairs.
func rlHeader(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// rlOpenAIHeader is a full set of response headers of a paid key with a
// project token limit, as api.openai.com sends them.
func rlOpenAIHeader() http.Header {
	return rlHeader(
		"content-type", "application/json",
		"openai-organization", "acme-corp-x1y2z3",
		"openai-processing-ms", "412",
		"openai-version", "2020-10-01",
		"x-request-id", "req_8f2c1a9d0e7b4c3a9f6e5d4c3b2a1f0e",
		"x-ratelimit-limit-requests", "3000",
		"x-ratelimit-remaining-requests", "2999",
		"x-ratelimit-reset-requests", "20ms",
		"x-ratelimit-limit-tokens", "150000",
		"x-ratelimit-remaining-tokens", "149984",
		"x-ratelimit-reset-tokens", "6m0s",
		"x-ratelimit-limit-project-tokens", "60000",
		"x-ratelimit-remaining-project-tokens", "57000",
		"x-ratelimit-reset-project-tokens", "3s",
		"strict-transport-security", "max-age=31536000; includeSubDomains; preload",
		"cf-cache-status", "DYNAMIC",
		"cf-ray", "8f2c1a9d0e7b4c3a-AMS",
		"alt-svc", `h3=":443"; ma=86400`,
	)
}

func TestParseResetDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		// Forms seen in real responses.
		{"0s", 0, true},
		{"2ms", 2 * time.Millisecond, true},
		{"20ms", 20 * time.Millisecond, true},
		{"106ms", 106 * time.Millisecond, true},
		{"425ms", 425 * time.Millisecond, true},
		{"1s", time.Second, true},
		{"6m0s", 6 * time.Minute, true},
		{"7m12s", 7*time.Minute + 12*time.Second, true},
		{"11m32.334s", 11*time.Minute + 32334*time.Millisecond, true},
		{"23h55m16.126s", 23*time.Hour + 55*time.Minute + 16126*time.Millisecond, true},
		// Bare seconds.
		{"1.5", 1500 * time.Millisecond, true},
		{"20", 20 * time.Second, true},
		{"0", 0, true},
		{"0.001", time.Millisecond, true},
		{"2.", 2 * time.Second, true},
		// White space around.
		{" 20ms ", 20 * time.Millisecond, true},
		{"\t6m0s\r\n", 6 * time.Minute, true},
		{"  1.5  ", 1500 * time.Millisecond, true},
		// Never capped.
		{"100h", 100 * time.Hour, true},
		{"48h0m0s", 48 * time.Hour, true},
		{"864000", 240 * time.Hour, true},
		// Not readable.
		{"", 0, false},
		{"   ", 0, false},
		{"abc", 0, false},
		{"-1s", 0, false},
		{"-5", 0, false},
		{"-0.5", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"+Inf", 0, false},
		{"1e400", 0, false},
		{"1e10", 0, false}, // seconds beyond time.Duration
		{"9999999999h", 0, false},
		{"20 ms", 0, false},
		{"ms", 0, false},
		{".", 0, false},
		{"1.2.3", 0, false},
		{"6m0s garbage", 0, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			d, ok := parseResetDuration(tt.in)
			if ok != tt.ok || (ok && d != tt.want) {
				t.Errorf("parseResetDuration(%q) = %v, %v; want %v, %v", tt.in, d, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseCount(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"3000", 3000, true},
		{"0", 0, true},
		{" 42 ", 42, true},
		{"\t150000\r\n", 150000, true},
		{"3000.0", 3000, true},
		{"9223372036854775807", math.MaxInt64, true},
		{"-1", 0, false}, // Azure's "no limit stated"
		{"-5", 0, false},
		{"-0.5", 0, false},
		{"abc", 0, false},
		{"", 0, false},
		{"  ", 0, false},
		{"12abc", 0, false},
		{"1 000", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"+Inf", 0, false},
		{"1e30", 0, false},                // overflows int64
		{"9223372036854775808", 0, false}, // MaxInt64 + 1
		{"1e400", 0, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			n, ok := parseCount(tt.in)
			if ok != tt.ok || (ok && n != tt.want) {
				t.Errorf("parseCount(%q) = %d, %v; want %d, %v", tt.in, n, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	date := func(d time.Duration) string { return rlNow.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"retry-after-ms", rlHeader("retry-after-ms", "1500.5"), 1500500 * time.Microsecond},
		{"retry-after-ms wins", rlHeader("retry-after-ms", "1500.5", "retry-after", "56"), 1500500 * time.Microsecond},
		{"retry-after-ms zero", rlHeader("retry-after-ms", "0", "retry-after", "56"), 0},
		{"unreadable retry-after-ms falls back", rlHeader("retry-after-ms", "soon", "retry-after", "7"), 7 * time.Second},
		{"negative retry-after-ms falls back", rlHeader("retry-after-ms", "-5", "retry-after", "2"), 2 * time.Second},
		{"NaN retry-after-ms falls back", rlHeader("retry-after-ms", "NaN", "retry-after", "2"), 2 * time.Second},
		{"unreadable retry-after-ms alone", rlHeader("retry-after-ms", "soon"), Unknown},
		{"seconds", rlHeader("retry-after", "56"), 56 * time.Second},
		{"fractional seconds", rlHeader("retry-after", "0.5"), 500 * time.Millisecond},
		{"zero seconds", rlHeader("retry-after", "0"), 0},
		{"seconds with space", rlHeader("retry-after", " 56 "), 56 * time.Second},
		{"HTTP date 30s ahead", rlHeader("retry-after", date(30*time.Second)), 30 * time.Second},
		{"HTTP date in RFC 850 form", rlHeader("retry-after", rlNow.Add(2*time.Minute).Format(time.RFC850)), 2 * time.Minute},
		{"HTTP date now", rlHeader("retry-after", date(0)), 0},
		{"HTTP date in the past", rlHeader("retry-after", date(-time.Hour)), 0},
		{"garbage", rlHeader("retry-after", "soon"), Unknown},
		{"negative", rlHeader("retry-after", "-5"), Unknown},
		{"NaN", rlHeader("retry-after", "NaN"), Unknown},
		{"too large", rlHeader("retry-after", "1e400"), Unknown},
		{"empty value", rlHeader("retry-after", ""), Unknown},
		{"absent", rlHeader("x-ratelimit-reset-requests", "20ms"), Unknown},
		{"empty header", http.Header{}, Unknown},
		{"nil header", nil, Unknown},
		// Built by hand, not by net/http: the keys are not canonical.
		{"non-canonical retry-after", http.Header{"retry-after": {"3"}}, 3 * time.Second},
		{"non-canonical retry-after-ms", http.Header{"retry-after-ms": {"250"}, "Retry-After": {"9"}}, 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseRateLimits(tt.h, rlNow).RetryAfter; got != tt.want {
				t.Errorf("ParseRateLimits(%v).RetryAfter = %v; want %v", tt.h, got, tt.want)
			}
		})
	}
}

func TestParseRateLimits(t *testing.T) {
	tests := []struct {
		name  string
		h     http.Header
		want  RateLimits
		trial bool
		known bool
	}{
		{
			name: "OpenAI paid key with project tokens",
			h:    rlOpenAIHeader(),
			want: RateLimits{
				LimitRequests: 3000, RemainingRequests: 2999, ResetRequests: 20 * time.Millisecond,
				LimitTokens: 150000, RemainingTokens: 149984, ResetTokens: 6 * time.Minute,
				LimitProjectTokens: 60000, RemainingProjectTokens: 57000, ResetProjectTokens: 3 * time.Second,
				RetryAfter: Unknown,
			},
			known: true,
		},
		{
			name: "OpenAI trial key, day bucket spent",
			h: rlHeader(
				"x-ratelimit-limit-requests", "200",
				"x-ratelimit-remaining-requests", "0",
				"x-ratelimit-reset-requests", "23h55m16.126s",
				"x-ratelimit-limit-tokens", "40000",
				"x-ratelimit-remaining-tokens", "39850",
				"x-ratelimit-reset-tokens", "225ms",
				"retry-after", "20",
			),
			want: RateLimits{
				LimitRequests: 200, RemainingRequests: 0, ResetRequests: 23*time.Hour + 55*time.Minute + 16126*time.Millisecond,
				LimitTokens: 40000, RemainingTokens: 39850, ResetTokens: 225 * time.Millisecond,
				LimitProjectTokens: Unknown, RemainingProjectTokens: Unknown, ResetProjectTokens: Unknown,
				RetryAfter: 20 * time.Second,
			},
			trial: true,
			known: true,
		},
		{
			name: "Azure 429",
			h: rlHeader(
				"x-ratelimit-limit-tokens", "-1",
				"x-ratelimit-remaining-requests", "99",
				"x-ratelimit-remaining-tokens", "9000",
				"retry-after", "6",
				"retry-after-ms", "5800",
				"apim-request-id", "0b4a1d1e-8f0c-4f0e-9d55-0a4c8d2b7c11",
			),
			want: RateLimits{
				LimitRequests: Unknown, RemainingRequests: 99, ResetRequests: Unknown,
				LimitTokens: Unknown, RemainingTokens: 9000, ResetTokens: Unknown,
				LimitProjectTokens: Unknown, RemainingProjectTokens: Unknown, ResetProjectTokens: Unknown,
				RetryAfter: 5800 * time.Millisecond,
			},
			known: true,
		},
		{
			name: "garbage is unknown, never zero",
			h: rlHeader(
				"x-ratelimit-limit-requests", "lots",
				"x-ratelimit-remaining-requests", "-3",
				"x-ratelimit-reset-requests", "soon",
				"x-ratelimit-limit-tokens", "1e400",
				"x-ratelimit-remaining-tokens", "",
				"x-ratelimit-reset-tokens", "-1s",
				"x-ratelimit-limit-project-tokens", "NaN",
				"x-ratelimit-remaining-project-tokens", "12 tokens",
				"x-ratelimit-reset-project-tokens", "20 ms",
				"retry-after", "later",
				"retry-after-ms", "-1",
			),
			want: rlUnknown,
		},
		{name: "empty header", h: http.Header{}, want: rlUnknown},
		{name: "nil header", h: nil, want: rlUnknown},
		{
			// Built by hand, not by net/http: the keys are not canonical.
			name: "non-canonical keys",
			h: http.Header{
				"x-ratelimit-limit-requests":     {"3000"},
				"x-ratelimit-remaining-requests": {"2999"},
				"x-ratelimit-reset-tokens":       {"6m0s"},
				"retry-after":                    {"1"},
			},
			want: RateLimits{
				LimitRequests: 3000, RemainingRequests: 2999, ResetRequests: Unknown,
				LimitTokens: Unknown, RemainingTokens: Unknown, ResetTokens: 6 * time.Minute,
				LimitProjectTokens: Unknown, RemainingProjectTokens: Unknown, ResetProjectTokens: Unknown,
				RetryAfter: time.Second,
			},
			known: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseRateLimits(tt.h, rlNow)
			if got != tt.want {
				t.Errorf("ParseRateLimits =\n%+v\nwant\n%+v", got, tt.want)
			}
			if got.Trial() != tt.trial {
				t.Errorf("Trial() = %v; want %v", got.Trial(), tt.trial)
			}
			if got.Known() != tt.known {
				t.Errorf("Known() = %v; want %v", got.Known(), tt.known)
			}
		})
	}
}

func TestRateLimitsTrial(t *testing.T) {
	tests := []struct {
		limit string
		want  bool
	}{
		{"1", true},
		{"200", true},
		{"250", true},
		{"251", false},
		{"500", false},
		{"3000", false},
		{"", false},   // unknown
		{"-1", false}, // unknown
		{"abc", false},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.limit), func(t *testing.T) {
			l := ParseRateLimits(rlHeader("x-ratelimit-limit-requests", tt.limit, "x-ratelimit-limit-tokens", "40000"), rlNow)
			if got := l.Trial(); got != tt.want {
				t.Errorf("limit-requests %q: Trial() = %v; want %v", tt.limit, got, tt.want)
			}
		})
	}
}

func TestRateLimitsKnown(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want bool
	}{
		{"nil", nil, false},
		{"empty", http.Header{}, false},
		{"other headers only", rlHeader("openai-version", "2020-10-01", "x-request-id", "req_1"), false},
		{"unreadable values only", rlHeader("x-ratelimit-remaining-tokens", "many", "retry-after", "later"), false},
		{"Azure -1 only", rlHeader("x-ratelimit-limit-tokens", "-1"), false},
		{"limit-requests", rlHeader("x-ratelimit-limit-requests", "3000"), true},
		{"remaining-requests", rlHeader("x-ratelimit-remaining-requests", "0"), true},
		{"reset-requests", rlHeader("x-ratelimit-reset-requests", "0s"), true},
		{"limit-tokens", rlHeader("x-ratelimit-limit-tokens", "150000"), true},
		{"remaining-tokens", rlHeader("x-ratelimit-remaining-tokens", "0"), true},
		{"reset-tokens", rlHeader("x-ratelimit-reset-tokens", "6m0s"), true},
		{"limit-project-tokens", rlHeader("x-ratelimit-limit-project-tokens", "60000"), true},
		{"remaining-project-tokens", rlHeader("x-ratelimit-remaining-project-tokens", "0"), true},
		{"reset-project-tokens", rlHeader("x-ratelimit-reset-project-tokens", "3s"), true},
		{"retry-after", rlHeader("retry-after", "0"), true},
		{"retry-after-ms", rlHeader("retry-after-ms", "100"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseRateLimits(tt.h, rlNow).Known(); got != tt.want {
				t.Errorf("Known() = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestParseRateLimitsAllocs(t *testing.T) {
	h := rlOpenAIHeader()
	h.Set("retry-after", "56")
	allocs := testing.AllocsPerRun(100, func() {
		if l := ParseRateLimits(h, rlNow); l.LimitTokens != 150000 || l.RetryAfter != 56*time.Second {
			t.Fatalf("ParseRateLimits = %+v", l)
		}
	})
	if allocs != 0 {
		t.Errorf("ParseRateLimits allocates %v times per call; want 0", allocs)
	}
}

var rlSink RateLimits

func BenchmarkParseRateLimits(b *testing.B) {
	h := rlOpenAIHeader()
	b.ReportAllocs()
	for b.Loop() {
		rlSink = ParseRateLimits(h, rlNow)
	}
}

func FuzzParseResetDuration(f *testing.F) {
	for _, s := range []string{"0s", "20ms", "6m0s", "11m32.334s", "23h55m16.126s", "1.5", "20", " 1s ", "-1s", "NaN", "1e400", "20 ms", ""} {
		f.Add(s, int64(0))
	}
	f.Add("", int64(math.MaxInt64))
	f.Add("", int64(1500*time.Microsecond))
	f.Add("", int64(-7*time.Minute))
	f.Fuzz(func(t *testing.T, s string, n int64) {
		if d, ok := parseResetDuration(s); ok && d < 0 {
			t.Errorf("parseResetDuration(%q) = %v, true; want d >= 0", s, d)
		} else if !ok && d != 0 {
			t.Errorf("parseResetDuration(%q) = %v, false; want 0", s, d)
		}
		want := time.Duration(n)
		if want < 0 {
			want = -want
		}
		if want < 0 { // math.MinInt64
			return
		}
		for _, in := range []string{want.String(), " " + want.String() + "\t"} {
			if d, ok := parseResetDuration(in); !ok || d != want {
				t.Errorf("parseResetDuration(%q) = %v, %v; want %v, true", in, d, ok, want)
			}
		}
	})
}

func FuzzParseCount(f *testing.F) {
	for _, s := range []string{"3000", "0", " 42 ", "3000.0", "-1", "abc", "", "1e30", "NaN", "9223372036854775808"} {
		f.Add(s, int64(0))
	}
	f.Add("", int64(math.MaxInt64))
	f.Add("", int64(-1))
	f.Fuzz(func(t *testing.T, s string, n int64) {
		if got, ok := parseCount(s); ok && got < 0 {
			t.Errorf("parseCount(%q) = %d, true; want n >= 0", s, got)
		}
		if n < 0 {
			return
		}
		in := strconv.FormatInt(n, 10)
		if got, ok := parseCount(in); !ok || got != n {
			t.Errorf("parseCount(%q) = %d, %v; want %d, true", in, got, ok, n)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	f.Add("56", "", int64(0))
	f.Add("0.5", "1500.5", int64(0))
	f.Add(rlNow.Add(30*time.Second).Format(http.TimeFormat), "", int64(0))
	f.Add(rlNow.Add(-time.Hour).Format(http.TimeFormat), "", int64(0))
	f.Add("Mon, 01 Jan 0001 00:00:00 GMT", "", int64(math.MaxInt64))
	f.Add("Fri, 31 Dec 9999 23:59:59 GMT", "", int64(math.MinInt64))
	f.Add("-5", "-5", int64(0))
	f.Add("NaN", "Inf", int64(0))
	f.Add("1e400", "1e400", int64(0))
	f.Add("", "9.3e15", int64(0))
	f.Fuzz(func(t *testing.T, retryAfter, retryAfterMs string, nowOffset int64) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		if retryAfterMs != "" {
			h.Set("Retry-After-Ms", retryAfterMs)
		}
		now := rlNow.Add(time.Duration(nowOffset))
		got := parseRetryAfter(canonicalHeader(h), now)
		if got != Unknown && got < 0 {
			t.Errorf("parseRetryAfter(Retry-After %q, retry-after-ms %q) = %v; want Unknown or >= 0", retryAfter, retryAfterMs, got)
		}
		if strings.TrimSpace(retryAfter) == "" && strings.TrimSpace(retryAfterMs) == "" && got != Unknown {
			t.Errorf("parseRetryAfter of no value = %v; want Unknown", got)
		}
		if l := ParseRateLimits(h, now); l.RetryAfter != got {
			t.Errorf("ParseRateLimits(...).RetryAfter = %v; parseRetryAfter = %v", l.RetryAfter, got)
		}
	})
}
