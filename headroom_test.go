package keypool_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
)

// rvBlock blocks Read until released, then returns EOF.
type rvBlock struct{ release chan struct{} }

func (b *rvBlock) Read(p []byte) (int, error) { <-b.release; return 0, io.EOF }

func (b *rvBlock) Close() error {
	select {
	case <-b.release:
	default:
		close(b.release)
	}
	return nil
}

// R1: a success answer lowers a Ready key's remaining requests but the ready
// heap keeps its old score; take looks only at the heap top, finds it full,
// and never considers the idle key X.
func TestSuccessRescoresReadyKey(t *testing.T) {
	var n atomic.Int32
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		r.Body.Close()
		switch n.Add(1) {
		case 1:
			return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "3"}, nil), nil
		case 2:
			return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "50"}, nil), nil
		case 3:
			return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "1"}, &rvBlock{release: make(chan struct{})}), nil
		}
		return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "2"}, nil), nil
	})
	tr, err := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a,sk-b"), keypool.WithBase(base), keypool.WithMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// Warm up: r1 -> X says 3 left (headroom 2 while open), so r2 -> Y says 50.
	r1, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(r1.Body)
	r1.Body.Close()
	io.ReadAll(r2.Body)
	r2.Body.Close()
	// r3 -> Y (50 > 3); its answer says 1 left; its body stays open.
	r3, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Body.Close()
	for _, ki := range tr.Snapshot() {
		t.Logf("%s inflight=%d remaining=%d", ki.ID, ki.InFlight, ki.Limits[0].RemainingRequests)
	}
	// X is idle with 3 left: the next request must go to it at once.
	start := time.Now()
	r4, err := tr.RoundTrip(rvPost(context.Background()))
	if err != nil {
		t.Fatalf("request 4 failed after %v although a key is idle with 3 requests left: %v", time.Since(start), err)
	}
	r4.Body.Close()
}

// R2: probe limit 1: a request waits while the key's first answer is
// pending; the answer states 100 remaining, but while its body is open the
// waiter is not woken and waits out maxWait (20s).
func TestSuccessHeadersWakeWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		gate := make(chan struct{})
		body := &rvBlock{release: make(chan struct{})}
		base := rvRT(func(r *http.Request) (*http.Response, error) {
			r.Body.Close()
			if n.Add(1) == 1 {
				<-gate
				return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "100"}, body), nil
			}
			return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": "99"}, nil), nil
		})
		tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithProbeLimit(1))
		firstDone := make(chan *http.Response, 1)
		go func() {
			r, _ := tr.RoundTrip(rvPost(context.Background()))
			firstDone <- r
		}()
		synctest.Wait() // first request holds the key's only probe slot
		secondDone := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			r, err := tr.RoundTrip(rvPost(context.Background()))
			if err == nil {
				r.Body.Close()
			}
			secondDone <- time.Since(start)
		}()
		synctest.Wait() // second request waits for a slot
		close(gate)     // first answer: 100 remaining, body stays open
		first := <-firstDone
		waited := <-secondDone
		first.Body.Close()
		if waited > time.Second {
			t.Fatalf("second request waited %v although the key's first answer stated 100 remaining", waited)
		}
	})
}

// R3: an upstream that states remaining requests but no reset (Azure style):
// remaining only ever goes down; after one "0" the key is stuck at 1.
func TestRemainingWithoutResetRecovers(t *testing.T) {
	var seq = []string{"5", "0", "100", "100", "100"}
	var i atomic.Int32
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		r.Body.Close()
		v := seq[min(int(i.Add(1))-1, len(seq)-1)]
		return rvOK(r, map[string]string{"x-ratelimit-remaining-requests": v}, nil), nil
	})
	tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithClock(clock))
	for k := 0; k < 5; k++ {
		r, err := tr.RoundTrip(rvPost(context.Background()))
		if err != nil {
			t.Fatalf("req %d: %v", k, err)
		}
		io.ReadAll(r.Body)
		r.Body.Close()
		mu.Lock()
		now = now.Add(2 * time.Second) // past any 1s cooldown
		mu.Unlock()
	}
	got := tr.Snapshot()[0].Limits[0].RemainingRequests
	if got != 100 {
		t.Fatalf("after three answers saying 100 remaining the pool believes %d", got)
	}
}

// R11: an upstream that states no rate limits at all (vLLM, Ollama, most
// compatible servers) is documented as "not limited", but e.answered is set
// only when some rate-limit header was present, so each key stays at the
// probe limit (4 in flight) for ever.
func TestNoRateLimitHeadersMeansUnlimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := rvRT(func(r *http.Request) (*http.Response, error) {
			r.Body.Close()
			return rvOK(r, nil, ctxBody{r.Context()}), nil
		})
		tr, _ := keypool.New(keypool.WithUpstream("https://api.example/v1", "sk-a"), keypool.WithBase(base), keypool.WithMaxWait(time.Second))
		// One answered request first, so the key has "answered".
		r0, _ := tr.RoundTrip(rvPost(context.Background()))
		r0.Body.Close()
		var open []*http.Response
		for i := 0; i < 10; i++ {
			r, err := tr.RoundTrip(rvPost(context.Background()))
			if err != nil {
				t.Errorf("request %d with %d streams open: %v", i+1, len(open), err)
				break
			}
			open = append(open, r)
		}
		for _, r := range open {
			r.Body.Close()
		}
	})
}
