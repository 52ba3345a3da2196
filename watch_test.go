package keypool_test

import (
	"context"
	"io"
	"net/http"
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

// replicaBus joins StateSubscribers in memory: what one replica saves is
// applied at once, from the saving goroutine, by every other one.
type replicaBus struct {
	mu       sync.Mutex
	replicas []*replicaStore
}

// replicaStore is one replica's StateSubscriber on a replicaBus. It counts
// the states it is given to save.
type replicaStore struct {
	bus   *replicaBus
	saves atomic.Int64
	mu    sync.Mutex
	apply func(keypool.KeyState)
}

func (b *replicaBus) store() *replicaStore {
	s := &replicaStore{bus: b}
	b.mu.Lock()
	b.replicas = append(b.replicas, s)
	b.mu.Unlock()
	return s
}

func (s *replicaStore) Load(context.Context) ([]keypool.KeyState, error) { return nil, nil }

func (s *replicaStore) Subscribe(apply func(keypool.KeyState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apply != nil {
		panic("Subscribe called twice")
	}
	s.apply = apply
}

func (s *replicaStore) Save(st keypool.KeyState) {
	s.saves.Add(1)
	s.bus.mu.Lock()
	others := slices.Clone(s.bus.replicas)
	s.bus.mu.Unlock()
	for _, o := range others {
		if o != s {
			o.hear(st)
		}
	}
}

// hear hands st to the pool subscribed to s.
func (s *replicaStore) hear(st keypool.KeyState) {
	s.mu.Lock()
	apply := s.apply
	s.mu.Unlock()
	if apply != nil {
		apply(st)
	}
}

// revokingBase answers 401 invalid_api_key for the keys in revoked and 200
// otherwise, and counts the requests each key is sent.
type revokingBase struct {
	revoked map[string]bool
	mu      sync.Mutex
	sent    map[string]int
}

func (b *revokingBase) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	b.mu.Lock()
	if b.sent == nil {
		b.sent = map[string]int{}
	}
	b.sent[secret]++
	b.mu.Unlock()
	if b.revoked[secret] {
		return &http.Response{StatusCode: 401, Header: http.Header{"Content-Type": {"application/json"}}, Request: r,
			Body: io.NopCloser(strings.NewReader(`{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`))}, nil
	}
	return rvOK(r, nil, nil), nil
}

func (b *revokingBase) requests(secret string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent[secret]
}

// TestReplicasShareRevoked: pool A learns from an answer that a key is
// revoked; pool B, over the same keys, applies A's state at once, tells its
// observers, sends that key no request, and saves nothing back.
func TestReplicasShareRevoked(t *testing.T) {
	const keys = "sk-rp-bad,sk-rp-a,sk-rp-c" // the first pick is the first key
	bus := &replicaBus{}
	storeA, storeB := bus.store(), bus.store()
	baseA := &revokingBase{revoked: map[string]bool{"sk-rp-bad": true}}
	baseB := &revokingBase{revoked: map[string]bool{"sk-rp-bad": true}}
	var mu sync.Mutex
	var eventsB []keypool.StateEvent
	trA, err := keypool.New(keypool.WithBase(baseA), keypool.WithUpstream("http://upstream.invalid/v1", keys), keypool.WithStateStore(storeA))
	if err != nil {
		t.Fatal(err)
	}
	trB, err := keypool.New(keypool.WithBase(baseB), keypool.WithUpstream("http://upstream.invalid/v1", keys), keypool.WithStateStore(storeB),
		keypool.WithObserver(keypool.ObserverFuncs{OnStateChange: func(ev keypool.StateEvent) {
			mu.Lock()
			eventsB = append(eventsB, ev)
			mu.Unlock()
		}}))
	if err != nil {
		t.Fatal(err)
	}
	bad := keypool.NewKey("sk-rp-bad").ID()
	for i := 0; baseA.requests("sk-rp-bad") == 0; i++ {
		if i == 10 {
			t.Fatalf("A never sent the revoked key a request: %v", baseA.sent)
		}
		if resp, b := post(t, trA, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
			t.Fatalf("A: status %d %s", resp.StatusCode, b)
		}
	}
	for range 10 {
		post(t, trA, chatBody("gpt-4o", false))
	}
	if baseA.requests("sk-rp-bad") != 1 {
		t.Fatalf("A sent the revoked key %d requests", baseA.requests("sk-rp-bad"))
	}
	if ki, _ := trA.Pool().Key(bad); ki.State != keypool.StateRevoked {
		t.Fatalf("A: %v", ki.State)
	}
	if ki, _ := trB.Pool().Key(bad); ki.State != keypool.StateRevoked || !strings.Contains(ki.Reason, "invalid_api_key") {
		t.Fatalf("B: %+v", ki)
	}
	if n := storeB.saves.Load(); n != 0 {
		t.Fatalf("B saved %d states it only heard of", n)
	}
	mu.Lock()
	got := slices.Clone(eventsB)
	mu.Unlock()
	revokedEvents := 0
	for _, ev := range got {
		if ev.Key == bad {
			revokedEvents++
			if ev.From != keypool.StateUnchecked || ev.To != keypool.StateRevoked || !ev.Heard {
				t.Fatalf("B's observer heard %+v", ev)
			}
		}
	}
	if revokedEvents != 1 {
		t.Fatalf("B's observer heard %+v", got)
	}
	savesA := storeA.saves.Load()
	for range 30 {
		if resp, b := post(t, trB, chatBody("gpt-4o", false)); resp.StatusCode != 200 {
			t.Fatalf("B: status %d %s", resp.StatusCode, b)
		}
	}
	if n := baseB.requests("sk-rp-bad"); n != 0 {
		t.Fatalf("B sent the key A found revoked %d requests", n)
	}
	if baseB.requests("sk-rp-a")+baseB.requests("sk-rp-c") != 30 {
		t.Fatalf("B's requests: %v", baseB.sent)
	}
	// B's own first answers are changes of its own, which A applies and
	// does not save back.
	if n := storeA.saves.Load(); n != savesA {
		t.Fatalf("A saved %d states after B's traffic", n-savesA)
	}
}

// TestReplicaStateOrder: of two states of a key the later one wins in
// whatever order they come; a state heard again changes nothing; and a
// change made after hearing of a state wins over it, even one made by a
// clock that is behind.
func TestReplicaStateOrder(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	bus := &replicaBus{}
	store := bus.store()
	other := bus.store() // stands for another replica: it hears what this one saves
	var heard []keypool.KeyState
	other.apply = func(st keypool.KeyState) { heard = append(heard, st) }
	var events []keypool.StateEvent
	tr, err := keypool.New(keypool.WithClock(func() time.Time { return now }), keypool.WithStateStore(store),
		keypool.WithUpstreams(keypool.Upstream{Name: "main", BaseURL: "https://api.test/v1", Keys: keysOf("sk-or-a", "sk-or-b")}),
		keypool.WithObserver(keypool.ObserverFuncs{OnStateChange: func(ev keypool.StateEvent) { events = append(events, ev) }}))
	if err != nil {
		t.Fatal(err)
	}
	id := keypool.NewKey("sk-or-a").ID()
	st := func(s keypool.State, reason string, updated time.Duration) keypool.KeyState {
		return keypool.KeyState{ID: id, Upstream: "main", State: s, Reason: reason, Since: now.Add(updated), Updated: now.Add(updated)}
	}
	state := func() keypool.KeyInfo {
		t.Helper()
		ki, _ := tr.Pool().Key(id)
		return ki
	}
	steps := []struct {
		name   string
		hear   keypool.KeyState
		state  keypool.State
		events int
	}{
		{"a revoked key", st(keypool.StateRevoked, "revoked there", -time.Minute), keypool.StateRevoked, 1},
		{"an older state", st(keypool.StateReady, "ready there", -2*time.Minute), keypool.StateRevoked, 0},
		{"the same state again", st(keypool.StateRevoked, "revoked there", -time.Minute), keypool.StateRevoked, 0},
		{"a later one", st(keypool.StateOverQuota, "over quota there", -30*time.Second), keypool.StateOverQuota, 1},
		{"a clock a little ahead", st(keypool.StateDisabled, "disabled there", 30*time.Second), keypool.StateDisabled, 1},
		{"a clock far ahead", st(keypool.StateReady, "ready there", time.Hour), keypool.StateDisabled, 0},
		{"another upstream", func() keypool.KeyState {
			s := st(keypool.StateReady, "x", 40*time.Second)
			s.Upstream = "other"
			return s
		}(), keypool.StateDisabled, 0},
	}
	for _, s := range steps {
		events = nil
		store.hear(s.hear)
		if ki := state(); ki.State != s.state || len(events) != s.events {
			t.Fatalf("%s: %v (%s), events %+v", s.name, ki.State, ki.Reason, events)
		}
	}
	if n := store.saves.Load(); n != 0 {
		t.Fatalf("%d states heard were saved", n)
	}
	// The operator enables the key here, with a clock 30s behind the
	// state's: its state is stamped after it, so that it wins everywhere,
	// and hearing the disabled state again does not undo it.
	if err := tr.Pool().Enable(id); err != nil {
		t.Fatal(err)
	}
	if len(heard) != 1 || heard[0].State != keypool.StateUnchecked || !heard[0].Updated.After(now.Add(30*time.Second)) {
		t.Fatalf("the other replica heard %+v", heard)
	}
	store.hear(st(keypool.StateDisabled, "disabled there", 30*time.Second))
	if ki := state(); ki.State != keypool.StateUnchecked {
		t.Fatalf("after Enable, hearing an older state again: %v", ki.State)
	}
}

// TestReplicaChecks: a key another replica checked is not checked here
// until its recheck is due, counted from that check.
func TestReplicaChecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []fakeopenai.Key{{Secret: "sk-rc-a"}, {Secret: "sk-rc-b"}}
		fake := fakeopenai.New(fakeopenai.Config{}, keys...)
		pipe, closePipe := fakeopenai.ServePipe(fake)
		defer closePipe()
		defer fake.Close()
		bus := &replicaBus{}
		var mu sync.Mutex
		checks := map[string]int{}
		replica := func(name string) *keypool.Checker {
			tr, err := keypool.New(keypool.WithBase(pipe), keypool.WithStateStore(bus.store()),
				keypool.WithUpstream(fakeopenai.PipeBaseURL, "sk-rc-a,sk-rc-b"))
			if err != nil {
				t.Fatal(err)
			}
			c, err := keypool.NewChecker(tr, keypool.WithCheckRate(1000), keypool.WithRecheckEvery(time.Hour),
				keypool.WithCheckObserver(keypool.ObserverFuncs{OnChecked: func(keypool.CheckResult) {
					mu.Lock()
					checks[name]++
					mu.Unlock()
				}}))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		a := replica("A")
		expect := func(when string, wantA, wantB int) {
			t.Helper()
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			if checks["A"] != wantA || checks["B"] != wantB {
				t.Fatalf("%s: checks %v, want A %d, B %d", when, checks, wantA, wantB)
			}
			clear(checks)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { a.Run(ctx) })
		time.Sleep(time.Second)
		expect("A at start", 2, 0)
		// B starts ten minutes later, with nothing in its store's Load:
		// both keys are new to it, and A's checks reach it only from now.
		time.Sleep(10 * time.Minute)
		b := replica("B")
		wg.Go(func() { b.Run(ctx) })
		time.Sleep(time.Second)
		expect("B at start", 0, 2)
		time.Sleep(20 * time.Minute) // 0:30:02
		a.Recheck()
		time.Sleep(time.Second)
		expect("A's recheck", 2, 0)
		// B's own schedule falls due at 1:10:01, but A checked both keys at
		// 0:30:02: B leaves them until 1:30:02.
		time.Sleep(59 * time.Minute) // 1:29:03
		expect("until A's checks are an hour old", 0, 0)
		// A checks them again at 1:30:02; B, whose turn would come a
		// minute later, hears of it first.
		time.Sleep(5 * time.Minute) // 1:34:03
		expect("an hour after A's checks", 2, 0)
		cancel()
		wg.Wait()
	})
}

// TestReplicaApplyRace applies states heard from another replica while
// requests flow; run with -race.
func TestReplicaApplyRace(t *testing.T) {
	bus := &replicaBus{}
	store := bus.store()
	base := &revokingBase{}
	tr, err := keypool.New(keypool.WithBase(base), keypool.WithStateStore(store),
		keypool.WithUpstreams(keypool.Upstream{Name: "main", BaseURL: "http://upstream.invalid/v1", Keys: keysOf("sk-ra-a", "sk-ra-b", "sk-ra-c")}))
	if err != nil {
		t.Fatal(err)
	}
	ids := ids("sk-ra-a", "sk-ra-b")
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				s := keypool.StateRevoked
				if i%2 == 0 {
					s = keypool.StateReady
				}
				store.hear(keypool.KeyState{ID: ids[(g+i)%2], Upstream: "main", State: s, Reason: "there", Scope: "acme",
					Models: []string{"gpt-4o", "gpt-4o-mini"}, Cooldown: start.Add(time.Duration(i%3) * time.Millisecond),
					Updated: start.Add(time.Duration(i*4+g) * time.Microsecond)})
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 50 {
				req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	c := tr.Pool().Counts()
	if c.Usable < 1 {
		t.Fatalf("counts %+v", c)
	}
}

// TestReplicaClones: an organization clone another replica found is made
// here from its state, and joins this replica's schedule of checks, due an
// hour after that replica's check of it; a retry of this replica's failed
// check is dropped once the other replica checked the key.
func TestReplicaClones(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		keys := []fakeopenai.Key{{Secret: "sk-rl-multi", Orgs: []fakeopenai.Org{{ID: "org-rlhome", Title: "Home", Default: true}, {ID: "org-rlwork", Title: "Work"}}}}
		fake := fakeopenai.New(fakeopenai.Config{}, keys...)
		pipe, closePipe := fakeopenai.ServePipe(fake)
		defer closePipe()
		defer fake.Close()
		bus := &replicaBus{}
		newTransport := func(base http.RoundTripper) *keypool.Transport {
			tr, err := keypool.New(keypool.WithBase(base), keypool.WithStateStore(bus.store()),
				keypool.WithUpstream(fakeopenai.PipeBaseURL, "sk-rl-multi"))
			if err != nil {
				t.Fatal(err)
			}
			return tr
		}
		// B's first check meets a network error, and would be retried
		// after an hour.
		trA, trB := newTransport(pipe), newTransport(&failFirst{base: pipe, fail: map[string]int{"Bearer sk-rl-multi": 1}})
		var mu sync.Mutex
		var checkedB []keypool.KeyID
		b, _ := keypool.NewChecker(trB, keypool.WithCheckRate(1000), keypool.WithRecheckEvery(time.Hour), keypool.WithCheckRetryDelay(time.Hour),
			keypool.WithCheckObserver(keypool.ObserverFuncs{OnChecked: func(r keypool.CheckResult) {
				mu.Lock()
				checkedB = append(checkedB, r.Key)
				mu.Unlock()
			}}))
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { b.Run(ctx) })
		time.Sleep(time.Second)
		synctest.Wait()
		mu.Lock()
		if len(checkedB) != 1 {
			t.Fatalf("B at start checked %v", checkedB)
		}
		checkedB = nil
		mu.Unlock()
		if n := len(trB.Snapshot()); n != 1 {
			t.Fatalf("B has %d keys before A's check", n)
		}

		time.Sleep(10 * time.Minute)
		a, _ := keypool.NewChecker(trA, keypool.WithCheckRate(1000))
		if _, err := a.CheckAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		clone := keypool.NewKey("sk-rl-multi").WithOrganization("org-rlwork").ID()
		ki, ok := trB.Pool().Key(clone)
		if !ok || !ki.Clone || ki.State != keypool.StateReady || ki.LastChecked.IsZero() {
			t.Fatalf("B's clone: %+v, %v", ki, ok)
		}
		expect := func(when string, want ...keypool.KeyID) {
			t.Helper()
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			slices.Sort(checkedB)
			slices.Sort(want)
			if !slices.Equal(checkedB, want) {
				t.Fatalf("%s: B checked %v, want %v", when, checkedB, want)
			}
			checkedB = nil
		}
		time.Sleep(59 * time.Minute) // 1:09:01
		expect("before A's checks are an hour old, B's retry dropped")
		// A does not check them again (it runs no Checker): B does, a
		// minute after they are due (heardCheckGrace).
		time.Sleep(time.Minute) // 1:10:01
		expect("as A's checks are an hour old")
		time.Sleep(2 * time.Minute) // 1:12:01
		expect("a minute after A's checks are an hour old", keypool.NewKey("sk-rl-multi").ID(), clone)
		cancel()
		wg.Wait()
	})
}
