package keypool_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

// memStore is a StateStore in memory: the latest state of each key, and
// every state it was given. onSave, when set, runs in Save.
type memStore struct {
	mu     sync.Mutex
	latest map[keypool.KeyID]keypool.KeyState
	saved  []keypool.KeyState
	onSave func(keypool.KeyState)
}

func newMemStore() *memStore { return &memStore{latest: map[keypool.KeyID]keypool.KeyState{}} }

func (m *memStore) Load(context.Context) ([]keypool.KeyState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]keypool.KeyState, 0, len(m.latest))
	for _, st := range m.latest {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b keypool.KeyState) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out, nil
}

func (m *memStore) Save(st keypool.KeyState) {
	if m.onSave != nil {
		m.onSave(st)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saved = append(m.saved, st)
	if old, ok := m.latest[st.ID]; !ok || !st.Updated.Before(old.Updated) {
		m.latest[st.ID] = st
	}
}

func (m *memStore) state(id keypool.KeyID) (keypool.KeyState, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.latest[id]
	return st, ok
}

// takeSaved returns the states saved since the last call.
func (m *memStore) takeSaved() []keypool.KeyState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.saved
	m.saved = nil
	return out
}

// loadFunc is a StateStore that loads with a func and saves nothing.
type loadFunc func(context.Context) ([]keypool.KeyState, error)

func (f loadFunc) Load(ctx context.Context) ([]keypool.KeyState, error) { return f(ctx) }
func (f loadFunc) Save(keypool.KeyState)                                {}

// syncBuffer is a log destination safe for the goroutines that log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func ids(secrets ...string) []keypool.KeyID {
	var out []keypool.KeyID
	for _, s := range secrets {
		out = append(out, keypool.NewKey(s).ID())
	}
	return out
}

// TestStateStoreRestart: a pool learns, through its checker, a revoked key,
// an over-quota key, a trial key, a model list and an organization clone,
// and saves them. A second pool over the same keys and store starts from
// them: it sends no request to the revoked and over-quota keys, uses the
// checked keys at once (WithCheckedKeysOnly), has the clone without asking,
// and its checker checks none of the restored keys at start, each once its
// recheck is due, and then only those that may take requests.
func TestStateStoreRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []fakeopenai.Key{
			{Secret: "sk-rs-ok"},
			{Secret: "sk-rs-revoked", Behavior: fakeopenai.Revoked},
			{Secret: "sk-rs-quota", Behavior: fakeopenai.OverQuota},
			{Secret: "sk-rs-trial", Trial: true},
			{Secret: "sk-rs-few", Models: []string{"gpt-4o-mini", "gpt-4o-mini-2024-07-18"}},
			{Secret: "sk-rs-multi", Orgs: []fakeopenai.Org{{ID: "org-rshome", Title: "Home", Default: true}, {ID: "org-rswork", Title: "Work"}}},
		}
		var secrets []string
		for _, k := range keys {
			secrets = append(secrets, k.Secret)
		}
		fake := fakeopenai.New(fakeopenai.Config{}, keys...)
		pipe, closePipe := fakeopenai.ServePipe(fake)
		defer closePipe()
		defer fake.Close()
		store := newMemStore()
		newTransport := func(opts ...keypool.Option) *keypool.Transport {
			tr, err := keypool.New(append([]keypool.Option{keypool.WithBase(pipe),
				keypool.WithUpstream(fakeopenai.PipeBaseURL, strings.Join(secrets, ",")), keypool.WithStateStore(store)}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			return tr
		}

		tr1 := newTransport()
		c1, _ := keypool.NewChecker(tr1, keypool.WithCheckRate(1000))
		if _, err := c1.CheckAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		before := tr1.Snapshot()
		if len(before) != 7 {
			t.Fatalf("%d keys after the check, want 6 and a clone", len(before))
		}
		clone := keypool.NewKey("sk-rs-multi").WithOrganization("org-rswork").ID()
		for _, ki := range before {
			st, ok := store.state(ki.ID)
			if !ok {
				t.Fatalf("no state saved for %s", ki.ID)
			}
			if st.State != ki.State || st.Reason != ki.Reason || !st.Checked.Equal(ki.LastChecked) || st.Trial != ki.Trial ||
				st.Organization != ki.Organization || st.Scope != ki.Scope || !slices.Equal(st.Models, ki.Models) || st.Upstream != ki.Upstream {
				t.Fatalf("saved %+v\nfor %+v", st, ki)
			}
		}
		if st, _ := store.state(keypool.NewKey("sk-rs-multi").ID()); !slices.Equal(st.Clones, []string{"org-rswork"}) || !st.OrgsKnown {
			t.Fatalf("the multi-organization key's state %+v", st)
		}
		for secret, want := range map[string]keypool.State{"sk-rs-revoked": keypool.StateRevoked, "sk-rs-quota": keypool.StateOverQuota} {
			if st, _ := store.state(keypool.NewKey(secret).ID()); st.State != want {
				t.Fatalf("%s saved as %v", secret, st.State)
			}
		}
		if st, _ := store.state(keypool.NewKey("sk-rs-trial").ID()); !st.Trial {
			t.Fatal("the trial key was not saved as a trial")
		}

		// A restart: the second pool holds back unchecked keys, so every
		// request it serves shows a restored check.
		seen := len(fake.Records())
		tr2 := newTransport(keypool.WithCheckedKeysOnly(true))
		after := tr2.Snapshot()
		if len(after) != len(before) {
			t.Fatalf("%d keys after the restart, want %d", len(after), len(before))
		}
		for i, b := range before {
			a := after[i]
			if a.ID != b.ID || a.State != b.State || a.Reason != b.Reason || !a.Since.Equal(b.Since) || !a.LastChecked.Equal(b.LastChecked) ||
				a.Trial != b.Trial || a.Organization != b.Organization || a.Scope != b.Scope || a.Clone != b.Clone ||
				!slices.Equal(a.Models, b.Models) || !slices.Equal(a.NoStream, b.NoStream) {
				t.Fatalf("restored %+v\nwas %+v", a, b)
			}
		}
		if n := tr2.Pool().Counts().Usable; n != 5 {
			t.Fatalf("%d usable keys after the restart, want 5", n)
		}
		for range 20 {
			if resp, b := post(t, tr2, chatBody("gpt-4o-mini", false)); resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, b)
			}
		}
		for _, r := range fake.Records()[seen:] {
			if r.Key == "sk-rs-revoked" || r.Key == "sk-rs-quota" {
				t.Fatalf("a request went to a key known to be bad: %+v", r)
			}
			if r.Path != "/v1/chat/completions" || r.Model != "gpt-4o-mini" {
				t.Fatalf("a request other than traffic: %+v", r)
			}
		}
		seen = len(fake.Records())

		var mu sync.Mutex
		var checked []keypool.KeyID
		c2, _ := keypool.NewChecker(tr2, keypool.WithCheckRate(1000), keypool.WithRecheckEvery(time.Hour),
			keypool.WithCheckObserver(keypool.ObserverFuncs{OnChecked: func(r keypool.CheckResult) {
				mu.Lock()
				checked = append(checked, r.Key)
				mu.Unlock()
			}}))
		checkedSorted := func() []keypool.KeyID {
			mu.Lock()
			defer mu.Unlock()
			out := slices.Clone(checked)
			slices.Sort(out)
			return out
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- c2.Run(ctx) }()
		synctest.Wait()
		if got := checkedSorted(); len(got) != 0 || len(fake.Records()) != seen {
			t.Fatalf("checked at start: %v, %d requests", got, len(fake.Records())-seen)
		}

		time.Sleep(time.Hour + time.Second) // the restored checks are due
		synctest.Wait()
		all := append(ids(secrets...), clone)
		slices.Sort(all)
		if got := checkedSorted(); !slices.Equal(got, all) {
			t.Fatalf("checked once due: %v, want every key once: %v", got, all)
		}
		time.Sleep(time.Hour) // the next rechecks leave out the revoked and over-quota keys
		synctest.Wait()
		want := append(slices.Clone(all), append(ids("sk-rs-ok", "sk-rs-trial", "sk-rs-few", "sk-rs-multi"), clone)...)
		slices.Sort(want)
		if got := checkedSorted(); !slices.Equal(got, want) {
			t.Fatalf("checked after two hours: %v\nwant %v", got, want)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestStateStoreRemembersWhatAnswersTeach: what answers teach survives a
// restart too: a model an unverified organization may not stream (its
// streams then go to another key without a failover), and a key's rest
// after repeated failures.
func TestStateStoreRemembersWhatAnswersTeach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []fakeopenai.Key{
			{Secret: "sk-rt-unverified", Unverified: true},
			{Secret: "sk-rt-flaky", Behavior: fakeopenai.Flaky, FailFirst: 1, FailEvery: 1},
			{Secret: "sk-rt-good"},
		}
		fake := fakeopenai.New(fakeopenai.Config{}, keys...)
		pipe, closePipe := fakeopenai.ServePipe(fake)
		defer closePipe()
		defer fake.Close()
		store := newMemStore()
		newTransport := func(secrets ...string) *keypool.Transport {
			tr, err := keypool.New(keypool.WithBase(pipe), keypool.WithStateStore(store),
				keypool.WithUpstream(fakeopenai.PipeBaseURL, strings.Join(secrets, ",")),
				keypool.WithFailureCooldown(2, time.Minute, time.Hour), keypool.WithBackoff(time.Millisecond, time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			return tr
		}
		tr1 := newTransport("sk-rt-unverified", "sk-rt-good")
		c1, _ := keypool.NewChecker(tr1, keypool.WithCheckRate(1000))
		if _, err := c1.CheckAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		if resp, b := post(t, tr1, chatBody("gpt-5", true)); resp.StatusCode != 200 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
		unverified := keypool.NewKey("sk-rt-unverified").ID()
		if st, _ := store.state(unverified); !slices.Contains(st.NoStream, "gpt-5") {
			t.Fatalf("the unverified key's state %+v", st)
		}
		seen := len(fake.Records())
		tr2 := newTransport("sk-rt-unverified", "sk-rt-good")
		for range 4 {
			if resp, b := post(t, tr2, chatBody("gpt-5", true)); resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, b)
			}
		}
		for _, r := range fake.Records()[seen:] {
			if r.Key == "sk-rt-unverified" {
				t.Fatalf("a stream went to the key that may not stream it: %+v", r)
			}
		}

		// Two failures in a row rest the flaky key for a minute.
		tr3 := newTransport("sk-rt-flaky")
		for range 2 {
			post(t, tr3, chatBody("gpt-4o", false))
		}
		flaky := keypool.NewKey("sk-rt-flaky").ID()
		st, _ := store.state(flaky)
		if !st.Cooldown.After(time.Now()) {
			t.Fatalf("the flaky key's state %+v has no rest", st)
		}
		tr4 := newTransport("sk-rt-flaky")
		if info, _ := tr4.Pool().Key(flaky); info.State != keypool.StateCooling || !info.CoolingUntil.Equal(st.Cooldown) {
			t.Fatalf("restored as %v until %v, want cooling until %v", info.State, info.CoolingUntil, st.Cooldown)
		}
		time.Sleep(time.Until(st.Cooldown) + time.Second)
		tr5 := newTransport("sk-rt-flaky") // a rest that has ended is not restored
		if info, _ := tr5.Pool().Key(flaky); info.State == keypool.StateCooling {
			t.Fatalf("restored cooling until %v after the rest ended", info.CoolingUntil)
		}
	})
}

// TestStateStoreSavesChangesOnly: a key's first answer changes its state
// and its scope at once, which saves its state once; answers that change
// nothing save nothing. Save runs without the pool's lock held.
func TestStateStoreSavesChangesOnly(t *testing.T) {
	var mu sync.Mutex
	served := map[string]bool{}
	all := make(chan struct{})
	rt := rvRT(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		served[r.Header.Get("Authorization")] = true
		if len(served) == 3 && r.Context().Err() == nil {
			select {
			case <-all:
			default:
				close(all)
			}
		}
		mu.Unlock()
		<-all // the first answers wait until each key has a request
		return rvOK(r, map[string]string{"Openai-Organization": "acme", "X-Ratelimit-Limit-Requests": "10000",
			"X-Ratelimit-Remaining-Requests": "9999", "X-Ratelimit-Reset-Requests": "6ms"}, nil), nil
	})
	store := newMemStore()
	var tr *keypool.Transport
	store.onSave = func(keypool.KeyState) {
		done := make(chan struct{})
		go func() {
			tr.Pool().Counts() // takes the pool's lock
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Save was called with the pool's lock held")
		}
	}
	// With one request per key before its first answer, three requests at
	// once go to the three keys.
	tr, err := keypool.New(keypool.WithBase(rt), keypool.WithUpstream("http://upstream.invalid/v1", "sk-sc-a,sk-sc-b,sk-sc-c"),
		keypool.WithStateStore(store), keypool.WithProbeLimit(1))
	if err != nil {
		t.Fatal(err)
	}
	if saved := store.takeSaved(); len(saved) != 0 {
		t.Fatalf("New saved %d states", len(saved))
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()
	saved := store.takeSaved()
	got := map[keypool.KeyID]int{}
	for _, st := range saved {
		got[st.ID]++
		if st.State != keypool.StateReady || st.Scope != "acme" || st.Reason != "answered" {
			t.Fatalf("saved %+v", st)
		}
	}
	for _, id := range ids("sk-sc-a", "sk-sc-b", "sk-sc-c") {
		if got[id] != 1 {
			t.Fatalf("saves per key %v, want one each", got)
		}
	}
	for range 100 {
		if resp, b := post(t, tr, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
	}
	if saved := store.takeSaved(); len(saved) != 0 {
		t.Fatalf("plain successes saved %d states: %+v", len(saved), saved[0])
	}
	// An operator's action is a change.
	if err := tr.Pool().Disable(keypool.NewKey("sk-sc-b").ID(), "by hand"); err != nil {
		t.Fatal(err)
	}
	if saved := store.takeSaved(); len(saved) != 1 || saved[0].State != keypool.StateDisabled || saved[0].Reason != "disabled: by hand" {
		t.Fatalf("Disable saved %+v", saved)
	}
}

// TestStateStoreRestoresOnlyValid: a store may hold other programs' data,
// older formats, keys no longer configured: a restore never panics, takes
// the latest state of each key, and applies only what a pool would have
// saved.
func TestStateStoreRestoresOnlyValid(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	id := func(secret string) keypool.KeyID { return keypool.NewKey(secret).ID() }
	st := func(secret string, s keypool.State, updated time.Duration) keypool.KeyState {
		return keypool.KeyState{ID: id(secret), Upstream: "main", State: s, Reason: "saved", Checked: now.Add(-time.Minute),
			Updated: now.Add(updated)}
	}
	with := func(k keypool.KeyState, f func(*keypool.KeyState)) keypool.KeyState { f(&k); return k }
	states := []keypool.KeyState{
		{}, // nothing at all
		{ID: "sk-gv-a", State: keypool.StateRevoked}, // not a key ID
		st("sk-gv-gone", keypool.StateRevoked, 0),    // a key no longer configured
		st("sk-gv-a", keypool.State(200), 0),
		st("sk-gv-a", keypool.StateCooling, 0),
		with(st("sk-gv-b", keypool.StateRevoked, 0), func(k *keypool.KeyState) { k.Upstream = "other" }),
		st("sk-gv-c", keypool.StateRevoked, -time.Minute),
		st("sk-gv-c", keypool.StateReady, -2*time.Minute), // older: the revoked one wins
		st("sk-gv-d", keypool.StateReady, -2*time.Minute),
		st("sk-gv-d", keypool.StateOverQuota, -time.Minute),
		st("sk-gv-e", keypool.StateDisabled, 0),
		with(st("sk-gv-f", keypool.StateReady, 0), func(k *keypool.KeyState) {
			k.Models = []string{"gpt-4o", ""}
			k.Scope = strings.Repeat("x", 1000)
		}),
		with(st("sk-gv-g", keypool.StateReady, 0), func(k *keypool.KeyState) { k.Cooldown = now.Add(-time.Minute) }),
		with(st("sk-gv-h", keypool.StateReady, 0), func(k *keypool.KeyState) { k.Cooldown = now.Add(10 * time.Minute) }),
		with(st("sk-gv-i", keypool.StateReady, 0), func(k *keypool.KeyState) { k.Cooldown = now.AddDate(100, 0, 0) }),
		with(st("sk-gv-j", keypool.StateReady, 0), func(k *keypool.KeyState) { k.Checked = now.Add(time.Hour) }),
		with(st("sk-svcacct-gv", keypool.StateReady, 0), func(k *keypool.KeyState) { k.Clones = []string{"org-svc"} }),
		with(st("sk-gv-l", keypool.StateReady, 0), func(k *keypool.KeyState) { k.Clones = []string{"org-ok", "not-an-org"} }),
		with(st("sk-gv-m", keypool.StateReady, 0), func(k *keypool.KeyState) {
			k.Organization = "evil\x00"
			k.Clones = []string{"org-one", "org-two"}
			k.OrgsKnown = true
		}),
		{ID: keypool.NewKey("sk-gv-m").WithOrganization("org-one").ID(), Upstream: "main", State: keypool.StateRevoked, Updated: now},
		{ID: keypool.NewKey("sk-gv-a").WithOrganization("org-zzz").ID(), Upstream: "main", State: keypool.StateRevoked, Updated: now},
		with(st("sk-gv-n", keypool.StateReady, -time.Minute), func(k *keypool.KeyState) {
			k.Scope, k.NoStream, k.Trial = "acme", []string{"gpt-5"}, true
		}),
		with(st("sk-gv-o", keypool.StateReady, 0), func(k *keypool.KeyState) {
			k.Scope, k.Models = "acme", []string{"gpt-4o-mini", "gpt-4o", "gpt-4o"}
		}),
	}
	secrets := []string{"sk-gv-a", "sk-gv-b", "sk-gv-c", "sk-gv-d", "sk-gv-e", "sk-gv-f", "sk-gv-g", "sk-gv-h", "sk-gv-i",
		"sk-gv-j", "sk-svcacct-gv", "sk-gv-l", "sk-gv-m", "sk-gv-n", "sk-gv-o"}
	var logs syncBuffer
	tr, err := keypool.New(keypool.WithClock(func() time.Time { return now }),
		keypool.WithUpstreams(keypool.Upstream{Name: "main", BaseURL: "https://api.test/v1", Keys: keysOf(secrets...)}),
		keypool.WithStateStore(loadFunc(func(context.Context) ([]keypool.KeyState, error) { return states, nil })),
		keypool.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	info := func(id keypool.KeyID) keypool.KeyInfo {
		t.Helper()
		ki, ok := tr.Pool().Key(id)
		if !ok {
			t.Fatalf("no key %s", id)
		}
		return ki
	}
	tests := []struct {
		name  string
		id    keypool.KeyID
		state keypool.State
		check func(keypool.KeyInfo) bool
	}{
		{"bad states leave a key as it was", id("sk-gv-a"), keypool.StateUnchecked, func(ki keypool.KeyInfo) bool { return ki.LastChecked.IsZero() }},
		{"another upstream's state is not this one's", id("sk-gv-b"), keypool.StateUnchecked, nil},
		{"the later state wins", id("sk-gv-c"), keypool.StateRevoked, nil},
		{"the later state wins, in any order", id("sk-gv-d"), keypool.StateOverQuota, nil},
		{"disabled", id("sk-gv-e"), keypool.StateDisabled, nil},
		{"a bad model list and scope are left out", id("sk-gv-f"), keypool.StateReady, func(ki keypool.KeyInfo) bool {
			return ki.Models == nil && ki.Scope == "" && ki.Reason == "saved"
		}},
		{"a rest that ended", id("sk-gv-g"), keypool.StateReady, nil},
		{"a rest to come", id("sk-gv-h"), keypool.StateCooling, func(ki keypool.KeyInfo) bool { return ki.CoolingUntil.Equal(now.Add(10 * time.Minute)) }},
		{"a rest beyond reason", id("sk-gv-i"), keypool.StateCooling, func(ki keypool.KeyInfo) bool { return ki.CoolingUntil.Equal(now.Add(24 * time.Hour)) }},
		{"a check in the future", id("sk-gv-j"), keypool.StateReady, func(ki keypool.KeyInfo) bool { return ki.LastChecked.Equal(now) }},
		{"a service account has no clones", id("sk-svcacct-gv"), keypool.StateReady, nil},
		{"a bad clone list is left out", id("sk-gv-l"), keypool.StateReady, nil},
		{"a bad organization is left out", id("sk-gv-m"), keypool.StateReady, func(ki keypool.KeyInfo) bool { return ki.Organization == "" }},
		{"a clone's own state", keypool.NewKey("sk-gv-m").WithOrganization("org-one").ID(), keypool.StateRevoked, func(ki keypool.KeyInfo) bool {
			return ki.Clone && ki.Organization == "org-one"
		}},
		{"a clone without a state", keypool.NewKey("sk-gv-m").WithOrganization("org-two").ID(), keypool.StateUnchecked, func(ki keypool.KeyInfo) bool {
			return ki.Clone && ki.Organization == "org-two"
		}},
		// The organization's latest state says what it may stream and
		// its models and tier; a key's own check (N's) still shows its tier.
		{"an organization's earlier state", id("sk-gv-n"), keypool.StateReady, func(ki keypool.KeyInfo) bool {
			return ki.Scope == "acme" && ki.NoStream == nil && ki.Trial && slices.Equal(ki.Models, []string{"gpt-4o", "gpt-4o-mini"})
		}},
		{"an organization's latest state", id("sk-gv-o"), keypool.StateReady, func(ki keypool.KeyInfo) bool {
			return ki.Scope == "acme" && ki.NoStream == nil && !ki.Trial && slices.Equal(ki.Models, []string{"gpt-4o", "gpt-4o-mini"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ki := info(tt.id)
			if ki.State != tt.state || tt.check != nil && !tt.check(ki) {
				t.Fatalf("restored %+v", ki)
			}
		})
	}
	if n := len(tr.Snapshot()); n != len(secrets)+2 {
		t.Fatalf("%d keys, want %d and two clones", n, len(secrets))
	}
	out := logs.String()
	if !strings.Contains(out, "restored=14 ignored=5") || !strings.Contains(out, "states=8") || !strings.Contains(out, "do not decode") {
		t.Fatalf("log:\n%s", out)
	}
	if strings.Contains(out, "sk-gv") {
		t.Fatalf("the log shows a secret:\n%s", out)
	}
}

func keysOf(secrets ...string) []keypool.Key {
	var out []keypool.Key
	for _, s := range secrets {
		out = append(out, keypool.NewKey(s))
	}
	return out
}

// TestStateStoreLoadFails: a store that fails, or does not answer within
// its bound even when it ignores its context, does not stop New: the pool
// starts without its states, and the log says why once.
func TestStateStoreLoadFails(t *testing.T) {
	tests := []struct {
		name string
		load func(ctx context.Context, release <-chan struct{}) ([]keypool.KeyState, error)
		took time.Duration
		log  string
	}{
		{"error", func(context.Context, <-chan struct{}) ([]keypool.KeyState, error) {
			return []keypool.KeyState{{ID: keypool.NewKey("sk-lf").ID(), State: keypool.StateRevoked}}, errors.New("records: database is locked")
		}, 0, "database is locked"},
		{"heeds its context", func(ctx context.Context, _ <-chan struct{}) ([]keypool.KeyState, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, 5 * time.Second, "timed out"},
		{"ignores its context", func(_ context.Context, release <-chan struct{}) ([]keypool.KeyState, error) {
			<-release
			return nil, nil
		}, 5 * time.Second, "timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				release := make(chan struct{})
				defer close(release)
				var logs syncBuffer
				start := time.Now()
				tr, err := keypool.New(keypool.WithUpstream("http://upstream.invalid/v1", "sk-lf"),
					keypool.WithBase(rvRT(func(r *http.Request) (*http.Response, error) { return rvOK(r, nil, nil), nil })),
					keypool.WithStateStore(loadFunc(func(ctx context.Context) ([]keypool.KeyState, error) { return tt.load(ctx, release) })),
					keypool.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
				if err != nil {
					t.Fatal(err)
				}
				if took := time.Since(start); took != tt.took {
					t.Fatalf("New took %v, want %v", took, tt.took)
				}
				out := logs.String()
				if strings.Count(out, "\n") != 1 || !strings.Contains(out, "level=WARN") || !strings.Contains(out, tt.log) || strings.Contains(out, "sk-lf") {
					t.Fatalf("log:\n%s", out)
				}
				if info := tr.Snapshot()[0]; info.State != keypool.StateUnchecked {
					t.Fatalf("state %v", info.State)
				}
				if resp, b := post(t, tr, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
					t.Fatalf("status %d %s", resp.StatusCode, b)
				}
			})
		})
	}
}

// TestKeyStateHoldsNoSecret: a saved state shows its key by ID only, under
// every verb and in JSON, and its JSON reads back to the same state.
func TestKeyStateHoldsNoSecret(t *testing.T) {
	const secret = "sk-ks-SECRETSECRET"
	rt := rvRT(func(r *http.Request) (*http.Response, error) {
		return rvOK(r, map[string]string{"Openai-Organization": "acme"}, nil), nil
	})
	store := newMemStore()
	tr, err := keypool.New(keypool.WithBase(rt), keypool.WithStateStore(store),
		keypool.WithUpstreams(keypool.Upstream{BaseURL: "http://upstream.invalid/v1",
			Keys: []keypool.Key{keypool.NewKey(secret), keypool.NewKey(secret).WithOrganization("org-ks")}}))
	if err != nil {
		t.Fatal(err)
	}
	post(t, tr, chatBody("gpt-4o", false))
	for _, k := range tr.Snapshot() {
		if err := tr.Pool().Disable(k.ID, "leak test"); err != nil {
			t.Fatal(err)
		}
	}
	saved := store.takeSaved()
	if len(saved) < 2 {
		t.Fatalf("%d states saved", len(saved))
	}
	for _, st := range saved {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			if out := fmt.Sprintf(verb, st); strings.Contains(out, "SECRETSECRET") || strings.Contains(out, fmt.Sprintf("%x", "SECRETSECRET")) {
				t.Fatalf("%s shows the secret: %s", verb, out)
			}
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("SECRETSECRET")) {
			t.Fatalf("JSON shows the secret: %s", b)
		}
		var back keypool.KeyState
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if b2, _ := json.Marshal(back); !bytes.Equal(b, b2) {
			t.Fatalf("JSON round trip:\n%s\n%s", b, b2)
		}
	}
}

// TestCheckRunWithStore covers Run's schedule with a store: each key is
// checked an interval after its own last check, a network error is
// retried, over-quota and revoked keys wait for Recheck, a disabled key is
// left alone until Enable.
func TestCheckRunWithStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []fakeopenai.Key{{Secret: "sk-cs-a"}, {Secret: "sk-cs-b"}, {Secret: "sk-cs-r", Behavior: fakeopenai.Revoked}, {Secret: "sk-cs-n"}}
		fake := fakeopenai.New(fakeopenai.Config{}, keys...)
		pipe, closePipe := fakeopenai.ServePipe(fake)
		defer closePipe()
		defer fake.Close()
		flaky := &failFirst{base: pipe, fail: map[string]int{"Bearer sk-cs-n": 1}}
		tr, err := keypool.New(keypool.WithBase(flaky), keypool.WithStateStore(newMemStore()),
			keypool.WithUpstream(fakeopenai.PipeBaseURL, "sk-cs-a,sk-cs-b,sk-cs-r,sk-cs-n"))
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var checked []keypool.KeyID
		c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000), keypool.WithRecheckEvery(time.Hour), keypool.WithCheckRetryDelay(time.Minute),
			keypool.WithCheckObserver(keypool.ObserverFuncs{OnChecked: func(r keypool.CheckResult) {
				mu.Lock()
				checked = append(checked, r.Key)
				mu.Unlock()
			}}))
		since := 0
		expect := func(when string, secrets ...string) {
			t.Helper()
			synctest.Wait()
			mu.Lock()
			got := slices.Clone(checked[since:])
			since = len(checked)
			mu.Unlock()
			slices.Sort(got)
			want := ids(secrets...)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("%s: checked %v, want %v", when, got, want)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		time.Sleep(time.Second)
		expect("at start", "sk-cs-a", "sk-cs-b", "sk-cs-r", "sk-cs-n")
		time.Sleep(time.Minute)
		expect("a minute after a network error", "sk-cs-n")
		time.Sleep(58*time.Minute + 30*time.Second) // 59:31
		expect("before anything is due")
		time.Sleep(time.Minute) // 1:00:31
		expect("an hour after their checks", "sk-cs-a", "sk-cs-b")
		time.Sleep(time.Minute) // 1:01:31
		expect("an hour after its retry", "sk-cs-n")
		c.Recheck()
		time.Sleep(time.Second)
		expect("on Recheck", "sk-cs-a", "sk-cs-b", "sk-cs-r", "sk-cs-n")
		if err := tr.Pool().Disable(keypool.NewKey("sk-cs-b").ID(), "test"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		expect("an hour after Recheck, one key disabled", "sk-cs-a", "sk-cs-n")
		if err := tr.Pool().Enable(keypool.NewKey("sk-cs-b").ID()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		expect("an hour later, the key enabled", "sk-cs-a", "sk-cs-b", "sk-cs-n")
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
