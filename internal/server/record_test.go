package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// sink hands each record to the test as the server finishes it.
type sink chan records.Record

func (s sink) Add(r records.Record) bool {
	select {
	case s <- r:
		return true
	default:
		return false
	}
}

func (s sink) next(t *testing.T) records.Record {
	t.Helper()
	select {
	case r := <-s:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no record within 10 s")
		return records.Record{}
	}
}

// noSecret fails when a secret shows anywhere in r.
func noSecret(t *testing.T, r records.Record) {
	t.Helper()
	js, _ := json.Marshal(r)
	for _, out := range []string{string(js), fmt.Sprintf("%+v", r)} {
		for _, sec := range secrets {
			if strings.Contains(out, sec) {
				t.Fatalf("a secret is in a record: %s", out)
			}
		}
	}
}

func TestRecords(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{},
		fakeopenai.Key{Secret: keyA, Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: keyB})
	recs := make(sink, 16)
	_, base := proxy(t, server.Options{Tokens: []secret.String{secret.New(clientToken)}, Records: recs, MaxBody: 1 << 10},
		keypool.WithUpstream(url, keyA+","+keyB))

	t.Run("failover then success", func(t *testing.T) {
		resp, b := send(t, "POST", base+"/v1/chat/completions", clientToken, chatBody(false), "Content-Type", "application/json")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		r := recs.next(t)
		noSecret(t, r)
		idA, idB := string(keypool.NewKey(keyA).ID()), string(keypool.NewKey(keyB).ID())
		if r.Client != records.ClientID(clientToken) || r.IP != "127.0.0.1" || r.Method != "POST" || r.Path != "/v1/chat/completions" ||
			r.Model != "gpt-4o-mini" || r.Stream || r.Key != idB || r.Status != 200 || r.Error != "" ||
			r.InputTokens == 0 || r.OutputTokens == 0 || r.TTFB <= 0 || r.Duration < r.TTFB || r.RequestBody != "" || r.ResponseBody != "" {
			t.Fatalf("record %+v", r)
		}
		want := []records.Attempt{{Key: idA, Upstream: r.Upstream, Outcome: "revoked", Status: 401}, {Key: idB, Upstream: r.Upstream, Outcome: "success", Status: 200}}
		if fmt.Sprint(r.Attempts) != fmt.Sprint(want) {
			t.Fatalf("attempts %+v, want %+v", r.Attempts, want)
		}
	})
	t.Run("stream", func(t *testing.T) {
		body := strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
		resp, _ := send(t, "POST", base+"/v1/chat/completions", clientToken, body)
		r := recs.next(t)
		if resp.StatusCode != 200 || !r.Stream || r.Status != 200 || r.OutputTokens == 0 || len(r.Attempts) != 1 {
			t.Fatalf("record %+v", r)
		}
	})
	t.Run("wrong token, then too large", func(t *testing.T) {
		// A refused client is counted, not recorded: its records would
		// let anyone without a token fill the store.
		if resp, _ := send(t, "POST", base+"/v1/chat/completions", wrongToken, chatBody(false)); resp.StatusCode != 401 {
			t.Fatalf("wrong token: %d", resp.StatusCode)
		}
		send(t, "POST", base+"/v1/chat/completions", clientToken, strings.NewReader(strings.Repeat("x", 2<<10)))
		r := recs.next(t)
		if r.Status != 413 || r.Error != "too_large" || r.Client == "" {
			t.Fatalf("record %+v", r)
		}
	})
	t.Run("upstream error passed through", func(t *testing.T) {
		send(t, "POST", base+"/v1/chat/completions", clientToken, strings.NewReader(`{"model":"gpt-4o-mini"`))
		r := recs.next(t)
		if r.Status != 400 || r.Error != "client_error" || len(r.Attempts) != 1 {
			t.Fatalf("record %+v", r)
		}
	})
}

func TestRecordsNoKey(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA})
	recs := make(sink, 4)
	tr, base := proxy(t, server.Options{Records: recs}, keypool.WithUpstream(url, keyA))
	tr.Pool().Disable(keypool.NewKey(keyA).ID(), "test")
	resp, _ := send(t, "POST", base+"/v1/chat/completions", "", chatBody(false))
	r := recs.next(t)
	if resp.StatusCode != 503 || r.Status != 503 || r.Error != "no_key" || r.Model != "gpt-4o-mini" || len(r.Attempts) != 0 || r.Client != "" {
		t.Fatalf("record %+v", r)
	}
}

func TestRecordsBodies(t *testing.T) {
	_, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: keyA})
	recs := make(sink, 4)
	_, base := proxy(t, server.Options{Tokens: []secret.String{secret.New(clientToken)}, Records: recs, Bodies: true, BodyLimit: 40},
		keypool.WithUpstream(url, keyA))
	resp, b := send(t, "POST", base+"/v1/chat/completions", clientToken, chatBody(false), "Api-Key", clientToken)
	r := recs.next(t)
	noSecret(t, r)
	req, _ := io.ReadAll(chatBody(false))
	if resp.StatusCode != 200 || r.RequestBody != string(req[:40]) || r.ResponseBody != string(b[:40]) {
		t.Fatalf("bodies %q / %q", r.RequestBody, r.ResponseBody)
	}
}

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
