package keypool

import (
	"fmt"
	"testing"
	"time"
)

func TestCounts(t *testing.T) {
	var c Counts
	if c.String() != "" || total(c) != 0 || c.Usable != 0 {
		t.Fatalf("zero Counts: %q total %d usable %d", c, total(c), c.Usable)
	}
	for _, s := range []State{StateRevoked, StateReady, StateCooling, StateRevoked, StateDisabled, StateUnchecked, State(200)} {
		c.Add(s)
	}
	if got, want := c.String(), "1 unchecked, 1 ready, 1 cooling, 2 revoked, 1 disabled"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if total(c) != 6 || c.Usable != 3 || c.In(StateRevoked) != 2 || c.In(StateOverQuota) != 0 || c.In(State(200)) != 0 {
		t.Errorf("total %d usable %d revoked %d over quota %d", total(c), c.Usable, c.In(StateRevoked), c.In(StateOverQuota))
	}
}

// total is how many keys c counted.
func total(c Counts) int {
	n := 0
	for _, m := range c.byState {
		n += m
	}
	return n
}

// snapshotCounts counts a snapshot's keys, as a caller without Pool.Counts
// would.
func snapshotCounts(p *Pool, now time.Time) Counts {
	var c Counts
	for _, k := range p.snapshot(now) {
		c.Add(k.State)
	}
	return c
}

// TestPoolCounts: the counts the pool keeps follow every transition, and
// agree with its snapshot on which keys are usable (a cooling key counts
// under the state it returns to).
func TestPoolCounts(t *testing.T) {
	p := testPool(t, nil,
		Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 4)},
		Upstream{BaseURL: "https://b.test/v1", Auth: AuthNone})
	want := func(what string, usable int, s string) {
		t.Helper()
		c := p.Counts()
		if c.Usable != usable || c.String() != s {
			t.Fatalf("%s: usable %d %q; want %d %q", what, c.Usable, c, usable, s)
		}
		if snap := snapshotCounts(p, t0); snap.Usable != c.Usable || total(snap) != total(c) {
			t.Fatalf("%s: the snapshot counts %d usable of %d, the pool %d of %d", what, snap.Usable, total(snap), c.Usable, total(c))
		}
	}
	want("fresh", 5, "4 unchecked, 1 ready")

	revoked := takeKey(t, p, "m", t0)
	answer(p, revoked, &Answer{Status: 401, Error: &APIError{Code: "invalid_api_key"}, Limits: noLimits}, t0)
	want("one revoked", 4, "3 unchecked, 1 ready, 1 revoked")

	cooling := takeKey(t, p, "m", t0)
	a := &Answer{Status: 429, Error: &APIError{Type: "requests"}, Limits: noLimits}
	a.Limits.RetryAfter = time.Minute
	answer(p, cooling, a, t0)
	if info, _ := p.keyAt(cooling.k.cred.id, t0); info.State != StateCooling {
		t.Fatalf("rate-limited key: %v", info.State)
	}
	want("one cooling", 4, "3 unchecked, 1 ready, 1 revoked")

	ok := takeKey(t, p, "m", t0)
	answer(p, ok, okAnswer(100, 99, time.Second), t0)
	want("one answered", 4, "2 unchecked, 2 ready, 1 revoked")

	for _, k := range p.keys[:4] {
		if err := p.Disable(k.cred.id, "test"); err != nil {
			t.Fatal(err)
		}
	}
	want("all disabled", 1, "1 ready, 4 disabled")
	if err := p.Enable(revoked.k.cred.id); err != nil {
		t.Fatal(err)
	}
	want("one enabled", 2, "1 unchecked, 1 ready, 3 disabled")
}

// TestPoolCountsCheckedOnly: under WithCheckedKeysOnly a key counts as
// usable from its first check on, as selection takes it; a key enabled
// after a check stays usable.
func TestPoolCountsCheckedOnly(t *testing.T) {
	p := testPool(t, func(c *poolConfig) { c.checkedOnly = true },
		Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", 3)})
	if c := p.Counts(); c.Usable != 0 || c.In(StateUnchecked) != 3 {
		t.Fatalf("before any check: %+v", c)
	}
	k := p.keys[0]
	p.checked(k, StateReady, "checked", nil, noLimits, t0)
	if c := p.Counts(); c.Usable != 1 || c.String() != "2 unchecked, 1 ready" {
		t.Fatalf("after one check: usable %d %q", c.Usable, c)
	}
	if l, _ := tryTake(p, &pick{model: "m"}, t0); l.k != k {
		t.Fatalf("picked %v, want the checked key", l.k)
	}
	p.checked(k, StateRevoked, "check: 401 invalid_api_key", nil, noLimits, t0)
	if err := p.Enable(k.cred.id); err != nil {
		t.Fatal(err)
	}
	if c := p.Counts(); c.Usable != 1 || c.In(StateUnchecked) != 3 {
		t.Fatalf("enabled after a check: usable %d %q", c.Usable, c)
	}
}

// BenchmarkPoolCounts shows that Counts costs the same at 1k and 100k keys.
func BenchmarkPoolCounts(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		p := testPool(b, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("k", n)})
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p.Counts().Usable != n {
					b.Fatal("wrong count")
				}
			}
		})
	}
}
