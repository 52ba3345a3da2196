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

// verifyHeaps checks every bucket: heap order, idx/where consistency, that
// every usable not-cooling entry is in the ready heap, and stored scores.
func verifyHeaps(t *testing.T, p *Pool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.ups {
		for name, b := range u.buckets {
			if len(b.entries) != len(u.keys) {
				t.Fatalf("bucket %s: %d entries, %d keys", name, len(b.entries), len(u.keys))
			}
			for i, s := range b.ready {
				if int(s.e.idx) != i || s.e.where != heapReady {
					t.Fatalf("bucket %s: ready slot %d idx %d where %d", name, i, s.e.idx, s.e.where)
				}
				if s.score != p.score(s.e) {
					t.Fatalf("bucket %s: stale score for %s", name, s.e.k.cred.id)
				}
				if i > 0 && b.ready[(i-1)/4].score > s.score {
					t.Fatalf("bucket %s: heap order broken at %d", name, i)
				}
			}
			for i, e := range b.cooling {
				if int(e.idx) != i || e.where != heapCooling {
					t.Fatalf("bucket %s: cooling slot %d", name, i)
				}
			}
			for _, e := range b.entries {
				if p.usable(e.k, b) != (e.where != heapNone) {
					t.Fatalf("bucket %s key %s: usable %v but where %d", name, e.k.cred.id, p.usable(e.k, b), e.where)
				}
				if e.inflight < 0 {
					t.Fatalf("negative inflight")
				}
			}
		}
	}
}

func TestRegressionHeapInvariantsUnderChecks(t *testing.T) {
	var keys []fakeopenai.Key
	var secrets []string
	for i := range 24 {
		s := fmt.Sprintf("sk-k%02d", i)
		keys = append(keys, fakeopenai.Key{Secret: s, Trial: i%3 == 0, Unverified: i%2 == 0, Orgs: []fakeopenai.Org{{ID: "org-a" + s, Default: true}, {ID: "org-b" + s}}})
		secrets = append(secrets, s)
	}
	_, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	tr, err := New(WithUpstream(base, strings.Join(secrets, ",")), WithMaxModels(5), WithTrialsFirst(true))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewChecker(tr, WithCheckRate(1000), WithCheckConcurrency(8))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	models := []string{"gpt-4o", "gpt-5", "gpt-4o-mini", "o3", "gpt-image-1", "dall-e-3", "gpt-4.1"}
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				m := models[(g+i)%len(models)]
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://x.invalid/v1/chat/completions",
					strings.NewReader(fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"stream":%v}`, m, i%2 == 0)))
				resp, err := tr.RoundTrip(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	// The invariants are verified after every check pass, while traffic
	// flows: state, trial flags, model sets and clones all change in a pass.
	passes := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(passes)
		for ctx.Err() == nil {
			c.CheckAll(ctx)
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
	if n == 0 {
		t.Fatal("no check pass finished")
	}
	verifyHeaps(t, tr.pool, time.Now())
}
