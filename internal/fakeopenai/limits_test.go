package fakeopenai_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool/internal/fakeopenai"
)

// inBubble serves keys over ServePipe inside a synctest bubble and runs f
// with a poster for them. Time stands still in the bubble until f sleeps:
// a time.Sleep in f moves the clock by exactly that much, so bucket state
// is known to the millisecond.
func inBubble(t *testing.T, keys []fakeopenai.Key, f func(t *testing.T, s *fakeopenai.Server, post func(call) reply)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		s := fakeopenai.New(fakeopenai.Config{}, keys...)
		defer s.Close()
		tr, closePipe := fakeopenai.ServePipe(s)
		defer closePipe()
		client := &http.Client{Transport: tr}
		f(t, s, func(c call) reply {
			t.Helper()
			if c.path == "" {
				c.path = "/chat/completions"
			}
			return do(t, client, fakeopenai.PipeBaseURL, c)
		})
	})
}

// probe is the liveness probe: a 400 that carries the buckets' headers
// without charging them.
var probe = map[string]any{"model": "gpt-4o", "max_tokens": -1, "messages": []any{map[string]any{"role": "user", "content": "Hi"}}}

func TestOrgBudgets(t *testing.T) {
	shared := func(o fakeopenai.Org) []fakeopenai.Org {
		o.ID = "org-shared"
		return []fakeopenai.Org{o}
	}
	type step struct {
		key, org   string // org: the OpenAI-Organization header, "" = none
		body       any    // nil = chat("gpt-4o")
		wantStatus int
		wantLimit  int    // x-ratelimit-limit-requests; 0 = not checked
		wantLeft   int    // x-ratelimit-remaining-requests
		wantTokens int    // x-ratelimit-remaining-tokens; 0 = not checked
		wantMsg    string // in the 429's message
		wantSlug   string // openai-organization; a trailing "*" = a prefix
	}
	tests := []struct {
		name  string
		keys  []fakeopenai.Key
		steps []step
	}{
		{
			name: "two keys of one org spend one budget",
			keys: []fakeopenai.Key{
				{Secret: "sk-a", Orgs: shared(fakeopenai.Org{Title: "Shared Co", RPM: 3})},
				{Secret: "sk-b", Orgs: shared(fakeopenai.Org{Title: "Shared Co", RPM: 3})},
			},
			steps: []step{
				{key: "sk-a", wantStatus: 200, wantLimit: 3, wantLeft: 2, wantSlug: "shared-co"},
				{key: "sk-b", wantStatus: 200, wantLimit: 3, wantLeft: 1, wantSlug: "shared-co"}, // sees sk-a's spend
				{key: "sk-a", wantStatus: 200, wantLeft: 0},
				{key: "sk-b", wantStatus: 429, wantLeft: 0, wantSlug: "shared-co",
					wantMsg: "Rate limit reached for gpt-4o in organization org-shared on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."},
				{key: "sk-a", wantStatus: 429, wantLeft: 0, wantMsg: "in organization org-shared on requests per min (RPM)"},
			},
		},
		{
			name: "personal orgs keep budgets of their own",
			keys: []fakeopenai.Key{{Secret: "sk-a", RPM: 2}, {Secret: "sk-b", RPM: 2}},
			steps: []step{
				{key: "sk-a", wantStatus: 200, wantLimit: 2, wantLeft: 1, wantSlug: "user-*"},
				{key: "sk-a", wantStatus: 200, wantLeft: 0},
				{key: "sk-b", wantStatus: 200, wantLimit: 2, wantLeft: 1, wantSlug: "user-*"},
				{key: "sk-a", wantStatus: 429, wantLeft: 0, wantMsg: "in organization org-"},
				{key: "sk-b", wantStatus: 200, wantLeft: 0},
			},
		},
		{
			name: "the first key sizes an org without limits",
			keys: []fakeopenai.Key{
				{Secret: "sk-small", RPM: 2, Orgs: shared(fakeopenai.Org{})},
				{Secret: "sk-big", RPM: 100, Orgs: shared(fakeopenai.Org{})},
			},
			steps: []step{
				{key: "sk-small", wantStatus: 200, wantLimit: 2, wantLeft: 1},
				{key: "sk-big", wantStatus: 200, wantLimit: 2, wantLeft: 0},
				{key: "sk-big", wantStatus: 429, wantLimit: 2, wantLeft: 0, wantMsg: "Limit 2, Used 2, Requested 1."},
			},
		},
		{
			name: "the first key sizes it, whichever it is",
			keys: []fakeopenai.Key{
				{Secret: "sk-small", RPM: 2, Orgs: shared(fakeopenai.Org{})},
				{Secret: "sk-big", RPM: 100, Orgs: shared(fakeopenai.Org{})},
			},
			steps: []step{
				{key: "sk-big", wantStatus: 200, wantLimit: 100, wantLeft: 99},
				{key: "sk-small", wantStatus: 200, wantLimit: 100, wantLeft: 98},
			},
		},
		{
			name: "the org's limits win over its keys'",
			keys: []fakeopenai.Key{
				{Secret: "sk-a", RPM: 1, Orgs: shared(fakeopenai.Org{RPM: 4})},
				{Secret: "sk-b", RPM: 100, Orgs: shared(fakeopenai.Org{RPM: 4})},
			},
			steps: []step{
				{key: "sk-a", wantStatus: 200, wantLimit: 4, wantLeft: 3},
				{key: "sk-b", wantStatus: 200, wantLimit: 4, wantLeft: 2},
				{key: "sk-a", wantStatus: 200, wantLimit: 4, wantLeft: 1},
			},
		},
		{
			name: "per model family",
			keys: []fakeopenai.Key{
				{Secret: "sk-a", PerModel: true, Orgs: shared(fakeopenai.Org{RPM: 1})},
				{Secret: "sk-b", PerModel: true, Orgs: shared(fakeopenai.Org{RPM: 1})},
			},
			steps: []step{
				{key: "sk-a", wantStatus: 200, wantLeft: 0},
				{key: "sk-b", body: chat("gpt-4o-2024-08-06"), wantStatus: 429, wantLeft: 0,
					wantMsg: "Rate limit reached for gpt-4o-2024-08-06 in organization org-shared on requests"},
				{key: "sk-b", body: chat("gpt-4o-mini"), wantStatus: 200, wantLeft: 0},
				{key: "sk-a", body: chat("gpt-4o-mini"), wantStatus: 429, wantLeft: 0},
			},
		},
		{
			name: "tokens",
			keys: []fakeopenai.Key{
				{Secret: "sk-a", Orgs: shared(fakeopenai.Org{TPM: 100})},
				{Secret: "sk-b", Orgs: shared(fakeopenai.Org{TPM: 100})},
			},
			steps: []step{
				// "Say hello." is 3 tokens; with max_tokens 90 a request costs 93.
				{key: "sk-a", body: chat("gpt-4o", "max_tokens", 90), wantStatus: 200, wantLeft: 2999, wantTokens: 7},
				{key: "sk-b", body: chat("gpt-4o", "max_tokens", 90), wantStatus: 429, wantLeft: 2999, wantTokens: 7,
					wantMsg: "in organization org-shared on tokens per min (TPM): Limit 100, Used 93, Requested 93. Please try again in 51.6s."},
			},
		},
		{
			name: "an org header picks the shared org",
			keys: []fakeopenai.Key{
				{Secret: "sk-a", Orgs: []fakeopenai.Org{{ID: "org-home", Default: true, RPM: 5}, {ID: "org-shared", RPM: 1}}},
				{Secret: "sk-b", Orgs: shared(fakeopenai.Org{Title: "Shared Co"})}, // its Title fills in the org's
			},
			steps: []step{
				{key: "sk-a", wantStatus: 200, wantLimit: 5, wantLeft: 4, wantSlug: "home"},
				{key: "sk-a", org: "org-shared", wantStatus: 200, wantLimit: 1, wantLeft: 0, wantSlug: "shared-co"},
				{key: "sk-b", wantStatus: 429, wantLimit: 1, wantLeft: 0, wantSlug: "shared-co", wantMsg: "in organization org-shared on requests"},
				{key: "sk-a", wantStatus: 200, wantLimit: 5, wantLeft: 3},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inBubble(t, tt.keys, func(t *testing.T, s *fakeopenai.Server, post func(call) reply) {
				for i, st := range tt.steps {
					c := call{key: st.key, body: st.body}
					if c.body == nil {
						c.body = chat("gpt-4o")
					}
					if st.org != "" {
						c.header = map[string]string{"OpenAI-Organization": st.org}
					}
					r := post(c)
					if r.status != st.wantStatus {
						t.Fatalf("step %d (%s): status %d, want %d: %s", i, st.key, r.status, st.wantStatus, r.body)
					}
					if got := header(t, r.header, "x-ratelimit-remaining-requests"); got != st.wantLeft {
						t.Errorf("step %d (%s): remaining-requests %d, want %d", i, st.key, got, st.wantLeft)
					}
					if got := header(t, r.header, "x-ratelimit-limit-requests"); st.wantLimit != 0 && got != st.wantLimit {
						t.Errorf("step %d (%s): limit-requests %d, want %d", i, st.key, got, st.wantLimit)
					}
					if got := header(t, r.header, "x-ratelimit-remaining-tokens"); st.wantTokens != 0 && got != st.wantTokens {
						t.Errorf("step %d (%s): remaining-tokens %d, want %d", i, st.key, got, st.wantTokens)
					}
					if slug := r.header.Get("openai-organization"); st.wantSlug != "" {
						if prefix, ok := strings.CutSuffix(st.wantSlug, "*"); !ok && slug != st.wantSlug || ok && !strings.HasPrefix(slug, prefix) {
							t.Errorf("step %d (%s): openai-organization %q, want %q", i, st.key, slug, st.wantSlug)
						}
					}
					if st.wantStatus == 429 {
						if e := r.apiError(t); !strings.Contains(e.Message, st.wantMsg) || e.Code != "rate_limit_exceeded" {
							t.Errorf("step %d (%s): %+v, want a message with %q", i, st.key, e, st.wantMsg)
						}
					}
				}
				if n := len(s.Records()); n != len(tt.steps) {
					t.Errorf("%d records for %d steps", n, len(tt.steps))
				}
			})
		})
	}
}

// TestSharedOrgListing: every key of an org lists it alike, its slug as
// name, the description merged from the keys that list it; is_default is
// each key's own.
func TestSharedOrgListing(t *testing.T) {
	keys := []fakeopenai.Key{
		{Secret: "sk-a", Orgs: []fakeopenai.Org{{ID: "org-home", Default: true}, {ID: "org-shared", RPM: 1}}},
		{Secret: "sk-b", Orgs: []fakeopenai.Org{{ID: "org-shared", Title: "Shared Co", Slug: "shared-co-slug"}}},
	}
	tests := []struct {
		key, path   string
		list        []any // where the orgs are in the answer
		wantDefault bool
	}{
		{"sk-a", "/organizations", []any{"data"}, false},
		{"sk-a", "/me", []any{"orgs", "data"}, false},
		{"sk-b", "/organizations", []any{"data"}, true},
		{"sk-b", "/me", []any{"orgs", "data"}, true},
	}
	inBubble(t, keys, func(t *testing.T, s *fakeopenai.Server, post func(call) reply) {
		for _, tt := range tests {
			r := post(call{method: "GET", path: tt.path, key: tt.key})
			if r.status != 200 {
				t.Fatalf("%s %s: %d %s", tt.key, tt.path, r.status, r.body)
			}
			orgs, _ := path(r.json(t), tt.list...).([]any)
			var found map[string]any
			for _, o := range orgs {
				if m, _ := o.(map[string]any); m["id"] == "org-shared" {
					found = m
				}
			}
			if found == nil || found["name"] != "shared-co-slug" || found["title"] != "Shared Co" ||
				found["is_default"] != tt.wantDefault || found["object"] != "organization" {
				t.Errorf("%s %s: org-shared = %v in %s", tt.key, tt.path, found, r.body)
			}
		}
		for _, key := range []string{"sk-a", "sk-b"} {
			c := call{key: key, body: chat("gpt-4o"), header: map[string]string{"OpenAI-Organization": "org-shared"}}
			if r := post(c); r.header.Get("openai-organization") != "shared-co-slug" {
				t.Errorf("%s: openai-organization %q", key, r.header.Get("openai-organization"))
			}
		}
	})
}

func TestSharedOrgConcurrent(t *testing.T) {
	org := []fakeopenai.Org{{ID: "org-shared", RPM: 10}}
	keys := []fakeopenai.Key{{Secret: "sk-a", Orgs: org}, {Secret: "sk-b", Orgs: org}, {Secret: "sk-c", Orgs: org}}
	inBubble(t, keys, func(t *testing.T, s *fakeopenai.Server, post func(call) reply) {
		var wg sync.WaitGroup
		statuses := make([]int, 30)
		for i := range statuses {
			wg.Go(func() { statuses[i] = post(call{key: keys[i%3].Secret, body: chat("gpt-4o")}).status })
		}
		wg.Wait()
		served := 0
		for _, st := range statuses {
			switch st {
			case 200:
				served++
			case 429:
			default:
				t.Errorf("status %d", st)
			}
		}
		if served != 10 {
			t.Errorf("%d served by an org of 10 RPM", served)
		}
	})
}

// TestFixedWindow: a windowed requests bucket counts down to one window's
// end however much is spent, frees nothing before it and is full after it.
func TestFixedWindow(t *testing.T) {
	type step struct {
		after      time.Duration // the clock moves this much first
		key        string
		probe      bool // send the liveness probe: headers without a charge
		wantStatus int
		wantLeft   int
		wantEnd    time.Duration // now + x-ratelimit-reset-requests, from the first request
		wantRetry  string        // Retry-After of a 429
		wantMsg    string        // in the 429's message
	}
	tests := []struct {
		name  string
		keys  []fakeopenai.Key
		steps []step
	}{
		{
			name: "a key's window",
			keys: []fakeopenai.Key{{Secret: "sk-w", RPM: 3, Window: time.Minute}},
			steps: []step{
				{key: "sk-w", wantStatus: 200, wantLeft: 2, wantEnd: time.Minute},
				{after: 10 * time.Second, key: "sk-w", wantStatus: 200, wantLeft: 1, wantEnd: time.Minute},
				{after: 20 * time.Second, key: "sk-w", wantStatus: 200, wantLeft: 0, wantEnd: time.Minute},
				{after: 10 * time.Second, key: "sk-w", wantStatus: 429, wantLeft: 0, wantEnd: time.Minute, wantRetry: "20",
					wantMsg: "on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."},
				{after: 19500 * time.Millisecond, key: "sk-w", wantStatus: 429, wantLeft: 0, wantEnd: time.Minute, wantRetry: "1",
					wantMsg: "Please try again in 500ms."},
				{after: 500 * time.Millisecond, key: "sk-w", probe: true, wantStatus: 400, wantLeft: 3, wantEnd: 2 * time.Minute},
				{key: "sk-w", wantStatus: 200, wantLeft: 2, wantEnd: 2 * time.Minute},
				{after: 2*time.Minute + 5*time.Second, key: "sk-w", wantStatus: 200, wantLeft: 2, wantEnd: 4 * time.Minute}, // at 3m5s: windows stay aligned to the start
			},
		},
		{
			name: "an org's window, shared by its keys",
			keys: []fakeopenai.Key{
				{Secret: "sk-a", RPM: 50, Orgs: []fakeopenai.Org{{ID: "org-win", RPM: 2, Window: 10 * time.Second}}},
				{Secret: "sk-b", Orgs: []fakeopenai.Org{{ID: "org-win", RPM: 2, Window: 10 * time.Second}}},
			},
			steps: []step{
				{key: "sk-a", wantStatus: 200, wantLeft: 1, wantEnd: 10 * time.Second},
				{after: 4 * time.Second, key: "sk-b", wantStatus: 200, wantLeft: 0, wantEnd: 10 * time.Second},
				{after: 3 * time.Second, key: "sk-a", wantStatus: 429, wantLeft: 0, wantEnd: 10 * time.Second, wantRetry: "3",
					wantMsg: "Rate limit reached for gpt-4o in organization org-win on requests per 10s: Limit 2, Used 2, Requested 1. Please try again in 3s."},
				{after: 3 * time.Second, key: "sk-b", probe: true, wantStatus: 400, wantLeft: 2, wantEnd: 20 * time.Second},
				{key: "sk-b", wantStatus: 200, wantLeft: 1, wantEnd: 20 * time.Second},
			},
		},
		{
			name: "a trial key's day",
			keys: []fakeopenai.Key{{Secret: "sk-t", Trial: true, RPM: 2, Window: 24 * time.Hour}},
			steps: []step{
				{key: "sk-t", wantStatus: 200, wantLeft: 1, wantEnd: 24 * time.Hour},
				{after: time.Hour, key: "sk-t", wantStatus: 200, wantLeft: 0, wantEnd: 24 * time.Hour},
				{after: 22 * time.Hour, key: "sk-t", wantStatus: 429, wantLeft: 0, wantEnd: 24 * time.Hour, wantRetry: "3600",
					wantMsg: "on requests per day (RPD): Limit 2, Used 2, Requested 1. Please try again in 1h0m0s."},
				{after: time.Hour, key: "sk-t", wantStatus: 200, wantLeft: 1, wantEnd: 48 * time.Hour},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inBubble(t, tt.keys, func(t *testing.T, s *fakeopenai.Server, post func(call) reply) {
				start := time.Now()
				for i, st := range tt.steps {
					time.Sleep(st.after) // moves the bubble's clock
					body := any(chat("gpt-4o"))
					if st.probe {
						body = probe
					}
					r := post(call{key: st.key, body: body})
					if r.status != st.wantStatus {
						t.Fatalf("step %d: status %d, want %d: %s", i, r.status, st.wantStatus, r.body)
					}
					if got := header(t, r.header, "x-ratelimit-remaining-requests"); got != st.wantLeft {
						t.Errorf("step %d: remaining-requests %d, want %d", i, got, st.wantLeft)
					}
					if end := time.Now().Add(reset(t, r.header, "x-ratelimit-reset-requests")).Sub(start); end != st.wantEnd {
						t.Errorf("step %d: the window ends %v after the start (reset %s), want %v", i, end, r.header.Get("x-ratelimit-reset-requests"), st.wantEnd)
					}
					if st.wantStatus != 429 {
						continue
					}
					if e := r.apiError(t); e.Type != "requests" || !strings.Contains(e.Message, st.wantMsg) {
						t.Errorf("step %d: %+v, want a message with %q", i, e, st.wantMsg)
					}
					if got := r.header.Get("Retry-After"); got != st.wantRetry {
						t.Errorf("step %d: Retry-After %q, want %q", i, got, st.wantRetry)
					}
				}
			})
		})
	}
}

// TestResetEnd: where x-ratelimit-reset-requests points (now + reset) as
// requests are spent: a continuous bucket's end moves one slot (a
// minute / RPM) later per request, whenever it is spent; a window's stays.
func TestResetEnd(t *testing.T) {
	tests := []struct {
		name string
		key  fakeopenai.Key
		slot time.Duration
	}{
		{"continuous", fakeopenai.Key{Secret: "sk-c", RPM: 60}, time.Second},
		{"fixed window", fakeopenai.Key{Secret: "sk-w", RPM: 60, Window: time.Minute}, 0},
	}
	gaps := []time.Duration{0, 0, 0, 500 * time.Millisecond, 200 * time.Millisecond, 0}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inBubble(t, []fakeopenai.Key{tt.key}, func(t *testing.T, s *fakeopenai.Server, post func(call) reply) {
				var first time.Time
				for i, gap := range gaps {
					time.Sleep(gap) // moves the bubble's clock
					r := post(call{key: tt.key.Secret, body: chat("gpt-4o")})
					if r.status != 200 || header(t, r.header, "x-ratelimit-remaining-requests") != 60-1-i {
						t.Fatalf("request %d: %d %v", i, r.status, r.header)
					}
					end := time.Now().Add(reset(t, r.header, "x-ratelimit-reset-requests"))
					if i == 0 {
						first = end
					}
					if moved := end.Sub(first); moved != time.Duration(i)*tt.slot {
						t.Errorf("request %d: the end moved %v (reset %s), want %v", i, moved, r.header.Get("x-ratelimit-reset-requests"), time.Duration(i)*tt.slot)
					}
				}
			})
		})
	}
}

func TestNoRetryAfter(t *testing.T) {
	tests := []struct {
		name      string
		key       fakeopenai.Key
		body      any
		wantType  string
		wantWait  string // in the message
		wantRetry string // "" = no Retry-After
	}{
		{"requests", fakeopenai.Key{RPM: 1}, chat("gpt-4o"), "requests", "Please try again in 1m0s.", "60"},
		{"requests, NoRetryAfter", fakeopenai.Key{RPM: 1, NoRetryAfter: true}, chat("gpt-4o"), "requests", "Please try again in 1m0s.", ""},
		{"window, NoRetryAfter", fakeopenai.Key{RPM: 1, Window: 30 * time.Second, NoRetryAfter: true}, chat("gpt-4o"), "requests", "Please try again in 30s.", ""},
		{"tokens", fakeopenai.Key{TPM: 100}, chat("gpt-4o", "max_tokens", 90), "tokens", "Please try again in 51.6s.", "52"},
		{"tokens, NoRetryAfter", fakeopenai.Key{TPM: 100, NoRetryAfter: true}, chat("gpt-4o", "max_tokens", 90), "tokens", "Please try again in 51.6s.", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.key.Secret = "sk-k"
			inBubble(t, []fakeopenai.Key{tt.key}, func(t *testing.T, s *fakeopenai.Server, post func(call) reply) {
				if r := post(call{key: "sk-k", body: tt.body}); r.status != 200 {
					t.Fatalf("first: %d %s", r.status, r.body)
				}
				r := post(call{key: "sk-k", body: tt.body})
				if r.status != 429 {
					t.Fatalf("second: %d %s", r.status, r.body)
				}
				if e := r.apiError(t); e.Type != tt.wantType || !strings.Contains(e.Message, tt.wantWait) {
					t.Errorf("error %+v, want type %s and %q", e, tt.wantType, tt.wantWait)
				}
				if got, ok := r.header["Retry-After"]; tt.wantRetry == "" && ok || tt.wantRetry != "" && r.header.Get("Retry-After") != tt.wantRetry {
					t.Errorf("Retry-After %q, want %q", got, tt.wantRetry)
				}
				if r.header.Get("retry-after-ms") != "" || r.header.Get("x-ratelimit-reset-"+tt.wantType) == "" {
					t.Errorf("headers %v", r.header)
				}
			})
		})
	}
}

// TestProjects: a key's project is named on its answers; keys of one org and
// one project with a project limit share the project's token bucket as well
// as the org's buckets.
func TestProjects(t *testing.T) {
	org := []fakeopenai.Org{{ID: "org-p", Title: "P Org"}}
	keys := []fakeopenai.Key{
		{Secret: "sk-proj-a", Orgs: org, Project: "proj_alpha", ProjectTPM: 100},
		{Secret: "sk-proj-b", Orgs: org, Project: "proj_alpha", ProjectTPM: 100},
		{Secret: "sk-proj-c", Orgs: org, Project: "proj_gamma"},
		{Secret: "sk-plain", Orgs: org},
	}
	big := chat("gpt-4o", "max_tokens", 90) // 93 tokens
	tests := []struct {
		key, projectHeader string
		body               any
		wantStatus         int
		wantProject        string // openai-project
		wantProjectLeft    string // x-ratelimit-remaining-project-tokens; "" = absent
		wantTokens         int    // x-ratelimit-remaining-tokens (the org's)
		wantCode           any
		wantMsg            string
		wantRetry          string
	}{
		{key: "sk-proj-a", body: big, wantStatus: 200, wantProject: "proj_alpha", wantProjectLeft: "7", wantTokens: 150000 - 93},
		{key: "sk-proj-b", body: big, wantStatus: 429, wantProject: "proj_alpha", wantProjectLeft: "7", wantTokens: 150000 - 93,
			wantCode: "rate_limit_exceeded", wantRetry: "52",
			wantMsg: "Rate limit reached for gpt-4o in project proj_alpha on tokens per min (TPM): Limit 100, Used 93, Requested 93. Please try again in 51.6s."},
		{key: "sk-proj-c", body: big, wantStatus: 200, wantProject: "proj_gamma", wantTokens: 150000 - 2*93},
		{key: "sk-plain", body: chat("gpt-4o"), wantStatus: 200, wantTokens: 150000 - 2*93 - 3},
		{key: "sk-proj-b", body: chat("gpt-4o", "max_tokens", 200), wantStatus: 429, wantProject: "proj_alpha", wantProjectLeft: "7", wantTokens: 150000 - 2*93 - 3,
			wantCode: "rate_limit_exceeded", wantMsg: "Request too large for gpt-4o in project proj_alpha on tokens per min (TPM): Limit 100, Requested 203."},
		{key: "sk-proj-a", projectHeader: "proj_gamma", body: chat("gpt-4o"), wantStatus: 401, wantCode: "mismatched_project"},
		{key: "sk-proj-a", projectHeader: "proj_alpha", body: chat("gpt-4o"), wantStatus: 200, wantProject: "proj_alpha", wantProjectLeft: "4", wantTokens: 150000 - 2*93 - 6},
		{key: "sk-plain", projectHeader: "proj_other", body: chat("gpt-4o"), wantStatus: 200, wantTokens: 150000 - 2*93 - 9},
	}
	inBubble(t, keys, func(t *testing.T, s *fakeopenai.Server, post func(call) reply) {
		for i, tt := range tests {
			c := call{key: tt.key, body: tt.body}
			if tt.projectHeader != "" {
				c.header = map[string]string{"OpenAI-Project": tt.projectHeader}
			}
			r := post(c)
			if r.status != tt.wantStatus {
				t.Fatalf("step %d (%s): %d, want %d: %s", i, tt.key, r.status, tt.wantStatus, r.body)
			}
			if r.status == 401 {
				if e := r.apiError(t); e.Code != tt.wantCode {
					t.Errorf("step %d: %+v", i, e)
				}
				continue
			}
			if got := r.header.Get("openai-project"); got != tt.wantProject {
				t.Errorf("step %d (%s): openai-project %q, want %q", i, tt.key, got, tt.wantProject)
			}
			if got := r.header.Get("x-ratelimit-remaining-project-tokens"); got != tt.wantProjectLeft {
				t.Errorf("step %d (%s): remaining-project-tokens %q, want %q", i, tt.key, got, tt.wantProjectLeft)
			}
			if tt.wantProjectLeft != "" && r.header.Get("x-ratelimit-limit-project-tokens") != "100" {
				t.Errorf("step %d (%s): limit-project-tokens %q", i, tt.key, r.header.Get("x-ratelimit-limit-project-tokens"))
			}
			if got := header(t, r.header, "x-ratelimit-remaining-tokens"); got != tt.wantTokens {
				t.Errorf("step %d (%s): remaining-tokens %d, want %d", i, tt.key, got, tt.wantTokens)
			}
			if r.header.Get("openai-organization") != "p-org" {
				t.Errorf("step %d (%s): openai-organization %q", i, tt.key, r.header.Get("openai-organization"))
			}
			if r.status == 429 {
				if e := r.apiError(t); e.Type != "tokens" || e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantMsg) {
					t.Errorf("step %d (%s): %+v, want %q", i, tt.key, e, tt.wantMsg)
				}
				if got := r.header.Get("Retry-After"); got != tt.wantRetry {
					t.Errorf("step %d (%s): Retry-After %q, want %q", i, tt.key, got, tt.wantRetry)
				}
			}
		}
	})
}

// TestAddKeyAndOrgBudgets: replacing a key keeps what its org's other keys
// spent; an org no other key lists (a personal one among them) starts afresh.
func TestAddKeyAndOrgBudgets(t *testing.T) {
	shared := []fakeopenai.Org{{ID: "org-shared", RPM: 2}}
	solo := []fakeopenai.Org{{ID: "org-solo", RPM: 1}}
	type step struct {
		add        *fakeopenai.Key // replace (or add) this key first
		key        string
		wantStatus int
	}
	tests := []struct {
		name  string
		keys  []fakeopenai.Key
		steps []step
	}{
		{"a shared org keeps its spend", []fakeopenai.Key{{Secret: "sk-a", Orgs: shared}, {Secret: "sk-b", Orgs: shared}}, []step{
			{key: "sk-a", wantStatus: 200},
			{key: "sk-b", wantStatus: 200},
			{add: &fakeopenai.Key{Secret: "sk-a", Orgs: shared}, key: "sk-a", wantStatus: 429},
			{key: "sk-b", wantStatus: 429},
		}},
		{"a personal org starts afresh", []fakeopenai.Key{{Secret: "sk-p", RPM: 1}}, []step{
			{key: "sk-p", wantStatus: 200},
			{key: "sk-p", wantStatus: 429},
			{add: &fakeopenai.Key{Secret: "sk-p", RPM: 1}, key: "sk-p", wantStatus: 200},
		}},
		{"an org of one key starts afresh", []fakeopenai.Key{{Secret: "sk-s", Orgs: solo}}, []step{
			{key: "sk-s", wantStatus: 200},
			{key: "sk-s", wantStatus: 429},
			{add: &fakeopenai.Key{Secret: "sk-s", Orgs: solo}, key: "sk-s", wantStatus: 200},
		}},
		{"a new key joins an org's spend", []fakeopenai.Key{{Secret: "sk-a", Orgs: shared}}, []step{
			{key: "sk-a", wantStatus: 200},
			{key: "sk-a", wantStatus: 200},
			{add: &fakeopenai.Key{Secret: "sk-new", Orgs: shared}, key: "sk-new", wantStatus: 429},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inBubble(t, tt.keys, func(t *testing.T, s *fakeopenai.Server, post func(call) reply) {
				for i, st := range tt.steps {
					if st.add != nil {
						s.AddKey(*st.add)
					}
					if r := post(call{key: st.key, body: chat("gpt-4o")}); r.status != st.wantStatus {
						t.Fatalf("step %d (%s): %d, want %d: %s", i, st.key, r.status, st.wantStatus, r.body)
					}
				}
			})
		})
	}
}
