package keypool

import (
	"slices"
	"testing"
)

// TestUpdateDropsKeyFromItsScope: a key removed from a scope it shares
// leaves the scope's members and ready heap at once, and its lease, when
// its request ends, releases the budget without putting the key back.
func TestUpdateDropsKeyFromItsScope(t *testing.T) {
	a, b := NewKey("sk-scope-a").WithOrganization("org-1"), NewKey("sk-scope-b").WithOrganization("org-1")
	up := Upstream{Name: "main", BaseURL: "https://api.example/v1", Keys: []Key{a, b}}
	p := testPool(t, nil, up)
	ka, kb := p.byID[a.ID()], p.byID[b.ID()]
	if ka.s != kb.s {
		t.Fatal("setup: the keys do not share a scope")
	}
	h := takeKey(t, p, "gpt-4o", t0)
	if h.k != ka {
		t.Fatalf("setup: took %s", h.k.cred.id)
	}
	up.Keys = []Key{b}
	ch, err := p.update([]Upstream{up}, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Removed, []KeyID{a.ID()}) || !slices.Equal(ch.Kept, []KeyID{b.ID()}) {
		t.Fatalf("changes %+v", ch)
	}
	s := kb.s
	check := func(when string) {
		t.Helper()
		p.mu.Lock()
		defer p.mu.Unlock()
		if slices.Contains(s.keys, ka) || p.byID[a.ID()] != nil || slices.Contains(p.keys, ka) {
			t.Fatalf("%s: the removed key is still held", when)
		}
		for _, slot := range s.ready {
			if slot.v == ka {
				t.Fatalf("%s: the removed key is in its scope's ready heap", when)
			}
		}
		if kb.sidx >= len(s.keys) || s.keys[kb.sidx] != kb {
			t.Fatalf("%s: the kept key's place in its scope is wrong", when)
		}
		if c := p.counts; c.Usable != 1 || c.In(StateUnchecked) != 1 {
			t.Fatalf("%s: counts %v, usable %d", when, c, c.Usable)
		}
	}
	check("after the update")
	for range 3 {
		l := takeKey(t, p, "gpt-4o", t0)
		if l.k != kb {
			t.Fatalf("picked %s", l.k.cred.id)
		}
		drop(p, l, t0)
	}
	answer(p, h, &Answer{Status: 200, Limits: noLimits}, t0)
	check("after the removed key's request ended")
	if bud := h.bud.live(); bud.inflight != 0 || bud.b.inflight != 0 {
		t.Fatalf("in flight after every request ended: budget %d, bucket %d", bud.inflight, bud.b.inflight)
	}
}
