package server_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// discardSink takes records and keeps none.
type discardSink struct{}

func (discardSink) Add(records.Record) bool { return true }

// BenchmarkRecordOverhead is the proxy's own cost of a record per request
// (the record built and handed over; no store), against an in-memory
// upstream.
func BenchmarkRecordOverhead(b *testing.B) {
	const answer = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`
	up := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(answer)), ContentLength: int64(len(answer)), Request: r}, nil
	})
	for _, tc := range []struct {
		name string
		sink server.RecordSink
	}{{"off", nil}, {"on", discardSink{}}} {
		b.Run(tc.name, func(b *testing.B) {
			tr, err := keypool.New(keypool.WithUpstream("http://up.invalid/v1", keyA), keypool.WithBase(up))
			if err != nil {
				b.Fatal(err)
			}
			s, err := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New(clientToken)}, Records: tc.sink})
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}`
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+clientToken)
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
					if w.Code != 200 {
						b.Fatalf("status %d", w.Code)
					}
				}
			})
		})
	}
}
