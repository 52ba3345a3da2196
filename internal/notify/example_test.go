package notify_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/notify"
	"github.com/keypool/keypool/internal/secret"
)

func ExampleEvent_Text() {
	e := notify.Event{Kind: notify.KindKeyRevoked, Upstream: "main", Key: "kp_0123456789abcdef",
		Reason: "invalid_api_key", Suppressed: 2}
	fmt.Println(e.Text())
	// Output:
	// keypool: key kp_0123456789abcdef on upstream main is revoked (invalid_api_key) (2 more suppressed)
}

func Example() {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Println(string(body))
	}))
	defer hook.Close()

	n, err := notify.New(notify.Config{
		Webhook: &notify.Webhook{URL: secret.New(hook.URL), Headers: map[string]secret.String{"Authorization": secret.New("Bearer …")}},
		Now:     func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		log.Fatal(err)
	}
	// In a program: n.Seed(transport.Snapshot()), go n.Run(ctx), and n is
	// given to keypool.New with keypool.WithObserver(n).
	n.Seed([]keypool.KeyInfo{
		{ID: "kp_0123456789abcdef", Upstream: "main", State: keypool.StateReady},
		{ID: "kp_fedcba9876543210", Upstream: "main", State: keypool.StateReady},
	})
	n.StateChange(keypool.StateEvent{Key: "kp_0123456789abcdef", Upstream: "main",
		From: keypool.StateReady, To: keypool.StateRevoked, Reason: "invalid_api_key"})

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run delivers what is queued, then returns
	n.Run(ctx)
	fmt.Println(n.Stats().Sent)
	// Output:
	// {"event":"key_revoked","upstream":"main","key":"kp_0123456789abcdef","reason":"invalid_api_key","time":"2026-03-01T12:00:00Z","text":"keypool: key kp_0123456789abcdef on upstream main is revoked (invalid_api_key)","suppressed":0}
	// map[webhook:1]
}
