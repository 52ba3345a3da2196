package keypool_test

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
)

// pacedUpstream answers every request 200 with contentType and a body that
// sends each of parts after its delay, then (when hang is set) nothing more
// until the attempt ends; otherwise it ends. It runs in memory, so it works
// under synctest.
type pacedUpstream struct {
	contentType string
	parts       []pacedPart
	hang        bool
}

type pacedPart struct {
	after time.Duration
	text  string
}

func (u pacedUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	pr, pw := io.Pipe()
	go func() {
		for _, p := range u.parts {
			select {
			case <-time.After(p.after):
			case <-req.Context().Done():
				pw.CloseWithError(req.Context().Err())
				return
			}
			if _, err := pw.Write([]byte(p.text)); err != nil {
				return
			}
		}
		if u.hang {
			<-req.Context().Done()
			pw.CloseWithError(req.Context().Err())
			return
		}
		pw.Close()
	}()
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {u.contentType}},
		Body: pr, ContentLength: -1, Request: req}, nil
}

func idleTransport(t *testing.T, up http.RoundTripper, rec *recorder) *keypool.Transport {
	t.Helper()
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: "https://up.invalid/v1",
		Keys: []keypool.Key{keypool.NewKey("sk-idle-1")}, IdleTimeout: 5 * time.Second, StreamTimeout: 3 * time.Second}),
		keypool.WithBase(up), keypool.WithObserver(rec), keypool.WithMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func idleRequest(stream bool) *http.Request {
	body := `{"model":"gpt-4o"}`
	if stream {
		body = `{"model":"gpt-4o","stream":true}`
	}
	req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(body))
	return req
}

// TestIdleStreamIsCutCleanly: a stream whose upstream goes quiet after its
// first event ends, once the idle timeout passes, with an error event; the
// key is released and counts a failure.
func TestIdleStreamIsCutCleanly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		tr := idleTransport(t, pacedUpstream{contentType: "text/event-stream", hang: true,
			parts: []pacedPart{{0, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"}, {time.Second, "data: {\"cho"}}}, rec)
		start := time.Now()
		resp, err := tr.RoundTrip(idleRequest(true))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if took := time.Since(start); took != 6*time.Second {
			t.Errorf("cut after %v, want 6s (1s to the last byte, then the 5s idle timeout)", took)
		}
		events := strings.Split(strings.TrimSpace(string(b)), "\n\n")
		last := events[len(events)-1]
		if !strings.HasPrefix(last, "data: {\"error\"") || !strings.Contains(last, `"upstream_idle"`) {
			t.Fatalf("the stream does not end with an error event: %q", b)
		}
		if k := tr.Snapshot()[0]; k.InFlight != 0 {
			t.Errorf("key still in flight: %+v", k)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if n := len(rec.attempts); n != 1 || rec.attempts[0].Outcome != keypool.OutcomeServerError ||
			!errors.Is(rec.attempts[0].Err, keypool.ErrIdleTimeout) {
			t.Fatalf("attempts %+v", rec.attempts)
		}
	})
}

// TestIdleBodyIsAnError: a JSON answer that stalls mid-body ends with
// ErrIdleTimeout rather than holding the caller.
func TestIdleBodyIsAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := idleTransport(t, pacedUpstream{contentType: "application/json", hang: true,
			parts: []pacedPart{{0, `{"id":"x","choices":[`}}}, &recorder{})
		resp, err := tr.RoundTrip(idleRequest(false))
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, keypool.ErrIdleTimeout) {
			t.Fatalf("read error %v, want ErrIdleTimeout", err)
		}
	})
}

// TestSlowStreamIsNotCut: events that come more often than the idle timeout
// keep a long stream alive.
func TestSlowStreamIsNotCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var parts []pacedPart
		for range 10 {
			parts = append(parts, pacedPart{4 * time.Second, "data: {\"choices\":[]}\n\n"})
		}
		parts[0].after = 0
		parts = append(parts, pacedPart{4 * time.Second, "data: [DONE]\n\n"})
		tr := idleTransport(t, pacedUpstream{contentType: "text/event-stream", parts: parts}, &recorder{})
		resp, err := tr.RoundTrip(idleRequest(true))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !strings.HasSuffix(string(b), "data: [DONE]\n\n") || strings.Contains(string(b), "error") {
			t.Fatalf("err %v, body %q", err, b)
		}
	})
}

// TestStreamAnsweredWithoutSSE: a streaming request answered with another
// content type still has to start within the stream timeout.
func TestStreamAnsweredWithoutSSE(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := idleTransport(t, pacedUpstream{contentType: "application/json", hang: true}, &recorder{})
		start := time.Now()
		_, err := tr.RoundTrip(idleRequest(true))
		if !errors.Is(err, keypool.ErrAttemptTimeout) || time.Since(start) != 3*time.Second {
			t.Fatalf("after %v: err %v, want ErrAttemptTimeout after the 3s stream timeout", time.Since(start), err)
		}
		// One that starts in time is handed back with its first bytes.
		tr = idleTransport(t, pacedUpstream{contentType: "application/json",
			parts: []pacedPart{{time.Second, `{"id":"x"}`}}}, &recorder{})
		resp, err := tr.RoundTrip(idleRequest(true))
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(resp.Body).ReadString('}')
		resp.Body.Close()
		if line != `{"id":"x"}` {
			t.Fatalf("body %q", line)
		}
	})
}
