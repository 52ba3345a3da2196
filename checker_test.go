package keypool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// checkSetup starts the fake with keys, a transport over the same keys, and
// a fast checker.
func checkSetup(t *testing.T, topts []keypool.Option, copts []keypool.CheckOption, keys ...fakeopenai.Key) (*fakeopenai.Server, *keypool.Transport, *keypool.Checker) {
	fake, _, tr, c := checkSetupURL(t, topts, copts, keys...)
	return fake, tr, c
}

// checkSetupURL is checkSetup that also returns the fake's base URL.
func checkSetupURL(t *testing.T, topts []keypool.Option, copts []keypool.CheckOption, keys ...fakeopenai.Key) (*fakeopenai.Server, string, *keypool.Transport, *keypool.Checker) {
	t.Helper()
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	var creds []keypool.Key
	for _, k := range keys {
		creds = append(creds, keypool.NewKey(k.Secret))
	}
	tr, err := keypool.New(append([]keypool.Option{keypool.WithUpstreams(keypool.Upstream{BaseURL: base, Keys: creds})}, topts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := keypool.NewChecker(tr, append([]keypool.CheckOption{keypool.WithCheckRate(1000), keypool.WithCheckConcurrency(8)}, copts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return fake, base, tr, c
}

func resultFor(t *testing.T, results []keypool.CheckResult, secret string) keypool.CheckResult {
	t.Helper()
	id := keypool.NewKey(secret).ID()
	for _, r := range results {
		if r.Key == id {
			return r
		}
	}
	t.Fatalf("no result for %s", id)
	return keypool.CheckResult{}
}

func TestCheckFirstCheck(t *testing.T) {
	fake, tr, c := checkSetup(t, nil, nil,
		fakeopenai.Key{Secret: "sk-paid"},
		fakeopenai.Key{Secret: "sk-trial", Trial: true},
		fakeopenai.Key{Secret: "sk-revoked", Behavior: fakeopenai.Revoked},
		fakeopenai.Key{Secret: "sk-quota", Behavior: fakeopenai.OverQuota},
		fakeopenai.Key{Secret: "sk-billing", Behavior: fakeopenai.BillingInactive},
		fakeopenai.Key{Secret: "sk-banned", Behavior: fakeopenai.Terminated},
		fakeopenai.Key{Secret: "sk-few", Models: []string{"gpt-4o-mini", "gpt-4o-mini-2024-07-18"}},
	)
	results, err := c.CheckAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 7 {
		t.Fatalf("%d results", len(results))
	}
	tests := []struct {
		secret string
		state  keypool.State
		trial  bool
		limit  int64
	}{
		{"sk-paid", keypool.StateReady, false, 3000},
		{"sk-trial", keypool.StateReady, true, 200},
		{"sk-revoked", keypool.StateRevoked, false, -1},
		{"sk-quota", keypool.StateOverQuota, false, -1},
		{"sk-billing", keypool.StateOverQuota, false, -1},
		{"sk-banned", keypool.StateRevoked, false, -1},
		{"sk-few", keypool.StateReady, false, 3000},
	}
	for _, tt := range tests {
		t.Run(tt.secret, func(t *testing.T) {
			r := resultFor(t, results, tt.secret)
			if r.State != tt.state || r.Trial != tt.trial || r.LimitRequests != tt.limit || r.Err != nil {
				t.Fatalf("result %+v", r)
			}
			if tt.state == keypool.StateReady && (len(r.Models) == 0 || !strings.HasPrefix(r.Organization, "org-")) {
				t.Fatalf("models %v org %q", r.Models, r.Organization)
			}
		})
	}
	// Nothing was spent: the probe is refused before it costs anything.
	for _, rec := range fake.Records() {
		if rec.Spent {
			t.Fatalf("a check spent quota: %+v", rec)
		}
	}
	// The model list now steers traffic: a gpt-4o request never goes to the
	// key that lacks the gpt-4o family.
	for range 6 {
		resp, _ := post(t, tr, chatBody("gpt-4o", false))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if n := fake.Completions("sk-few"); n != 0 {
		t.Fatalf("a key without gpt-4o served it %d times", n)
	}
	// Trial keys lose the image families.
	info := stateOf(t, tr, "sk-trial")
	if !slices.Contains(info.Models, "gpt-image-1") {
		t.Fatal("the trial key's model list lacks gpt-image-1; the test cannot tell")
	}
	req, _ := http.NewRequest("POST", "http://client.invalid/v1/images/generations", strings.NewReader(`{"model":"gpt-image-1","prompt":"a cat"}`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, rec := range fake.Records() {
		if rec.Key == "sk-trial" && rec.Path == "/v1/images/generations" {
			t.Fatalf("the trial key was sent an image request: %+v", rec)
		}
	}
}

// TestCheckDrainedTrialIsRateLimited: a trial key whose requests for the day
// are spent is alive, only resting (the seed's rule took it for over quota,
// which kept it out until an operator asked for a recheck).
func TestCheckDrainedTrialIsRateLimited(t *testing.T) {
	_, base, _, c := checkSetupURL(t, nil, nil, fakeopenai.Key{Secret: "sk-trial", Trial: true, RPM: 1}, fakeopenai.Key{Secret: "sk-paid", TPM: 100})
	// Both keys spent elsewhere: the trial key's requests for the day, the
	// paid key's tokens for the minute (3 prompt tokens + 97 = 100).
	for _, secret := range []string{"sk-trial", "sk-paid"} {
		body := `{"model":"gpt-4o","messages":[{"role":"user","content":"hello there"}],"max_tokens":97}`
		req, _ := http.NewRequest("POST", base+"/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	results, _ := c.CheckAll(context.Background())
	if r := resultFor(t, results, "sk-trial"); r.State != keypool.StateReady || r.Reason != "checked (rate-limited)" || !r.Trial {
		t.Fatalf("drained trial key: %+v", r)
	}
	if r := resultFor(t, results, "sk-paid"); r.State != keypool.StateReady {
		t.Fatalf("rate-limited paid key: %+v", r)
	}
}

func TestCheckOrganizationClones(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-multi", Orgs: []fakeopenai.Org{
			{ID: "org-home", Title: "Home", Default: true},
			{ID: "org-work", Title: "Work", RPM: 5},
			{ID: "org-lab", Title: "Lab", RPM: 7},
		}},
		fakeopenai.Key{Secret: "sk-svcacct-robot"})
	tr, _ := keypool.New(keypool.WithUpstream(base, "sk-multi,sk-svcacct-robot"))
	c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
	results, err := c.CheckAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	multi := keypool.NewKey("sk-multi")
	work, lab := multi.WithOrganization("org-work").ID(), multi.WithOrganization("org-lab").ID()
	var ids []keypool.KeyID
	for _, r := range results {
		ids = append(ids, r.Key)
	}
	want := []keypool.KeyID{multi.ID(), work, lab, keypool.NewKey("sk-svcacct-robot").ID()}
	if !slices.Equal(ids, want) {
		t.Fatalf("result order %v, want %v", ids, want)
	}
	if r := results[0]; r.Organization != "org-home" || len(r.Clones) != 2 || r.Clone {
		t.Fatalf("parent %+v", r)
	}
	// Each clone is checked on its own, with its own org header and quota.
	if r := results[1]; !r.Clone || r.Organization != "org-work" || r.LimitRequests != 5 || r.State != keypool.StateReady {
		t.Fatalf("work clone %+v", r)
	}
	if r := results[2]; r.LimitRequests != 7 {
		t.Fatalf("lab clone %+v", r)
	}
	var orgHeaders []string
	for _, rec := range fake.Records() {
		if rec.Key == "sk-multi" && rec.Path == "/v1/chat/completions" {
			orgHeaders = append(orgHeaders, rec.Org)
		}
		if rec.Key == "sk-svcacct-robot" && rec.Org != "" {
			t.Fatalf("a service-account key was sent an organization: %+v", rec)
		}
	}
	slices.Sort(orgHeaders)
	if !slices.Equal(orgHeaders, []string{"", "org-lab", "org-work"}) {
		t.Fatalf("probes sent with org headers %q", orgHeaders)
	}
	// The clones serve traffic under their own organization.
	if len(tr.Snapshot()) != 4 {
		t.Fatalf("%d keys in the pool", len(tr.Snapshot()))
	}
	served := map[string]int{}
	for range 9 {
		resp, _ := post(t, tr, chatBody("gpt-4o", false))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	for _, rec := range fake.Records() {
		if rec.Spent {
			served[rec.OrgUsed]++
		}
	}
	if len(served) < 2 {
		t.Fatalf("traffic used only %v", served)
	}
	// A second pass does not clone again.
	results, _ = c.CheckAll(context.Background())
	if len(results) != 4 || len(tr.Snapshot()) != 4 {
		t.Fatalf("second pass: %d results, %d keys", len(results), len(tr.Snapshot()))
	}
}

func TestCheckUnverifiedOrganization(t *testing.T) {
	fake, tr, c := checkSetup(t, nil, nil,
		fakeopenai.Key{Secret: "sk-unverified", Unverified: true, Trial: false},
		fakeopenai.Key{Secret: "sk-verified"})
	if _, err := c.CheckAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	fake.Reset()
	// Streaming gpt-5: the unverified key refuses it, the request fails over,
	// and the key learns it may not stream gpt-5.
	var outcomes []string
	for range 4 {
		resp, b := post(t, tr, chatBody("gpt-5", true))
		if resp.StatusCode != 200 || !strings.Contains(string(b), "[DONE]") {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
	}
	for _, r := range fake.Records() {
		outcomes = append(outcomes, fmt.Sprintf("%s:%d", r.Key, r.Status))
	}
	refused := 0
	for _, o := range outcomes {
		if o == "sk-unverified:400" {
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("the unverified key was asked to stream %d times: %v", refused, outcomes)
	}
	if info := stateOf(t, tr, "sk-unverified"); !slices.Equal(info.NoStream, []string{"gpt-5"}) || info.State != keypool.StateReady {
		t.Fatalf("unverified key %+v", info)
	}
	// It still serves gpt-5 without streaming, and images go to the verified key.
	fake.Reset()
	for range 4 {
		post(t, tr, chatBody("gpt-5", false))
	}
	if fake.Completions("sk-unverified") == 0 {
		t.Fatal("the unverified key no longer serves gpt-5 at all")
	}
	fake.Reset()
	for range 3 {
		req, _ := http.NewRequest("POST", "http://client.invalid/v1/images/generations", strings.NewReader(`{"model":"gpt-image-1","prompt":"a cat"}`))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("image status %d", resp.StatusCode)
		}
	}
	if n := fake.Count("sk-unverified"); n > 1 {
		t.Fatalf("the unverified key got %d image requests", n)
	}
}

func TestCheckedKeysOnly(t *testing.T) {
	fake, tr, c := checkSetup(t, []keypool.Option{keypool.WithCheckedKeysOnly(true), keypool.WithMaxWait(0)}, nil,
		fakeopenai.Key{Secret: "sk-a"})
	req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
	resp, err := tr.RoundTrip(req)
	if nk, ok := keypool.Refusal(resp); err != nil || !ok || !errors.Is(nk, keypool.ErrNoKey) || len(fake.Records()) != 0 {
		t.Fatalf("an unchecked key was used: %v", err)
	}
	c.CheckAll(context.Background())
	if resp, _ := post(t, tr, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
		t.Fatalf("status %d after the check", resp.StatusCode)
	}
}

// TestCheckRun covers the checker's life under synctest: pacing, periodic
// rechecks, Recheck on demand giving a revoked key a new look, a network
// error retried a minute later, and a clean stop.
func TestCheckRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var keys []fakeopenai.Key
		var secrets []string
		for i := range 20 {
			s := fmt.Sprintf("sk-run-%02d", i)
			keys = append(keys, fakeopenai.Key{Secret: s})
			secrets = append(secrets, s)
		}
		keys[3].Behavior = fakeopenai.Revoked
		fake := fakeopenai.New(fakeopenai.Config{}, keys...)
		pipe, closePipe := fakeopenai.ServePipe(fake)
		defer closePipe()
		defer fake.Close()
		flaky := &failFirst{base: pipe, fail: map[string]int{"Bearer sk-run-07": 1}}
		tr, err := keypool.New(keypool.WithBase(flaky), keypool.WithUpstream(fakeopenai.PipeBaseURL, strings.Join(secrets, ",")))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var checks []time.Time
		c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(10), keypool.WithCheckConcurrency(3),
			keypool.WithRecheckEvery(time.Hour), keypool.WithCheckRetryDelay(time.Minute),
			keypool.WithCheckObserver(keypool.ObserverFuncs{OnChecked: func(r keypool.CheckResult) {
				mu.Lock()
				checks = append(checks, time.Now())
				mu.Unlock()
			}}))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		start := time.Now()
		go func() { done <- c.Run(ctx) }()

		synctest.Wait()
		time.Sleep(2 * time.Second) // fake time: the first pass is paced at 10/s
		synctest.Wait()
		mu.Lock()
		first := len(checks)
		last := checks[len(checks)-1]
		mu.Unlock()
		if first != 20 || last.Sub(start) < 1900*time.Millisecond || last.Sub(start) > 2*time.Second {
			t.Fatalf("first pass: %d checks, last at %v", first, last.Sub(start))
		}
		k7 := keypool.NewKey("sk-run-07").ID()
		if info, _ := tr.Pool().Key(k7); info.State != keypool.StateUnchecked {
			t.Fatalf("key with a network error: %v", info.State)
		}
		time.Sleep(time.Minute) // the network error is retried a minute later
		synctest.Wait()
		if info, _ := tr.Pool().Key(k7); info.State != keypool.StateReady {
			t.Fatalf("after the retry: %v", info.State)
		}

		fake.SetBehavior("sk-run-03", fakeopenai.OK)      // the key was fixed
		fake.SetBehavior("sk-run-05", fakeopenai.Revoked) // and another one revoked
		c.Recheck()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		k3 := keypool.NewKey("sk-run-03").ID()
		if info, _ := tr.Pool().Key(k3); info.State != keypool.StateReady {
			t.Fatalf("revoked key after Recheck: %v", info.State)
		}
		mu.Lock()
		afterRecheck := len(checks)
		mu.Unlock()
		if afterRecheck != 20+1+20 {
			t.Fatalf("%d checks after the recheck", afterRecheck)
		}
		if info, _ := tr.Pool().Key(keypool.NewKey("sk-run-05").ID()); info.State != keypool.StateRevoked {
			t.Fatalf("key revoked since: %v", info.State)
		}
		time.Sleep(time.Hour) // the periodic recheck skips the revoked key
		synctest.Wait()
		mu.Lock()
		if len(checks) != afterRecheck+19 {
			t.Fatalf("%d checks after an hour, want %d", len(checks), afterRecheck+19)
		}
		mu.Unlock()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run returned %v", err)
		}
		for _, r := range fake.Records() {
			if r.Spent {
				t.Fatalf("a check spent quota: %+v", r)
			}
		}
	})
}

// failFirst fails the first n requests of a key with a network error.
type failFirst struct {
	base http.RoundTripper
	mu   sync.Mutex
	fail map[string]int
}

func (f *failFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	auth := req.Header.Get("Authorization")
	n := f.fail[auth]
	if n > 0 {
		f.fail[auth] = n - 1
	}
	f.mu.Unlock()
	if n > 0 {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errors.New("connection reset by peer")
	}
	return f.base.RoundTrip(req)
}

func TestCheckOptions(t *testing.T) {
	tr, _ := keypool.New(keypool.WithUpstream("https://api.openai.com/v1", "sk-x"))
	for _, o := range []keypool.CheckOption{keypool.WithCheckRate(0), keypool.WithCheckConcurrency(0),
		keypool.WithRecheckEvery(-time.Second), keypool.WithCheckRetryDelay(0)} {
		if _, err := keypool.NewChecker(tr, o); err == nil {
			t.Errorf("option %T accepted a bad value", o)
		}
	}
}

func TestCheckUnreachableUpstream(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL + "/v1"
	dead.Close()
	tr, _ := keypool.New(keypool.WithUpstream(url, "sk-gone"))
	c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
	results, err := c.CheckAll(context.Background())
	if err != nil || len(results) != 1 || results[0].Err == nil || results[0].State != keypool.StateUnchecked {
		t.Fatalf("results %+v err %v", results, err)
	}
	if strings.Contains(results[0].Err.Error(), "sk-gone") {
		t.Fatal("the error shows the key")
	}
}

// TestCheckFallbacks wraps the fake: an upstream without /v1/me (the key's
// organizations come from /v1/organizations), and one whose probe answers
// something unexpected (the key is let through).
func TestCheckFallbacks(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-older", Orgs: []fakeopenai.Org{{ID: "org-one", Default: true}, {ID: "org-two"}}},
		fakeopenai.Key{Secret: "sk-odd"})
	defer fake.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/me":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"message":"Invalid URL (GET /v1/me)","type":"invalid_request_error","param":null,"code":null}}`)
		case r.URL.Path == "/v1/chat/completions" && r.Header.Get("Authorization") == "Bearer sk-odd":
			w.WriteHeader(http.StatusTeapot)
		default:
			fake.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	tr, _ := keypool.New(keypool.WithUpstream(srv.URL+"/v1", "sk-older,sk-odd"))
	c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
	results, err := c.CheckAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := resultFor(t, results, "sk-older"); r.Organization != "org-one" || len(r.Clones) != 1 {
		t.Fatalf("organizations from the fallback: %+v", r)
	}
	if r := resultFor(t, results, "sk-odd"); r.State != keypool.StateReady || !strings.Contains(r.Reason, "unexpected 418") {
		t.Fatalf("unexpected probe answer: %+v", r)
	}
}

// TestCheckUsesPoolPolicy: the probe's answer means what the pool's Policy
// says, so a user's WithPolicy applies to checks as it does to requests;
// and under the default policy a 429 without a known type reads as the
// rate limit the transport takes it for (the checker used to call it
// "unexpected").
func TestCheckUsesPoolPolicy(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-geo"}, fakeopenai.Key{Secret: "sk-busy"}, fakeopenai.Key{Secret: "sk-fine"})
	defer fake.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			fake.ServeHTTP(w, r)
			return
		}
		switch r.Header.Get("Authorization") {
		case "Bearer sk-geo":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","param":null,"code":"unsupported_country_region_territory"}}`)
		case "Bearer sk-busy":
			w.WriteHeader(http.StatusTooManyRequests) // a gateway's, without a body
		default:
			fake.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	geoRevokes := keypool.PolicyFunc(func(a *keypool.Answer) keypool.Outcome {
		if a.Error != nil && a.Error.Code == "unsupported_country_region_territory" {
			return keypool.OutcomeRevoked
		}
		return keypool.DefaultPolicy().Classify(a)
	})
	for _, tc := range []struct {
		name      string
		policy    keypool.Policy
		geo       keypool.State
		geoReason string
	}{
		{"default policy", nil, keypool.StateReady, "checked (unexpected 403)"},
		{"user policy", geoRevokes, keypool.StateRevoked, "check: 403 unsupported_country_region_territory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, _ := keypool.New(keypool.WithUpstream(srv.URL+"/v1", "sk-geo,sk-busy,sk-fine"), keypool.WithPolicy(tc.policy))
			defer tr.CloseIdleConnections()
			c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
			results, err := c.CheckAll(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if r := resultFor(t, results, "sk-geo"); r.State != tc.geo || r.Reason != tc.geoReason {
				t.Errorf("sk-geo: %v %q; want %v %q", r.State, r.Reason, tc.geo, tc.geoReason)
			}
			if r := resultFor(t, results, "sk-busy"); r.State != keypool.StateReady || r.Reason != "checked (rate-limited)" {
				t.Errorf("sk-busy: %v %q", r.State, r.Reason)
			}
			if r := resultFor(t, results, "sk-fine"); r.State != keypool.StateReady || r.Reason != "checked" {
				t.Errorf("sk-fine: %v %q", r.State, r.Reason)
			}
		})
	}
}

// TestCheckResultsReachObservers: every check result goes to the
// transport's observers and to the checker's own, the one Observer shape.
func TestCheckResultsReachObservers(t *testing.T) {
	var transportObs, checkerObs recorder
	_, _, c := checkSetup(t, []keypool.Option{keypool.WithObserver(&transportObs)},
		[]keypool.CheckOption{keypool.WithCheckObserver(&checkerObs), keypool.WithCheckObserver(nil)},
		fakeopenai.Key{Secret: "sk-a"}, fakeopenai.Key{Secret: "sk-b", Behavior: fakeopenai.Revoked})
	results, err := c.CheckAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*recorder{"transport's": &transportObs, "checker's": &checkerObs} {
		r.mu.Lock()
		if len(r.checks) != len(results) {
			t.Errorf("the %s observer heard %d checks, want %d", name, len(r.checks), len(results))
		}
		for _, got := range r.checks {
			if !slices.ContainsFunc(results, func(res keypool.CheckResult) bool { return res.Key == got.Key && res.State == got.State }) {
				t.Errorf("the %s observer heard %+v, not a result", name, got)
			}
		}
		r.mu.Unlock()
	}
}

// F1: a context with a deadline makes rate.Limiter.Wait fail at once (not
// with ctx.Err) for every key whose turn falls after the deadline; pass()
// drops those keys silently and CheckAll reports success.
func TestCheckAllDeadlineReportsDroppedKeys(t *testing.T) {
	_, _, _, c := checkSetupURL(t, nil, []keypool.CheckOption{keypool.WithCheckRate(0.1)},
		fakeopenai.Key{Secret: "sk-a"}, fakeopenai.Key{Secret: "sk-b"}, fakeopenai.Key{Secret: "sk-c"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	results, err := c.CheckAll(ctx)
	if len(results) != 3 && err == nil {
		t.Fatalf("CheckAll checked %d of 3 keys and returned no error", len(results))
	}
}

// F3: with WithCheckedKeysOnly, Enable puts a key back as unchecked, which
// that option keeps out of selection until the next check (an hour later by
// default): Enable does not return the key to selection.
func TestEnableUnderCheckedKeysOnlyReturnsKey(t *testing.T) {
	_, tr, c := checkSetup(t, []keypool.Option{keypool.WithCheckedKeysOnly(true)}, nil, fakeopenai.Key{Secret: "sk-a"})
	if _, err := c.CheckAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := keypool.NewKey("sk-a").ID()
	p := tr.Pool()
	if err := p.Disable(id, "ops"); err != nil {
		t.Fatal(err)
	}
	if err := p.Enable(id); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("after Enable, the only key takes no request: %v", err)
	}
	resp.Body.Close()
}

// F4: a transient 5xx (or 429) from /v1/me and /v1/organizations is taken as
// "this key cannot list organizations" for good: orgsKnown is set, and no
// later check (Recheck, periodic, CheckAll) ever lists them again, so the
// key's other organizations are never cloned.
func TestTransientOrgErrorListsOrganizationsAgain(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-multi", Orgs: []fakeopenai.Org{{ID: "org-home", Default: true}, {ID: "org-work"}}})
	defer fake.Close()
	var down atomicBool
	down.set(true)
	srv := httptestServer(func(w http.ResponseWriter, r *http.Request) {
		if down.get() && (r.URL.Path == "/v1/me" || r.URL.Path == "/v1/organizations") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"message":"The server is overloaded","type":"server_error","param":null,"code":null}}`)
			return
		}
		fake.ServeHTTP(w, r)
	})
	defer srv.Close()
	tr, _ := keypool.New(keypool.WithUpstream(srv.URL+"/v1", "sk-multi"))
	c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
	if _, err := c.CheckAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	down.set(false) // the outage is over
	results, err := c.CheckAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tr.Snapshot()); n != 2 {
		t.Fatalf("after the outage the pool still has %d key(s), no clone for org-work; results %+v", n, results)
	}
}

type atomicBool struct{ v atomic.Bool }

func (b *atomicBool) set(x bool) { b.v.Store(x) }

func (b *atomicBool) get() bool { return b.v.Load() }

func httptestServer(f http.HandlerFunc) *httptest.Server { return httptest.NewServer(f) }
