package keypool_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool"
)

// benchUpstream answers every request at once with a small chat completion
// and OpenAI's rate-limit headers.
func benchUpstream(b *testing.B) *httptest.Server {
	const body = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp_1"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Ratelimit-Limit-Requests", "1000000")
		h.Set("X-Ratelimit-Remaining-Requests", "999999")
		h.Set("X-Ratelimit-Reset-Requests", "6ms")
		h.Set("X-Ratelimit-Limit-Tokens", "150000000")
		h.Set("X-Ratelimit-Remaining-Tokens", "149999990")
		h.Set("X-Ratelimit-Reset-Tokens", "0s")
		io.WriteString(w, body)
	}))
	b.Cleanup(srv.Close)
	return srv
}

const benchRequest = `{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"temperature":0}`

func roundTrips(b *testing.B, rt http.RoundTripper, url string) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := roundTrip(rt, url); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// roundTripsSerial sends one request at a time: the latency a single caller
// sees, without client and server competing for the cores.
func roundTripsSerial(b *testing.B, rt http.RoundTripper, url string) {
	b.ReportAllocs()
	for b.Loop() {
		if err := roundTrip(rt, url); err != nil {
			b.Fatal(err)
		}
	}
}

func roundTrip(rt http.RoundTripper, url string) error {
	req, _ := http.NewRequest("POST", url, strings.NewReader(benchRequest))
	req.Header.Set("Content-Type", "application/json")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// BenchmarkTransport compares a round trip through keypool with one through a
// plain http.Transport to the same loopback server, in the same run: the
// ratio of their ns/op is keypool's overhead.
func BenchmarkTransport(b *testing.B) {
	srv := benchUpstream(b)
	for _, mode := range []struct {
		name string
		run  func(*testing.B, http.RoundTripper, string)
	}{{"parallel", roundTrips}, {"serial", roundTripsSerial}} {
		b.Run(mode.name+"/plain", func(b *testing.B) {
			rt := &http.Transport{MaxIdleConnsPerHost: 64}
			defer rt.CloseIdleConnections()
			mode.run(b, rt, srv.URL+"/v1/chat/completions")
		})
		b.Run(mode.name+"/keypool", func(b *testing.B) {
			base := &http.Transport{MaxIdleConnsPerHost: 64}
			defer base.CloseIdleConnections()
			keys := make([]string, 10)
			for i := range keys {
				keys[i] = "sk-bench-" + string(rune('a'+i))
			}
			t, err := keypool.New(keypool.WithUpstream(srv.URL+"/v1", strings.Join(keys, ",")), keypool.WithBase(base))
			if err != nil {
				b.Fatal(err)
			}
			mode.run(b, t, "http://client.invalid/v1/chat/completions")
		})
	}
}

// cannedTransport answers every request at once from memory, so that
// BenchmarkTransportOverhead measures keypool's own work per request.
type cannedTransport struct{ body string }

func (c cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	h := http.Header{
		"Content-Type":                   {"application/json"},
		"X-Ratelimit-Limit-Requests":     {"1000000"},
		"X-Ratelimit-Remaining-Requests": {"999999"},
		"X-Ratelimit-Reset-Requests":     {"6ms"},
		"X-Ratelimit-Limit-Tokens":       {"150000000"},
		"X-Ratelimit-Remaining-Tokens":   {"149999990"},
		"X-Ratelimit-Reset-Tokens":       {"0s"},
	}
	return &http.Response{StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(strings.NewReader(c.body)), ContentLength: int64(len(c.body)), Request: req}, nil
}

// BenchmarkTransportOverhead is keypool's own cost per request: the same
// in-memory upstream called directly ("direct") and through keypool.
func BenchmarkTransportOverhead(b *testing.B) {
	const body = `{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}`
	canned := cannedTransport{body: body}
	b.Run("direct", func(b *testing.B) {
		roundTrips(b, canned, "http://upstream.invalid/v1/chat/completions")
	})
	b.Run("keypool", func(b *testing.B) {
		t, err := keypool.New(keypool.WithUpstream("http://upstream.invalid/v1", "sk-a,sk-b,sk-c,sk-d"), keypool.WithBase(canned))
		if err != nil {
			b.Fatal(err)
		}
		roundTrips(b, t, "http://client.invalid/v1/chat/completions")
	})
}
