package server_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/server"
)

// TestTooLargeClosesConnectionWithRecords: a chunked body over MaxBody
// gets a 413 and, as net/http does for http.MaxBytesReader, the connection
// is closed ("Connection: close"). With records on, the recording wrapper
// hides the server's writer from MaxBytesReader (it has no
// requestTooLarge), so the 413 keeps the connection open: turning records
// on changes the proxy's answer.
func TestTooLargeClosesConnectionWithRecords(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA})
	for _, on := range []bool{false, true} {
		opts := server.Options{MaxBody: 1 << 10}
		name := "records off"
		if on {
			opts.Records, name = make(sink, 4), "records on"
		}
		t.Run(name, func(t *testing.T) {
			_, base := proxy(t, opts, keypool.WithUpstream(url, keyA))
			body := io.MultiReader(strings.NewReader(`{"model":"gpt-4o-mini","x":"`), strings.NewReader(strings.Repeat("x", 4<<10)))
			resp, _ := send(t, "POST", base+"/v1/chat/completions", "", body) // no length: chunked
			if resp.StatusCode != 413 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if !resp.Close {
				t.Fatalf("413 without Connection: close (header %v)", resp.Header)
			}
		})
	}
}

// errAfter is a body that gives n bytes, then fails, as an upstream that goes
// away mid-answer.
type errAfter struct{ n int }

func (e *errAfter) Read(p []byte) (int, error) {
	if e.n == 0 {
		return 0, errors.New("connection reset by peer")
	}
	k := min(len(p), e.n)
	for i := range k {
		p[i] = 'x'
	}
	e.n -= k
	return k, nil
}

func (e *errAfter) Close() error { return nil }

// TestRecordOfAnAbortedResponse: a response cut off mid-body still gets its
// record, marked aborted.
func TestRecordOfAnAbortedResponse(t *testing.T) {
	cut := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: &errAfter{n: 100}, ContentLength: 1000, Request: r}, nil
	})
	recs := make(sink, 4)
	_, base := proxy(t, server.Options{Records: recs}, keypool.WithUpstream("http://up.invalid/v1", keyA), keypool.WithBase(cut))
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", chatBody(false))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	r := recs.next(t)
	if r.Status != 200 || r.Error != "aborted" || len(r.Attempts) != 1 {
		t.Fatalf("record %+v", r)
	}
}
