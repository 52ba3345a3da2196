package keypool

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeopenai"
)

// verifyHeaps checks every bucket and scope: heap order, idx/where
// consistency, that every usable budget and key is in the heap its state
// calls for, that counts never go below zero, and that the counts of keys
// by state kept as states change are those of the keys as they stand.
func verifyHeaps(t *testing.T, p *Pool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var counts Counts
	for _, k := range p.keys {
		counts.byState[k.state]++
		if p.selectable(k) {
			counts.Usable++
		}
	}
	if p.counts != counts {
		t.Fatalf("kept counts %+v, the keys' %+v", p.counts, counts)
	}
	for _, u := range p.ups {
		p.eachBucket(u, func(b *bucket) {
			name := b.name
			for i, s := range b.ready {
				if int(s.v.idx) != i || s.v.where != heapReady {
					t.Fatalf("bucket %q: ready slot %d idx %d where %d", name, i, s.v.idx, s.v.where)
				}
				if i > 0 && b.ready[(i-1)/4].score > s.score {
					t.Fatalf("bucket %q: heap order broken at %d", name, i)
				}
			}
			for i, s := range b.cooling {
				if int(s.v.idx) != i || s.v.where != heapCooling || s.wakeAt != s.v.wakeAt {
					t.Fatalf("bucket %q: cooling slot %d", name, i)
				}
				if i > 0 && b.cooling[(i-1)/2].wakeAt > s.wakeAt {
					t.Fatalf("bucket %q: cooling order broken at %d", name, i)
				}
			}
			for i, bud := range b.budgets {
				if bud == nil {
					if i < len(u.slots) && u.slots[i] != nil {
						t.Fatalf("bucket %q: no budget for live scope %d", name, i)
					}
					continue
				}
				if bud.s != u.slots[i] {
					t.Fatalf("bucket %q: budget %d of another scope", name, i)
				}
				if p.usable(bud) != (bud.where != heapNone) {
					t.Fatalf("bucket %q scope %q: usable %v but where %d", name, bud.s.name, p.usable(bud), bud.where)
				}
				if bud.inflight < 0 {
					t.Fatalf("negative inflight")
				}
			}
		})
		for _, s := range u.slots {
			if s == nil {
				continue
			}
			for i, slot := range s.ready {
				if int(slot.v.idx) != i || slot.v.where != heapReady || slot.v.s != s {
					t.Fatalf("scope %q: ready slot %d", s.name, i)
				}
			}
			for i, k := range s.keys {
				if k.s != s || k.sidx != i {
					t.Fatalf("scope %q: key %s at %d says scope %q at %d", s.name, k.cred.id, i, k.s.name, k.sidx)
				}
				want := heapNone
				if p.selectable(k) {
					want = heapReady
					if k.coolUntil.After(now) || k.where == heapCooling {
						want = k.where // a rest that ended is revived at the next pick
					}
				}
				if k.where != want {
					t.Fatalf("key %s: where %d, want %d", k.cred.id, k.where, want)
				}
				if k.inflight < 0 {
					t.Fatalf("negative inflight")
				}
			}
		}
	}
}

// TestStressTrafficDuringChecks runs traffic (streamed and not, over more
// models than a key keeps), check passes, the periodic checker, Recheck
// and snapshots all at once, under -race. After every check pass, and
// after a last pass without traffic, the heaps must hold their invariants
// (verifyHeaps); at the end the pool must hold every key and every clone
// of its organizations exactly once.
//
// The two cases are the two harnesses it replaces: many clones with the
// default order, and trial keys first.
func TestStressTrafficDuringChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: seconds of traffic under stress")
	}
	for _, tc := range []struct {
		name        string
		keys, orgs  int
		maxModels   int
		trialsFirst bool
		clients     int
		traffic     time.Duration
	}{
		{name: "clones", keys: 30, orgs: 3, maxModels: 4, clients: 16, traffic: 3 * time.Second},
		{name: "trials first", keys: 24, orgs: 2, maxModels: 5, trialsFirst: true, clients: 12, traffic: 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stressTrafficDuringChecks(t, tc.keys, tc.orgs, tc.maxModels, tc.trialsFirst, tc.clients, tc.traffic)
		})
	}
}

func stressTrafficDuringChecks(t *testing.T, nkeys, norgs, maxModels int, trialsFirst bool, clients int, traffic time.Duration) {
	var keys []fakeopenai.Key
	var secrets []string
	for i := range nkeys {
		s := fmt.Sprintf("sk-k%02d", i)
		orgs := []fakeopenai.Org{{ID: "org-a" + s, Default: true}}
		for o := 1; o < norgs; o++ {
			orgs = append(orgs, fakeopenai.Org{ID: fmt.Sprintf("org-%c%s", 'a'+o, s)})
		}
		keys = append(keys, fakeopenai.Key{Secret: s, Trial: i%3 == 0, Unverified: i%2 == 0, Orgs: orgs})
		secrets = append(secrets, s)
	}
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	tr, err := New(WithUpstream(base, strings.Join(secrets, ",")), WithMaxModels(maxModels), WithTrialsFirst(trialsFirst))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewChecker(tr, WithCheckRate(1000), WithCheckConcurrency(8))
	ctx, cancel := context.WithTimeout(context.Background(), traffic)
	defer cancel()
	var wg sync.WaitGroup
	models := []string{"gpt-4o", "gpt-5", "gpt-4o-mini", "o3", "gpt-image-1", "dall-e-3", "gpt-4.1"}
	for g := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				m := models[(g+i)%len(models)]
				body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}]}`, m)
				if i%2 == 0 { // streamed, with usage in the last event
					body = fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`, m)
				}
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://x.invalid/v1/chat/completions", strings.NewReader(body))
				resp, err := tr.RoundTrip(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	// The periodic checker and snapshots run beside the check passes.
	wg.Add(2)
	go func() { defer wg.Done(); c.Run(ctx) }()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			tr.Snapshot()
		}
	}()
	// The invariants are verified after every check pass, while traffic
	// flows: state, trial flags, model sets and clones all change in a pass.
	passes := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(passes)
		for ctx.Err() == nil {
			c.CheckAll(ctx)
			c.Recheck()
			select {
			case passes <- struct{}{}:
			case <-ctx.Done():
			}
		}
	}()
	n := 0
	for range passes {
		verifyHeaps(t, tr.pool, time.Now())
		n++
	}
	wg.Wait()
	// A loaded machine may finish no pass within the traffic's time: one
	// more, without traffic, ends with what checks change (states, trial
	// flags, model sets, clones), and the invariants must hold after it.
	// Traffic, checks and snapshots at once must have corrupted nothing,
	// so the pool ends with every key and clone once.
	if _, err := c.CheckAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	verifyHeaps(t, tr.pool, time.Now())
	if got, want := len(tr.Snapshot()), nkeys*norgs; got != want {
		t.Errorf("%d keys, want %d", got, want)
	}
	t.Logf("%d passes verified under traffic", n)
}
