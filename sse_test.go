package keypool

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// chunkReader hands out body n bytes at a time, then errAfter: a stream
// that is still open when errAfter is errStillOpen.
type chunkReader struct {
	body     []byte
	n        int
	errAfter error
}

var errStillOpen = errors.New("read past the first event of a stream that is still open")

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.body) == 0 {
		return 0, r.errAfter
	}
	n := copy(p[:min(len(p), r.n)], r.body)
	r.body = r.body[n:]
	return n, nil
}

// TestReadFirstEvent: the first event ends at a blank line whichever line
// end the stream uses (\n, \r\n, \r, or a mix, as the SSE spec allows),
// wherever the reads split it, without reading further.
func TestReadFirstEvent(t *testing.T) {
	const errData = `{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	tests := []struct {
		name    string
		stream  string
		open    bool   // the stream goes on after the text: no read may go past the first event
		errType string // the error the first event holds; "" for none
		wantErr bool
	}{
		{"LF", "data: " + errData + "\n\ndata: more\n\n", true, "tokens", false},
		{"CRLF", "data: " + errData + "\r\n\r\ndata: more\r\n\r\n", true, "tokens", false},
		{"CR", "data: " + errData + "\r\rdata: more\r\r", true, "tokens", false},
		{"mixed", "data: " + errData + "\r\n\rdata: more\n\n", true, "tokens", false},
		{"event: error", "event: error\r" + `data: {"type":"error","code":"server_error","message":"x"}` + "\r\r", true, "server_error", false},
		{"comment first", ": keep-alive\r\r\rdata: " + errData + "\r\r", true, "tokens", false},
		{"a chunk, not an error", "data: {\"id\":\"chatcmpl-1\",\"choices\":[]}\r\rdata: " + errData + "\r\r", true, "", false},
		{"error at EOF without a line end", "data: " + errData, false, "tokens", false},
		{"error body, not an event", errData, false, "tokens", false},
		{"empty", " \r\n", false, "", true},
	}
	for _, tt := range tests {
		for _, n := range []int{1, 2, 3, 7, 64, 1 << 20} {
			r := &chunkReader{body: []byte(tt.stream), n: n, errAfter: io.EOF}
			if tt.open {
				r.errAfter = errStillOpen
			}
			got, apiErr, err := readFirstEvent(r)
			if tt.wantErr {
				if err == nil {
					t.Errorf("%s, reads of %d: no error", tt.name, n)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s, reads of %d: %v", tt.name, n, err)
				continue
			}
			if !bytes.HasPrefix([]byte(tt.stream), got) || len(got) == 0 {
				t.Errorf("%s, reads of %d: returned %q, not the stream's start", tt.name, n, got)
			}
			switch {
			case tt.errType == "" && apiErr != nil:
				t.Errorf("%s, reads of %d: error %+v; want none", tt.name, n, apiErr)
			case tt.errType != "" && (apiErr == nil || apiErr.Type != tt.errType):
				t.Errorf("%s, reads of %d: error %+v; want type %s", tt.name, n, apiErr, tt.errType)
			}
		}
	}
}

// TestStreamCRLineEndsFailOver: a stream whose lines end in a lone \r and
// whose first event is a rate-limit error fails over to another key at
// once, read as the rate limit it is (it used to wait for more bytes until
// the stream timed out, and count as a server error).
func TestStreamCRLineEndsFailOver(t *testing.T) {
	const errEvent = `data: {"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}` + "\r\r"
	const okEvent = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[]}` + "\n\ndata: [DONE]\n\n"
	base := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			r.Body.Close()
		}
		body := io.NopCloser(strings.NewReader(okEvent))
		if r.Header.Get("Authorization") == "Bearer sk-cr" {
			body = io.NopCloser(&chunkReader{body: []byte(errEvent), n: 1 << 10, errAfter: errStillOpen})
		}
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: body, Request: r}, nil
	})
	var outcomes []Outcome
	tr, err := New(WithUpstream("https://api.test/v1", "sk-cr,sk-lf"), WithBase(base),
		WithObserver(ObserverFuncs{OnAttempt: func(e AttemptEvent) { outcomes = append(outcomes, e.Outcome) }}))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "https://api.test/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","stream":true}`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != okEvent {
		t.Fatalf("answer %d %q", resp.StatusCode, b)
	}
	if len(outcomes) != 2 || outcomes[0] != OutcomeRateLimited || outcomes[1] != OutcomeSuccess {
		t.Errorf("attempts %v; want rate_limited, then success", outcomes)
	}
}

// roundTripperFunc is a RoundTripper made of a func.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
