package notify

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

const (
	kA keypool.KeyID = "kp_aaaaaaaaaaaaaaaa"
	kB keypool.KeyID = "kp_bbbbbbbbbbbbbbbb"
	kC keypool.KeyID = "kp_cccccccccccccccc"
	kD keypool.KeyID = "kp_dddddddddddddddd"
)

func TestKeyEvents(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, nil)
	n.Seed([]keypool.KeyInfo{
		{ID: kA, Upstream: "main", State: keypool.StateReady},
		{ID: kB, Upstream: "main", State: keypool.StateReady},
	})
	n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "invalid_api_key"))
	n.StateChange(change("main", kB, keypool.StateReady, keypool.StateCooling, "rate_limited"))
	n.StateChange(change("main", kB, keypool.StateCooling, keypool.StateOverQuota, "insufficient_quota"))
	got := takeQueued(n)
	want := []Event{
		{Kind: KindKeyRevoked, Upstream: "main", Key: kA, Reason: "invalid_api_key", Time: t0},
		{Kind: KindKeyOverQuota, Upstream: "main", Key: kB, Reason: "insufficient_quota", Time: t0},
		{Kind: KindUpstreamDown, Upstream: "main", Reason: "1 over_quota, 1 revoked", Time: t0},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("queued\n%+v\nwant\n%+v", got, want)
	}
	texts := []string{
		"keypool: key kp_aaaaaaaaaaaaaaaa on upstream main is revoked (invalid_api_key)",
		"keypool: key kp_bbbbbbbbbbbbbbbb on upstream main is over quota (insufficient_quota)",
		"keypool: upstream main is down: no usable key (1 over_quota, 1 revoked)",
	}
	for i, e := range got {
		if e.Text() != texts[i] {
			t.Errorf("Text() = %q, want %q", e.Text(), texts[i])
		}
	}
}

// TestHeardChangesNotNotified: a change heard from another replica is
// told of by that replica, not once more by each that applies it; it still
// counts toward the upstream's state.
func TestHeardChangesNotNotified(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, nil)
	n.Seed([]keypool.KeyInfo{
		{ID: kA, Upstream: "main", State: keypool.StateReady},
		{ID: kB, Upstream: "main", State: keypool.StateReady},
	})
	heard := change("main", kA, keypool.StateReady, keypool.StateRevoked, "invalid_api_key")
	heard.Heard = true
	n.StateChange(heard)
	if got := takeQueued(n); len(got) != 0 {
		t.Fatalf("a heard change was notified: %+v", got)
	}
	n.StateChange(change("main", kB, keypool.StateReady, keypool.StateOverQuota, "insufficient_quota"))
	got := takeQueued(n)
	want := []Event{
		{Kind: KindKeyOverQuota, Upstream: "main", Key: kB, Reason: "insufficient_quota", Time: t0},
		{Kind: KindUpstreamDown, Upstream: "main", Reason: "1 over_quota, 1 revoked", Time: t0},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("queued\n%+v\nwant\n%+v", got, want)
	}
}

func TestDedup(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, func(cfg *Config) { cfg.Dedup = 10 * time.Minute })
	n.Seed([]keypool.KeyInfo{
		{ID: kA, Upstream: "main", State: keypool.StateReady},
		{ID: kB, Upstream: "main", State: keypool.StateReady}, // keeps main up
	})
	revoke := func() {
		n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "invalid_api_key"))
		n.StateChange(change("main", kA, keypool.StateRevoked, keypool.StateReady, "recheck"))
	}
	revoke()
	c.Add(9 * time.Minute)
	revoke() // within the window: held back
	if got := len(takeQueued(n)); got != 1 {
		t.Fatalf("within the window: %d messages, want 1", got)
	}
	if st := n.Stats(); st.Deduplicated != 1 {
		t.Fatalf("Deduplicated = %d, want 1", st.Deduplicated)
	}
	c.Add(time.Minute) // 10m after the first: the window has passed
	revoke()
	got := takeQueued(n)
	if len(got) != 1 || got[0].Kind != KindKeyRevoked || !got[0].Time.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("after the window: %+v, want one key_revoked at +10m", got)
	}
	// A key already revoked that is told revoked again is no news.
	n.StateChange(change("main", kA, keypool.StateRevoked, keypool.StateRevoked, "recheck"))
	c.Add(time.Hour)
	n.StateChange(change("main", kA, keypool.StateRevoked, keypool.StateRevoked, "recheck"))
	if got := takeQueued(n); len(got) != 0 {
		t.Fatalf("revoked again: %+v, want nothing", got)
	}
}

func TestRateLimit(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, func(cfg *Config) { cfg.Burst = 2; cfg.Every = time.Minute })
	keys := []keypool.KeyID{kA, kB, kC, kD, "kp_eeeeeeeeeeeeeeee", "kp_ffffffffffffffff"}
	seed := []keypool.KeyInfo{{ID: "kp_0000000000000000", Upstream: "main", State: keypool.StateReady}}
	for _, k := range keys {
		seed = append(seed, keypool.KeyInfo{ID: k, Upstream: "main", State: keypool.StateReady})
	}
	n.Seed(seed)
	for _, k := range keys[:5] {
		n.StateChange(change("main", k, keypool.StateReady, keypool.StateRevoked, "invalid_api_key"))
	}
	got := takeQueued(n)
	if len(got) != 2 || got[0].Suppressed != 0 || got[1].Suppressed != 0 {
		t.Fatalf("burst: %+v, want 2 messages", got)
	}
	if st := n.Stats(); st.RateLimited != 3 {
		t.Fatalf("RateLimited = %d, want 3", st.RateLimited)
	}
	c.Add(time.Minute) // one token back
	n.StateChange(change("main", keys[5], keypool.StateReady, keypool.StateRevoked, "invalid_api_key"))
	got = takeQueued(n)
	if len(got) != 1 || got[0].Suppressed != 3 {
		t.Fatalf("after refill: %+v, want one message with Suppressed 3", got)
	}
	if want := "keypool: key kp_ffffffffffffffff on upstream main is revoked (invalid_api_key) (3 more suppressed)"; got[0].Text() != want {
		t.Fatalf("Text() = %q, want %q", got[0].Text(), want)
	}
	// The count starts again after a message went out.
	c.Add(time.Minute)
	n.StateChange(change("main", keys[0], keypool.StateRevoked, keypool.StateOverQuota, "insufficient_quota"))
	if got := takeQueued(n); len(got) != 1 || got[0].Suppressed != 0 {
		t.Fatalf("next: %+v, want Suppressed 0", got)
	}
}

func TestUpstreamDown(t *testing.T) {
	type step struct {
		seed  []keypool.KeyInfo
		ev    *keypool.StateEvent
		kinds []string
	}
	ev := func(up string, k keypool.KeyID, from, to keypool.State) *keypool.StateEvent {
		e := change(up, k, from, to, "r")
		return &e
	}
	ready := func(up string, k keypool.KeyID, s keypool.State) keypool.KeyInfo {
		return keypool.KeyInfo{ID: k, Upstream: up, State: s}
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"cooling is not down", []step{
			{seed: []keypool.KeyInfo{ready("main", kA, keypool.StateReady), ready("main", kB, keypool.StateCooling)}},
			{ev: ev("main", kA, keypool.StateReady, keypool.StateCooling)},
			{ev: ev("main", kB, keypool.StateCooling, keypool.StateRevoked), kinds: []string{KindKeyRevoked}},
			{ev: ev("main", kA, keypool.StateCooling, keypool.StateDisabled), kinds: []string{KindUpstreamDown}},
		}},
		{"down and recovered", []step{
			{seed: []keypool.KeyInfo{ready("main", kA, keypool.StateReady), ready("main", kB, keypool.StateUnchecked),
				ready("other", kC, keypool.StateReady)}},
			{ev: ev("main", kA, keypool.StateReady, keypool.StateRevoked), kinds: []string{KindKeyRevoked}},
			{ev: ev("main", kB, keypool.StateUnchecked, keypool.StateOverQuota), kinds: []string{KindKeyOverQuota, KindUpstreamDown}},
			{ev: ev("main", kB, keypool.StateOverQuota, keypool.StateReady), kinds: []string{KindUpstreamRecovered}},
			{ev: ev("main", kB, keypool.StateReady, keypool.StateDisabled), kinds: []string{KindUpstreamDown}},
			{ev: ev("main", kA, keypool.StateRevoked, keypool.StateCooling), kinds: []string{KindUpstreamRecovered}},
		}},
		{"a clone first seen in an event joins its upstream", []step{
			{seed: []keypool.KeyInfo{ready("main", kA, keypool.StateReady)}},
			// Unchecked and usable: main keeps a usable key when kA goes.
			{ev: ev("main", kD, keypool.StateUnchecked, keypool.StateReady)},
			{ev: ev("main", kA, keypool.StateReady, keypool.StateRevoked), kinds: []string{KindKeyRevoked}},
			{ev: ev("main", kD, keypool.StateReady, keypool.StateRevoked), kinds: []string{KindKeyRevoked, KindUpstreamDown}},
			{ev: ev("main", kC, keypool.StateUnchecked, keypool.StateReady), kinds: []string{KindUpstreamRecovered}},
		}},
		{"down at seed", []step{
			{seed: []keypool.KeyInfo{ready("main", kA, keypool.StateRevoked), ready("main", kB, keypool.StateDisabled),
				ready("other", kC, keypool.StateCooling)}, kinds: []string{KindUpstreamDown}},
			{ev: ev("main", kB, keypool.StateDisabled, keypool.StateUnchecked), kinds: []string{KindUpstreamRecovered}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			n := newTestNotifier(t, c, nil)
			for i, s := range tt.steps {
				c.Add(time.Second)
				if s.seed != nil {
					n.Seed(s.seed)
				}
				if s.ev != nil {
					n.StateChange(*s.ev)
				}
				got := kinds(takeQueued(n))
				if s.kinds == nil {
					s.kinds = []string{}
				}
				if !slices.Equal(got, s.kinds) {
					t.Fatalf("step %d: queued %v, want %v", i, got, s.kinds)
				}
			}
		})
	}
}

func TestUpstreamRecoveredText(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, nil)
	n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main", State: keypool.StateRevoked}})
	n.StateChange(change("main", kA, keypool.StateRevoked, keypool.StateReady, "recheck"))
	got := takeQueued(n)
	if len(got) != 2 {
		t.Fatalf("queued %+v, want down and recovered", got)
	}
	for i, want := range []string{
		"keypool: upstream main is down: no usable key (1 revoked)",
		"keypool: upstream main recovered (key kp_aaaaaaaaaaaaaaaa is ready)",
	} {
		if got[i].Text() != want {
			t.Errorf("Text() = %q, want %q", got[i].Text(), want)
		}
	}
}

// An upstream_down the rate limit held back leaves nothing to recover from.
func TestRecoveredOnlyAfterDownSent(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, func(cfg *Config) { cfg.Burst = 1; cfg.Every = time.Hour })
	n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main", State: keypool.StateReady}})
	n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "invalid_api_key"))
	if got := kinds(takeQueued(n)); !slices.Equal(got, []string{KindKeyRevoked}) {
		t.Fatalf("queued %v, want the key only (the down is rate-limited)", got)
	}
	c.Add(2 * time.Hour) // tokens are back, but main was never told down
	n.StateChange(change("main", kA, keypool.StateRevoked, keypool.StateReady, "recheck"))
	if got := kinds(takeQueued(n)); len(got) != 0 {
		t.Fatalf("queued %v, want nothing", got)
	}
	if st := n.Stats(); st.RateLimited != 1 {
		t.Fatalf("RateLimited = %d, want 1", st.RateLimited)
	}
}

func TestUpstreamFailing(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, func(cfg *Config) { cfg.FailureThreshold = 3; cfg.FailureWindow = time.Minute })
	fail := func(up string, o keypool.Outcome, status int) {
		n.Attempt(keypool.AttemptEvent{Upstream: up, Key: kA, Outcome: o, Status: status})
	}
	fail("main", keypool.OutcomeServerError, 502) // t0
	c.Add(30 * time.Second)
	fail("main", keypool.OutcomeServerError, 0)   // +30s
	fail("main", keypool.OutcomeCancelled, 0)     // not the upstream's fault
	fail("main", keypool.OutcomeRateLimited, 429) // not a failure
	fail("main", keypool.OutcomeSuccess, 200)
	fail("other", keypool.OutcomeServerError, 500) // another upstream's
	c.Add(40 * time.Second)
	fail("main", keypool.OutcomeServerError, 500) // +70s: t0 .. +70s is wider than the window
	if got := takeQueued(n); len(got) != 0 {
		t.Fatalf("3 failures over 70s: %+v, want nothing", got)
	}
	c.Add(10 * time.Second)
	fail("main", keypool.OutcomeServerError, 503) // +80s: +30s .. +80s
	got := takeQueued(n)
	if len(got) != 1 || got[0].Kind != KindUpstreamFailing || got[0].Upstream != "main" || got[0].Key != "" {
		t.Fatalf("queued %+v, want upstream_failing for main", got)
	}
	if want := "keypool: upstream main is failing (3 failed attempts within 1m0s, last: status 503)"; got[0].Text() != want {
		t.Fatalf("Text() = %q, want %q", got[0].Text(), want)
	}
	c.Add(time.Second)
	fail("main", keypool.OutcomeServerError, 503)
	if got := takeQueued(n); len(got) != 0 {
		t.Fatalf("again within Dedup: %+v, want nothing", got)
	}
	if st := n.Stats(); st.Deduplicated != 1 {
		t.Fatalf("Deduplicated = %d, want 1", st.Deduplicated)
	}
}

func TestFailuresRing(t *testing.T) {
	var f failures
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var got []bool
	for _, s := range []int{0, 10, 20, 100, 110, 160, 161} {
		got = append(got, f.add(at(s), 3, time.Minute))
	}
	want := []bool{false, false, true, false, false, true, true}
	if !slices.Equal(got, want) {
		t.Fatalf("add = %v, want %v", got, want)
	}
	if len(f.at) != 3 {
		t.Fatalf("ring of %d, want 3", len(f.at))
	}
}

func TestQueueFullDrops(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, func(cfg *Config) { cfg.QueueSize = 2; cfg.Burst = 100 })
	var seed []keypool.KeyInfo
	for i := range 6 {
		seed = append(seed, keypool.KeyInfo{ID: keypool.KeyID("kp_" + strings.Repeat(string(rune('a'+i)), 16)), Upstream: "main"})
	}
	n.Seed(seed)
	for _, k := range seed[:5] {
		n.StateChange(change("main", k.ID, keypool.StateReady, keypool.StateRevoked, "x"))
	}
	if st := n.Stats(); st.Dropped != 3 {
		t.Fatalf("Dropped = %d, want 3", st.Dropped)
	}
	if got := len(takeQueued(n)); got != 2 {
		t.Fatalf("queued %d, want 2", got)
	}
	// A dropped event was not sent, so it is no duplicate.
	n.StateChange(change("main", seed[4].ID, keypool.StateRevoked, keypool.StateReady, "x"))
	n.StateChange(change("main", seed[4].ID, keypool.StateReady, keypool.StateRevoked, "x"))
	if got := len(takeQueued(n)); got != 1 {
		t.Fatalf("queued %d, want 1", got)
	}
}

func TestNilNotifier(t *testing.T) {
	var n *Notifier
	n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}})
	n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "x"))
	n.Attempt(keypool.AttemptEvent{Outcome: keypool.OutcomeServerError})
	if st := n.Stats(); st.Dropped != 0 {
		t.Fatal(st)
	}
}

func TestDedupSweep(t *testing.T) {
	c := newClock()
	n := newTestNotifier(t, c, func(cfg *Config) { cfg.Burst = 1000; cfg.QueueSize = 1000; cfg.Dedup = time.Minute })
	for i := range 200 {
		c.Add(time.Second)
		n.Attempt(keypool.AttemptEvent{Upstream: "u" + strings.Repeat("x", i), Outcome: keypool.OutcomeServerError})
		n.Attempt(keypool.AttemptEvent{Upstream: "u" + strings.Repeat("x", i), Outcome: keypool.OutcomeServerError})
		n.Attempt(keypool.AttemptEvent{Upstream: "u" + strings.Repeat("x", i), Outcome: keypool.OutcomeServerError})
		n.Attempt(keypool.AttemptEvent{Upstream: "u" + strings.Repeat("x", i), Outcome: keypool.OutcomeServerError})
		n.Attempt(keypool.AttemptEvent{Upstream: "u" + strings.Repeat("x", i), Outcome: keypool.OutcomeServerError})
	}
	n.mu.Lock()
	size := len(n.lastSent)
	n.mu.Unlock()
	if size > 128 {
		t.Fatalf("%d dedup entries kept, want expired ones swept", size)
	}
}
