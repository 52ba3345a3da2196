package keypool_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// pipeSetup serves keys from the fake over in-memory pipes (for synctest)
// and builds a transport over one upstream of them.
func pipeSetup(t *testing.T, opts []keypool.Option, keys ...fakeopenai.Key) (*fakeopenai.Server, *keypool.Transport) {
	t.Helper()
	fake := fakeopenai.New(fakeopenai.Config{}, keys...)
	pipe, closePipe := fakeopenai.ServePipe(fake)
	t.Cleanup(func() {
		closePipe()
		fake.Close()
	})
	var creds []keypool.Key
	for _, k := range keys {
		creds = append(creds, keypool.NewKey(k.Secret))
	}
	tr, err := keypool.New(append([]keypool.Option{keypool.WithBase(pipe),
		keypool.WithUpstreams(keypool.Upstream{BaseURL: fakeopenai.PipeBaseURL, Keys: creds})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return fake, tr
}

// TestOrganizationSharesOneBudget: three keys of one organization spend one
// budget of 6 requests a minute. Once each has answered (and so named its
// organization), they share what is left: 6 served, and the rest refused
// with when to come back. A key whose organization is not known yet may
// meet one 429 that teaches it (at most one per such key); with a checker,
// /v1/me names the organization before any traffic.
func TestOrganizationSharesOneBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		org := fakeopenai.Org{ID: "org-shared000000000000000", Title: "Acme", Slug: "acme", RPM: 6}
		var keys []fakeopenai.Key
		for i := range 3 {
			keys = append(keys, fakeopenai.Key{Secret: fmt.Sprintf("sk-acme-%d", i), Orgs: []fakeopenai.Org{org}})
		}
		fake, tr := pipeSetup(t, []keypool.Option{keypool.WithMaxWait(0)}, keys...)
		served, refused := 0, 0
		for range 12 {
			resp, _ := post(t, tr, chatBody("gpt-4o", false))
			switch resp.StatusCode {
			case 200:
				served++
			case 429:
				if resp.Header.Get("Retry-After") == "" {
					t.Fatalf("a 429 that says not when to come back: %v", resp.Header)
				}
				refused++
			default:
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		n429 := 0
		for _, r := range fake.Records() {
			if r.Status == http.StatusTooManyRequests {
				n429++
			}
		}
		if n429 > len(keys)-1 {
			t.Fatalf("the upstream answered %d 429s: more than one per key that had not named its organization", n429)
		}
		if served != 6 || refused != 6 {
			t.Fatalf("served %d, refused %d; want 6 and 6", served, refused)
		}
		for _, k := range tr.Snapshot() {
			if k.Scope != "acme" {
				t.Fatalf("key %s in scope %q, want acme", k.ID, k.Scope)
			}
		}
	})
}

// TestFixedWindowIsLearned: a key whose limit counts in fixed windows and
// whose 429s carry no Retry-After is not tried again before its window ends.
func TestFixedWindowIsLearned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key := fakeopenai.Key{Secret: "sk-window", RPM: 5, Window: 10 * time.Second, NoRetryAfter: true}
		fake, tr := pipeSetup(t, []keypool.Option{keypool.WithMaxWait(time.Minute)}, key)
		start := time.Now()
		for i := range 12 {
			resp, b := post(t, tr, chatBody("gpt-4o", false))
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: status %d %s", i+1, resp.StatusCode, b)
			}
		}
		// 12 requests in windows of 5: served in the first three windows.
		if took := time.Since(start); took < 20*time.Second || took > 21*time.Second {
			t.Fatalf("took %v, want the third window (20s)", took)
		}
		n429 := 0
		for _, r := range fake.Records() {
			if r.Status == http.StatusTooManyRequests {
				n429++
			}
		}
		if n429 > 1 {
			t.Fatalf("%d upstream 429s: the pool tried the window before its end", n429)
		}
		var windowed bool
		for _, l := range tr.Snapshot()[0].Limits {
			windowed = windowed || l.Windowed
		}
		if !windowed {
			t.Fatalf("the snapshot does not show a windowed budget: %+v", tr.Snapshot()[0].Limits)
		}
	})
}

// TestRefusalSaysWhenFarAhead: a daily limit whose next slot is hours away
// is still refused with when to come back, and marked not to retry now.
func TestRefusalSaysWhenFarAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key := fakeopenai.Key{Secret: "sk-daily", Trial: true, RPM: 2}
		_, tr := pipeSetup(t, []keypool.Option{keypool.WithMaxWait(0)}, key)
		for range 2 {
			if resp, _ := post(t, tr, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		resp, _ := post(t, tr, chatBody("gpt-4o", false))
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		if resp.StatusCode != 429 || ra < 3600 || resp.Header.Get("X-Should-Retry") != "false" {
			t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
		}
	})
}
