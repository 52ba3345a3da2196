package notify

import (
	"context"
	"net/http"
	"testing"
	"testing/synctest"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// A homeserver ending in a bare "?" passes validation ("must not
// have a query or fragment" only looks at RawQuery/Fragment), and the send
// endpoint then lands in the query string: the PUT goes to "/".
func TestMatrixHomeserverBareQueryRefused(t *testing.T) {
	for _, hs := range []string{"https://matrix.test/?"} {
		synctest.Test(t, func(t *testing.T) {
			rc := &receiver{}
			n, err := New(Config{
				Matrix: &Matrix{Homeserver: hs, Room: "!r:matrix.test", Token: secret.New("tok")},
				Client: &http.Client{Transport: handlerTransport{rc}},
			})
			if err != nil {
				return // rejected: fine
			}
			n.Seed([]keypool.KeyInfo{{ID: kA, Upstream: "main"}, {ID: kB, Upstream: "main"}})
			n.StateChange(change("main", kA, keypool.StateReady, keypool.StateRevoked, "x"))
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			n.Run(ctx)
			for _, r := range rc.requests() {
				if r.Path == "/" {
					t.Errorf("homeserver %q accepted, and the message went to %q (query %q)", hs, r.Path, r.Query)
				}
			}
		})
	}
}

// Observer methods must never panic; an unbounded FailureThreshold makes
// Attempt allocate a ring of that many time.Time values.
func TestHugeFailureThresholdRefused(t *testing.T) {
	n, err := New(Config{Webhook: &Webhook{URL: secret.New("http://hook.invalid/x")}, FailureThreshold: 1 << 62})
	if err != nil {
		return // rejected: fine
	}
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Attempt panicked: %v", r)
		}
	}()
	n.Attempt(keypool.AttemptEvent{Upstream: "main", Outcome: keypool.OutcomeServerError})
}

// New must return a *ConfigError for an invalid Config, not panic.
func TestHugeQueueSizeRefused(t *testing.T) {
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("New panicked: %v", r)
		}
	}()
	New(Config{Webhook: &Webhook{URL: secret.New("http://hook.invalid/x")}, QueueSize: 1 << 62})
}
