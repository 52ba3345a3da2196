package keypool

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// statesOf records the states a pool saves; each Save checks that the
// pool's lock is free.
type statesOf struct {
	t     testing.TB
	p     *Pool
	saved []KeyState
}

func (s *statesOf) Save(st KeyState) {
	if !s.p.mu.TryLock() {
		s.t.Errorf("Save of %s with the pool's lock held", st.ID)
		return
	}
	s.p.mu.Unlock()
	s.saved = append(s.saved, st)
}

// take returns the states saved since the last call.
func (s *statesOf) take() []KeyState {
	out := s.saved
	s.saved = nil
	return out
}

// TestTransitionsSave: each transition that changes what a KeyState holds
// saves the key's state once, after the lock is released.
func TestTransitionsSave(t *testing.T) {
	p := testPool(t, nil, Upstream{BaseURL: "https://a.test/v1", Keys: testKeys("sv", 3)})
	rec := &statesOf{t: t, p: p}
	p.store = storeOf{rec}
	now := t0

	h := takeKey(t, p, "gpt-4o", now)
	answer(p, h, okAnswer(10000, 9999, time.Second), now)
	if got := rec.take(); len(got) != 1 || got[0].State != StateReady || got[0].ID != h.k.cred.id || !got[0].Updated.Equal(now) {
		t.Fatalf("first answer saved %+v", got)
	}
	h = takeKey(t, p, "gpt-4o", now)
	answer(p, h, okAnswer(10000, 9998, time.Second), now)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("a plain success saved %+v", got)
	}

	// A trial tier learned from an answer's limits.
	now = now.Add(time.Second)
	h = takeKey(t, p, "gpt-4o", now)
	answer(p, h, okAnswer(200, 199, time.Second), now)
	if got := rec.take(); len(got) != 1 || !got[0].Trial {
		t.Fatalf("a trial tier saved %+v", got)
	}

	// Failures in a row rest the key: its rest is saved.
	k := p.keys[2]
	for i := range 2 {
		now = now.Add(time.Second)
		p.mu.Lock()
		l, ok := p.takeThis(k, &pick{model: "gpt-4o"}, now)
		p.mu.Unlock()
		if !ok {
			t.Fatalf("failure %d: the key is not free", i+1)
		}
		answer(p, held{l, "gpt-4o"}, &Answer{Status: 500, Limits: noLimits}, now)
		got := rec.take()
		switch {
		case i == 0 && len(got) != 0:
			t.Fatalf("one failure saved %+v", got)
		case i == 1 && (len(got) != 1 || !got[0].Cooldown.After(now)):
			t.Fatalf("a rest saved %+v", got)
		}
	}

	// A revoked key, and an operator's actions.
	now = now.Add(time.Second)
	h = takeKey(t, p, "gpt-4o", now)
	answer(p, h, &Answer{Status: 401, Error: &APIError{Code: "invalid_api_key"}, Limits: noLimits}, now)
	if got := rec.take(); len(got) != 1 || got[0].State != StateRevoked {
		t.Fatalf("revoked saved %+v", got)
	}
	if err := p.Enable(h.k.cred.id); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 1 || got[0].State != StateUnchecked || got[0].Reason != "enabled" {
		t.Fatalf("Enable saved %+v", got)
	}
	if err := p.Enable(h.k.cred.id); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("an Enable that changes nothing saved %+v", got)
	}

	// A check, and organizations with a clone.
	k = p.keys[0]
	p.orgsFound(k, []organization{{ID: "org-home", Name: "home", IsDefault: true}, {ID: "org-work", Name: "work"}}, now)
	got := rec.take()
	if len(got) != 2 || got[0].ID != k.cred.id || got[0].Scope != "home" || got[0].Organization != "org-home" ||
		len(got[0].Clones) != 1 || got[0].Clones[0] != "org-work" || !got[0].OrgsKnown || got[1].Scope != "work" {
		t.Fatalf("organizations saved %+v", got)
	}
	p.checked(k, StateReady, "checked", []string{"gpt-4o", "gpt-4o-mini"}, noLimits, now)
	if got := rec.take(); len(got) != 1 || !got[0].Checked.Equal(now) || len(got[0].Models) != 2 {
		t.Fatalf("a check saved %+v", got)
	}
}

// storeOf makes a StateStore that loads nothing of a statesOf.
type storeOf struct{ s *statesOf }

func (s storeOf) Load(context.Context) ([]KeyState, error) { return nil, nil }
func (s storeOf) Save(st KeyState)                         { s.s.Save(st) }

// TestStateRoundTrip: a pool's saved states restore into a new pool over
// the same keys as they were.
func TestStateRoundTrip(t *testing.T) {
	ups := []Upstream{{BaseURL: "https://a.test/v1", Keys: testKeys("rt", 4)}}
	p := testPool(t, nil, ups...)
	rec := &statesOf{t: t, p: p}
	p.store = storeOf{rec}
	k := p.keys[0]
	p.orgsFound(k, []organization{{ID: "org-home", Name: "home", IsDefault: true}, {ID: "org-work", Name: "work"}}, t0)
	probe := noLimits
	probe.LimitRequests, probe.LimitTokens = 5000, 800000
	p.checked(k, StateReady, "checked", []string{"gpt-4o"}, probe, t0)
	p.checked(p.keys[1], StateOverQuota, "check: 429 insufficient_quota", nil, noLimits, t0)
	p.Disable(p.keys[2].cred.id, "test")
	saved := rec.take()

	q := testPool(t, nil, ups...)
	// Four keys changed, one of them twice; the fifth is the clone.
	if n := q.restore(saved, t0.Add(time.Minute)); n.restored != 4 || n.ignored != 1 || n.malformed != 0 {
		t.Fatalf("restore %+v of %d states", n, len(saved))
	}
	a, b := p.snapshot(t0), q.snapshot(t0)
	if len(a) != len(b) {
		t.Fatalf("%d keys restored, %d saved", len(b), len(a))
	}
	if b[0].LimitRequests != 5000 || b[0].LimitTokens != 800000 {
		t.Fatalf("probe limits restored as %d and %d", b[0].LimitRequests, b[0].LimitTokens)
	}
	for i := range a {
		ja, _ := json.Marshal(a[i])
		jb, _ := json.Marshal(b[i])
		if string(ja) != string(jb) {
			t.Fatalf("restored\n%s\nwas\n%s", jb, ja)
		}
	}
	if q.counts != p.counts {
		t.Fatalf("counts %v, were %v", q.counts, p.counts)
	}
}

// fuzzState is a KeyState as a fuzzer writes it: keys by number, times in
// seconds from t0, any state value.
type fuzzState struct {
	Key, Clone         int
	OtherUpstream      bool
	State              uint8
	Reason, Org, Scope string
	Models, NoStream   []string
	Clones             []string
	Since, Checked     int64
	Cooldown, Updated  int64
	Trial, OrgsKnown   bool
}

// FuzzRestore: whatever a store holds, a restore never panics and leaves
// the pool consistent: its counts, the heaps its keys are in, the scopes
// without a model list.
func FuzzRestore(f *testing.F) { fuzzStates(f, false) }

// FuzzApply: whatever another replica's store hands over, one state at a
// time, applying it never panics, leaves the pool consistent, and saves
// nothing.
func FuzzApply(f *testing.F) { fuzzStates(f, true) }

// fuzzStates restores the states a fuzzer writes, or with applyEach
// applies them one by one as heard from another replica.
func fuzzStates(f *testing.F, applyEach bool) {
	f.Add([]byte(`[{"Key":0,"State":4,"Clones":["org-a","org-b"]},{"Key":0,"Clone":1,"State":3,"Scope":"b"},{"Key":1,"State":1,"Scope":"b","Models":["gpt-4o"],"NoStream":["gpt-5"],"Cooldown":60}]`))
	f.Add([]byte(`[{"Key":2,"State":2},{"Key":2,"State":9},{"Key":1,"State":5,"Checked":100},{"Key":3,"State":1,"Scope":"x","Trial":true,"Updated":-5},{"Key":3,"State":0,"Updated":-10}]`))
	f.Add([]byte(`[{"Key":0,"State":1,"Org":"org-a","Scope":"a","Models":["",""]},{"Key":7,"State":1},{"Key":1,"OtherUpstream":true,"State":4}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var in []fuzzState
		if json.Unmarshal(data, &in) != nil || len(in) > 64 {
			return
		}
		ups := []Upstream{{Name: "main", BaseURL: "https://a.test/v1", Keys: append(testKeys("fz", 3), NewKey("sk-svcacct-fz"))},
			{Name: "none", BaseURL: "https://b.test/v1", Auth: AuthNone}}
		p := testPool(t, nil, ups...)
		var states []KeyState
		for _, s := range in {
			var id KeyID = "kp_0000000000000000"
			if s.Key >= 0 && s.Key < len(ups[0].Keys) {
				c := ups[0].Keys[s.Key]
				if s.Clone > 0 && s.Clone <= len(s.Clones) {
					c = c.WithOrganization(s.Clones[s.Clone-1])
				}
				id = c.ID()
			} else if s.Key == -1 {
				id = p.keys[len(p.keys)-1].cred.id // the stand-in
			}
			upstream := "main"
			if s.OtherUpstream {
				upstream = "none"
			}
			at := func(sec int64) time.Time {
				if sec == 0 {
					return time.Time{}
				}
				return t0.Add(time.Duration(sec) * time.Second)
			}
			states = append(states, KeyState{ID: id, Upstream: upstream, State: State(s.State), Reason: s.Reason,
				Since: at(s.Since), Checked: at(s.Checked), Trial: s.Trial, Organization: s.Org, Scope: s.Scope,
				Models: s.Models, NoStream: s.NoStream, Cooldown: at(s.Cooldown), Clones: s.Clones, OrgsKnown: s.OrgsKnown,
				Updated: at(s.Updated)})
		}
		if applyEach {
			rec := &statesOf{t: t, p: p}
			p.store = storeOf{rec}
			for _, st := range states {
				p.heard(st, t0)
				checkPool(t, p, t0)
			}
			if len(rec.saved) != 0 {
				t.Fatalf("states heard from a replica were saved: %+v", rec.saved)
			}
		} else {
			p.restore(states, t0)
			checkPool(t, p, t0)
		}
		// The pool still picks and releases.
		p.mu.Lock()
		l, _ := p.take(&pick{model: "gpt-4o"}, t0)
		if l.k != nil {
			p.release(l, t0)
		}
		p.mu.Unlock()
		p.snapshot(t0)
	})
}

// checkPool fails t when p's bookkeeping disagrees with its keys at now.
func checkPool(t *testing.T, p *Pool, now time.Time) {
	t.Helper()
	var c Counts
	for _, k := range p.keys {
		c.byState[k.state]++
		if p.selectable(k) {
			c.Usable++
		}
		want := heapNone
		if p.selectable(k) {
			want = heapReady
			if k.coolUntil.After(now) {
				want = heapCooling
			}
		}
		if k.where != want {
			t.Fatalf("key %s (%v, cooling until %v) is in heap %d, want %d", k.cred.id, k.state, k.coolUntil, k.where, want)
		}
		if k.s.keys[k.sidx] != k {
			t.Fatalf("key %s is not where its scope has it", k.cred.id)
		}
		if k.state == StateCooling || k.state > StateDisabled {
			t.Fatalf("key %s in state %v", k.cred.id, k.state)
		}
	}
	if c != p.counts {
		t.Fatalf("counts %+v, recounted %+v", p.counts, c)
	}
	for _, u := range p.ups {
		unlisted := 0
		for _, s := range u.slots {
			if s != nil && s.families == nil {
				unlisted++
			}
		}
		if unlisted != u.unlisted {
			t.Fatalf("upstream %s: %d scopes without a model list, it counts %d", u.Name, unlisted, u.unlisted)
		}
	}
}
