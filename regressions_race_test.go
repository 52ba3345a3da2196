package keypool_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

func TestRegressionRaceClonesUnderTraffic(t *testing.T) {
	var keys []fakeopenai.Key
	var secrets []string
	for i := range 30 {
		s := fmt.Sprintf("sk-k%02d", i)
		keys = append(keys, fakeopenai.Key{Secret: s, Trial: i%3 == 0, Unverified: i%2 == 0, Orgs: []fakeopenai.Org{{ID: "org-a" + s, Default: true}, {ID: "org-b" + s}, {ID: "org-c" + s}}})
		secrets = append(secrets, s)
	}
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	_ = fake
	tr, err := keypool.New(keypool.WithUpstream(base, strings.Join(secrets, ",")), keypool.WithMaxModels(4))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000), keypool.WithCheckConcurrency(8))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	models := []string{"gpt-4o", "gpt-5", "gpt-4o-mini", "o3", "gpt-image-1", "dall-e-3", "gpt-4.1"}
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				m := models[(g+i)%len(models)]
				stream := i%2 == 0
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://x.invalid/v1/chat/completions", strings.NewReader(chatBody(m, stream)))
				resp, err := tr.RoundTrip(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Add(3)
	go func() { defer wg.Done(); c.Run(ctx) }()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			c.CheckAll(ctx)
			c.Recheck()
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			tr.Snapshot()
		}
	}()
	wg.Wait()
	// Under load the checks may not all have run within the traffic's 3 s:
	// one pass without traffic finds the clones still missing. What this
	// test guards is that traffic, checks and snapshots at once corrupt
	// nothing, so the pool must end with every key and clone once.
	if _, err := c.CheckAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(tr.Snapshot()); n != 90 {
		t.Errorf("%d keys", n)
	}
}
