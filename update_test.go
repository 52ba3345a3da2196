package keypool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// keyIDs are the IDs of secrets, in order.
func keyIDs(secrets ...string) []keypool.KeyID {
	out := make([]keypool.KeyID, len(secrets))
	for i, s := range secrets {
		out[i] = keypool.NewKey(s).ID()
	}
	return out
}

func newKeys(secrets ...string) []keypool.Key {
	out := make([]keypool.Key, len(secrets))
	for i, s := range secrets {
		out[i] = keypool.NewKey(s)
	}
	return out
}

// TestUpdateKeepsWhatWasLearned: a revoked key stays revoked with its
// reason, a disabled one disabled, and a served key keeps its scope, limits
// and usage, across an Update that adds a key; the added key is unchecked
// and takes requests.
func TestUpdateKeepsWhatWasLearned(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-upd-revoked", Behavior: fakeopenai.Revoked},
		fakeopenai.Key{Secret: "sk-upd-good"},
		fakeopenai.Key{Secret: "sk-upd-off"},
	)
	up := keypool.Upstream{Name: "main", BaseURL: base, Keys: newKeys("sk-upd-revoked", "sk-upd-good", "sk-upd-off")}
	tr, err := keypool.New(keypool.WithUpstreams(up))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	off := keypool.NewKey("sk-upd-off").ID()
	if err := tr.Pool().Disable(off, "by test"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := post(t, tr, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	before := map[keypool.KeyID]keypool.KeyInfo{}
	for _, ki := range tr.Snapshot() {
		before[ki.ID] = ki
	}
	ids := keyIDs("sk-upd-revoked", "sk-upd-good", "sk-upd-off", "sk-upd-new")
	if before[ids[0]].State != keypool.StateRevoked || len(before[ids[1]].Limits) == 0 || before[ids[1]].Scope == "" {
		t.Fatalf("setup: the pool learned too little: %+v / %+v", before[ids[0]], before[ids[1]])
	}

	fake.AddKey(fakeopenai.Key{Secret: "sk-upd-new"})
	up.Keys = newKeys("sk-upd-revoked", "sk-upd-good", "sk-upd-off", "sk-upd-new")
	ch, err := tr.Update(up)
	if err != nil {
		t.Fatal(err)
	}
	if want := (keypool.KeyChanges{Added: ids[3:], Kept: ids[:3]}); !slices.Equal(ch.Added, want.Added) || !slices.Equal(ch.Kept, want.Kept) || len(ch.Removed) != 0 {
		t.Fatalf("changes %+v, want %+v", ch, want)
	}
	for _, id := range ids[:3] {
		got, _ := tr.Pool().Key(id)
		was := before[id]
		if got.State != was.State || got.Reason != was.Reason || !got.Since.Equal(was.Since) || got.Scope != was.Scope ||
			got.Organization != was.Organization || len(got.Limits) != len(was.Limits) || !slices.Equal(got.Usage, was.Usage) {
			t.Errorf("key %s changed:\n got %+v\nwant %+v", id, got, was)
		}
	}
	if got, _ := tr.Pool().Key(ids[3]); got.State != keypool.StateUnchecked {
		t.Fatalf("added key: %v", got.State)
	}
	if c := tr.Pool().Counts(); c.In(keypool.StateRevoked) != 1 || c.In(keypool.StateDisabled) != 1 || c.Usable != 2 {
		t.Fatalf("counts %v (usable %d)", c, c.Usable)
	}
	// The good key stays first in the config; once it is disabled the added
	// key serves.
	if err := tr.Pool().Disable(ids[1], "by test"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := post(t, tr, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if served := keysServed(fake); served[len(served)-1] != "sk-upd-new" {
		t.Fatalf("served by %v", served)
	}
}

// TestUpdateRebuiltUpstream: an upstream whose settings change is rebuilt,
// and its keys keep what a store keeps: states and scopes.
func TestUpdateRebuiltUpstream(t *testing.T) {
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-rb-revoked", Behavior: fakeopenai.Revoked},
		fakeopenai.Key{Secret: "sk-rb-good"},
	)
	up := keypool.Upstream{Name: "main", BaseURL: base, Keys: newKeys("sk-rb-revoked", "sk-rb-good")}
	tr, err := keypool.New(keypool.WithUpstreams(up))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	post(t, tr, chatBody("gpt-4o", false))
	ids := keyIDs("sk-rb-revoked", "sk-rb-good")
	was, _ := tr.Pool().Key(ids[0])
	good, _ := tr.Pool().Key(ids[1])

	up.Timeout = time.Minute
	up.Deny = []string{"dall-e-*"}
	ch, err := tr.Update(up)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Kept, ids) || ch.Changed() {
		t.Fatalf("changes %+v", ch)
	}
	if got, _ := tr.Pool().Key(ids[0]); got.State != keypool.StateRevoked || got.Reason != was.Reason {
		t.Fatalf("revoked key after a rebuild: %+v", got)
	}
	if got, _ := tr.Pool().Key(ids[1]); got.Scope != good.Scope || got.State != good.State {
		t.Fatalf("good key after a rebuild: %+v, was %+v", got, good)
	}
	if c := tr.Pool().Counts(); c.Usable != 1 || c.In(keypool.StateRevoked) != 1 {
		t.Fatalf("counts %v", c)
	}
	if resp, _ := post(t, tr, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// gate is an upstream whose answers for one key wait until released.
type gate struct {
	hold    string // the Authorization header whose requests wait
	started chan struct{}
	release chan struct{}
	mu      sync.Mutex
	used    []string
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	auth := req.Header.Get("Authorization")
	g.mu.Lock()
	g.used = append(g.used, auth)
	g.mu.Unlock()
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	if auth == g.hold {
		g.started <- struct{}{}
		<-g.release
	}
	return rvOK(req, map[string]string{"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
		"x-ratelimit-reset-requests": "120ms"}, nil), nil
}

func (g *gate) last() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.used[len(g.used)-1]
}

// TestUpdateDrainsRemovedKey: a removed key takes no new request from the
// moment Update returns, while the request it serves finishes and hands
// its answer back whole.
func TestUpdateDrainsRemovedKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gate{hold: "Bearer sk-drain-a", started: make(chan struct{}), release: make(chan struct{})}
		up := keypool.Upstream{Name: "main", BaseURL: "https://api.example/v1", Keys: newKeys("sk-drain-a")}
		tr, err := keypool.New(keypool.WithBase(g), keypool.WithUpstreams(up))
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			status int
			body   string
			err    error
		}
		first := make(chan result, 1)
		go func() {
			resp, err := tr.RoundTrip(rvPost(context.Background()))
			if err != nil {
				first <- result{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			first <- result{resp.StatusCode, string(b), err}
		}()
		<-g.started // the first request is with sk-drain-a upstream

		up.Keys = newKeys("sk-drain-b")
		ch, err := tr.Update(up)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ch.Removed, keyIDs("sk-drain-a")) || !slices.Equal(ch.Added, keyIDs("sk-drain-b")) {
			t.Fatalf("changes %+v", ch)
		}
		if _, ok := tr.Pool().Key(keyIDs("sk-drain-a")[0]); ok {
			t.Fatal("the removed key is still in the pool")
		}
		for range 3 {
			resp, err := tr.RoundTrip(rvPost(context.Background()))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := g.last(); got != "Bearer sk-drain-b" {
				t.Fatalf("a new request went with %q", got)
			}
		}
		close(g.release)
		r := <-first
		if r.err != nil || r.status != 200 || !strings.Contains(r.body, "usage") {
			t.Fatalf("the removed key's request in flight: %d %q %v", r.status, r.body, r.err)
		}
		resp, err := tr.RoundTrip(rvPost(context.Background()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := g.last(); got != "Bearer sk-drain-b" {
			t.Fatalf("a request after the drain went with %q", got)
		}
		snap := tr.Snapshot()
		if len(snap) != 1 || snap[0].ID != keyIDs("sk-drain-b")[0] || snap[0].InFlight != 0 {
			t.Fatalf("snapshot after the drain: %+v", snap)
		}
		if c := tr.Pool().Counts(); c.Usable != 1 {
			t.Fatalf("counts %v (usable %d)", c, c.Usable)
		}
	})
}

// TestUpdateBadSetChangesNothing: every set New refuses, Update refuses
// too, with the pool as it was.
func TestUpdateBadSetChangesNothing(t *testing.T) {
	good := keypool.Upstream{Name: "main", BaseURL: "https://api.example/v1", Keys: newKeys("sk-bad-a", "sk-bad-b")}
	tests := []struct {
		name string
		ups  []keypool.Upstream
	}{
		{"no upstream", nil},
		{"empty base URL", []keypool.Upstream{{Keys: newKeys("sk-bad-c")}}},
		{"bad scheme", []keypool.Upstream{{BaseURL: "ftp://x", Keys: newKeys("sk-bad-c")}}},
		{"credentials in the URL", []keypool.Upstream{{BaseURL: "https://u:p@x/v1", Keys: newKeys("sk-bad-c")}}},
		{"empty key", []keypool.Upstream{{BaseURL: "https://x/v1", Keys: []keypool.Key{{}}}}},
		{"one key in two upstreams", []keypool.Upstream{good, {Name: "other", BaseURL: "https://y/v1", Keys: newKeys("sk-bad-a")}}},
		{"keys on an upstream without auth", []keypool.Upstream{{BaseURL: "https://x/v1", Auth: keypool.AuthNone, Keys: newKeys("sk-bad-c")}}},
		{"empty model pattern", []keypool.Upstream{{BaseURL: "https://x/v1", Allow: []string{""}, Keys: newKeys("sk-bad-c")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := keypool.New(keypool.WithBase(rvRT(func(r *http.Request) (*http.Response, error) { return rvOK(r, nil, nil), nil })),
				keypool.WithUpstreams(good))
			if err != nil {
				t.Fatal(err)
			}
			if err := tr.Pool().Disable(keyIDs("sk-bad-a")[0], "by test"); err != nil {
				t.Fatal(err)
			}
			before := tr.Snapshot()
			ch, err := tr.Update(tt.ups...)
			if err == nil {
				t.Fatalf("accepted, changes %+v", ch)
			}
			if strings.Contains(err.Error(), "sk-bad") {
				t.Fatalf("the error shows a secret: %v", err)
			}
			after := tr.Snapshot()
			if len(after) != len(before) || after[0].State != keypool.StateDisabled || after[1].ID != before[1].ID {
				t.Fatalf("the pool changed: %+v", after)
			}
			if names := tr.UpstreamNames(); !slices.Equal(names, []string{"main"}) {
				t.Fatalf("upstreams %v", names)
			}
			resp, err := tr.RoundTrip(rvPost(context.Background()))
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("after a refused update: %v", err)
			}
			resp.Body.Close()
		})
	}
}

// TestUpdateRemovesEveryKey: an upstream left without keys refuses every
// request with a NoKeyError that says why, until keys come back.
func TestUpdateRemovesEveryKey(t *testing.T) {
	tr, err := keypool.New(keypool.WithBase(rvRT(func(r *http.Request) (*http.Response, error) { return rvOK(r, nil, nil), nil })),
		keypool.WithUpstreams(keypool.Upstream{Name: "main", BaseURL: "https://api.example/v1", Keys: newKeys("sk-all-a")}),
		keypool.WithMaxWait(0))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Update(keypool.Upstream{Name: "main", BaseURL: "https://api.example/v1"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Removed, keyIDs("sk-all-a")) || len(tr.Snapshot()) != 0 || tr.Pool().Counts().Usable != 0 {
		t.Fatalf("changes %+v, snapshot %+v", ch, tr.Snapshot())
	}
	resp, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	nk, ok := keypool.Refusal(resp)
	if !ok || resp.StatusCode != http.StatusServiceUnavailable || errors.Is(nk, keypool.ErrModelNotFound) || !strings.Contains(nk.Reason, "no key is configured") {
		t.Fatalf("status %d, refusal %v", resp.StatusCode, nk)
	}
	if _, err := tr.Update(keypool.Upstream{Name: "main", BaseURL: "https://api.example/v1", Keys: newKeys("sk-all-b")}); err != nil {
		t.Fatal(err)
	}
	resp, err = tr.RoundTrip(rvPost(context.Background()))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("keys back: %v", err)
	}
	resp.Body.Close()
}

// TestUpdateUpstreams: upstreams are added, removed and reordered by name,
// and a request goes to the first that serves it.
func TestUpdateUpstreams(t *testing.T) {
	var mu sync.Mutex
	var hosts []string
	tr, err := keypool.New(keypool.WithBase(rvRT(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		hosts = append(hosts, r.URL.Host)
		mu.Unlock()
		return rvOK(r, nil, nil), nil
	})), keypool.WithUpstreams(
		keypool.Upstream{Name: "one", BaseURL: "https://one.example/v1", Keys: newKeys("sk-ups-1")},
		keypool.Upstream{Name: "two", BaseURL: "https://two.example/v1", Keys: newKeys("sk-ups-2")},
	), keypool.WithUpstreamOrder(keypool.OrderRandom))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Update(
		keypool.Upstream{Name: "three", BaseURL: "https://three.example/v1", Keys: newKeys("sk-ups-3")},
		keypool.Upstream{Name: "local", BaseURL: "http://127.0.0.1:1/v1", Auth: keypool.AuthNone},
		keypool.Upstream{Name: "two", BaseURL: "https://two.example/v1", Keys: newKeys("sk-ups-2")},
	)
	if err != nil {
		t.Fatal(err)
	}
	if names := tr.UpstreamNames(); !slices.Equal(names, []string{"three", "local", "two"}) {
		t.Fatalf("upstreams %v", names)
	}
	if !slices.Equal(ch.Removed, keyIDs("sk-ups-1")) || !slices.Equal(ch.Kept, keyIDs("sk-ups-2")) || len(ch.Added) != 2 {
		t.Fatalf("changes %+v", ch)
	}
	for range 20 {
		resp, err := tr.RoundTrip(rvPost(context.Background()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range hosts {
		if h == "one.example" {
			t.Fatalf("a request went to a removed upstream: %v", hosts)
		}
	}
}

// TestUpdateChecker: a running Checker checks the keys Update adds, at
// once, and never checks a removed key again.
func TestUpdateChecker(t *testing.T) {
	for _, withStore := range []bool{false, true} {
		t.Run(fmt.Sprintf("store=%v", withStore), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-chk-a"}, fakeopenai.Key{Secret: "sk-chk-b"})
				pipe, closePipe := fakeopenai.ServePipe(fake)
				defer closePipe()
				defer fake.Close()
				up := keypool.Upstream{Name: "main", BaseURL: fakeopenai.PipeBaseURL, Keys: newKeys("sk-chk-a")}
				opts := []keypool.Option{keypool.WithBase(pipe), keypool.WithUpstreams(up)}
				if withStore {
					opts = append(opts, keypool.WithStateStore(nopStore{}))
				}
				tr, err := keypool.New(opts...)
				if err != nil {
					t.Fatal(err)
				}
				c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(100), keypool.WithRecheckEvery(time.Hour))
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error)
				go func() { done <- c.Run(ctx) }()
				time.Sleep(time.Second)
				synctest.Wait()
				if fake.Count("sk-chk-a") == 0 {
					t.Fatal("the first key was not checked")
				}
				up.Keys = newKeys("sk-chk-b")
				if _, err := tr.Update(up); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Second)
				synctest.Wait()
				if got, _ := tr.Pool().Key(keyIDs("sk-chk-b")[0]); got.State != keypool.StateReady || got.LastChecked.IsZero() {
					t.Fatalf("the added key a second after the update: %+v", got)
				}
				a := fake.Count("sk-chk-a")
				c.Recheck()
				time.Sleep(2 * time.Hour) // past a periodic recheck too
				synctest.Wait()
				if n := fake.Count("sk-chk-a"); n != a {
					t.Fatalf("the removed key was checked %d more times", n-a)
				}
				cancel()
				<-done
			})
		})
	}
}

// nopStore is a StateStore that keeps nothing: with a store, the Checker
// schedules each key on its own.
type nopStore struct{}

func (nopStore) Load(context.Context) ([]keypool.KeyState, error) { return nil, nil }
func (nopStore) Save(keypool.KeyState)                            {}

// TestUpdateUnderLoad swaps key sets while requests flow, some of them
// failing over, and checks that the pool's books balance after: every
// request ended, nothing is left in flight, and the counts match the keys.
func TestUpdateUnderLoad(t *testing.T) {
	tr, err := keypool.New(keypool.WithBase(rvRT(func(r *http.Request) (*http.Response, error) {
		if strings.HasSuffix(r.Header.Get("Authorization"), "3") {
			return &http.Response{StatusCode: 500, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
		}
		return rvOK(r, nil, nil), nil
	})), keypool.WithUpstreams(keypool.Upstream{Name: "main", BaseURL: "https://api.example/v1", Keys: newKeys("sk-load-1", "sk-load-2")}),
		keypool.WithBackoff(time.Millisecond, time.Millisecond), keypool.WithMaxWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sets := [][]keypool.Upstream{
		{{Name: "main", BaseURL: "https://api.example/v1", Keys: newKeys("sk-load-2", "sk-load-3")}},
		{{Name: "main", BaseURL: "https://api.example/v1"}},
		{{Name: "main", BaseURL: "https://api.example/v1", Timeout: time.Minute, Keys: newKeys("sk-load-1", "sk-load-3")},
			{Name: "spare", BaseURL: "https://spare.example/v1", Keys: newKeys("sk-load-4")}},
		{{Name: "main", BaseURL: "https://api.example/v1", Keys: newKeys("sk-load-1", "sk-load-2")}},
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := tr.RoundTrip(rvPost(context.Background()))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				tr.Snapshot()
			}
		})
	}
	for i := range 200 {
		if _, err := tr.Update(sets[i%len(sets)]...); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	snap := tr.Snapshot()
	usable := 0
	for _, ki := range snap {
		if ki.InFlight != 0 {
			t.Errorf("key %s: %d in flight after every request ended", ki.ID, ki.InFlight)
		}
		if ki.State.Usable() {
			usable++
		}
	}
	if c := tr.Pool().Counts(); c.Usable != usable || len(snap) != 2 {
		t.Fatalf("counts %v (usable %d), snapshot of %d keys with %d usable", c, c.Usable, len(snap), usable)
	}
}

// savedStore is a StateStore that holds a fixed set of states.
type savedStore struct {
	nopStore
	states []keypool.KeyState
}

func (s savedStore) Load(context.Context) ([]keypool.KeyState, error) { return s.states, nil }

// TestUpdateRestoresAddedKeys: with a StateStore, a key Update adds starts
// from what the store knows of it, as a key New holds does.
func TestUpdateRestoresAddedKeys(t *testing.T) {
	added := keypool.NewKey("sk-saved-b").ID()
	checked := time.Now().Add(-time.Minute).Round(0)
	store := savedStore{states: []keypool.KeyState{{ID: added, Upstream: "main", State: keypool.StateRevoked,
		Reason: "401 invalid_request_error/invalid_api_key", Since: checked, Checked: checked, Updated: checked}}}
	up := keypool.Upstream{Name: "main", BaseURL: "https://api.example/v1", Keys: newKeys("sk-saved-a")}
	tr, err := keypool.New(keypool.WithBase(rvRT(func(r *http.Request) (*http.Response, error) { return rvOK(r, nil, nil), nil })),
		keypool.WithUpstreams(up), keypool.WithStateStore(store))
	if err != nil {
		t.Fatal(err)
	}
	up.Keys = newKeys("sk-saved-a", "sk-saved-b")
	if _, err := tr.Update(up); err != nil {
		t.Fatal(err)
	}
	got, _ := tr.Pool().Key(added)
	if got.State != keypool.StateRevoked || got.Reason != store.states[0].Reason || !got.LastChecked.Equal(checked) {
		t.Fatalf("the added key: %+v", got)
	}
	if c := tr.Pool().Counts(); c.Usable != 1 || c.In(keypool.StateRevoked) != 1 {
		t.Fatalf("counts %v", c)
	}
}

// TestUpdateMovedKey: a key moved to another upstream (as when an unnamed
// upstream before it is removed, and the names by host shift) keeps what a
// store keeps of it, and the one it left no longer holds it.
func TestUpdateMovedKey(t *testing.T) {
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: "sk-mv-revoked", Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: "sk-mv-good"})
	first := keypool.Upstream{BaseURL: base, Keys: newKeys("sk-mv-good")}
	second := keypool.Upstream{BaseURL: base, Keys: newKeys("sk-mv-revoked")}
	tr, err := keypool.New(keypool.WithUpstreams(second, first))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	post(t, tr, chatBody("gpt-4o", false)) // the revoked key first, then the good one
	revoked := keyIDs("sk-mv-revoked")[0]
	was, _ := tr.Pool().Key(revoked)
	if was.State != keypool.StateRevoked {
		t.Fatalf("setup: %+v", was)
	}
	ch, err := tr.Update(first, second) // the names by host trade places
	if err != nil {
		t.Fatal(err)
	}
	got, _ := tr.Pool().Key(revoked)
	if got.State != keypool.StateRevoked || got.Reason != was.Reason || got.Upstream == was.Upstream || ch.Changed() {
		t.Fatalf("the moved key: %+v, was %+v; changes %+v", got, was, ch)
	}
	if snap := tr.Snapshot(); len(snap) != 2 || tr.Pool().Counts().Usable != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
}
