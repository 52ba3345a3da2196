package fakeopenai_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool/internal/fakeopenai"
)

// wire is an answer as it came over the connection, not decoded.
type wire struct {
	status        int
	header        http.Header
	contentLength int64 // -1 when not sent
	raw           []byte
}

// serveFunc starts a fresh Server and returns it with a client that sends
// exactly the Accept-Encoding a call sets (none when it sets none) and never
// decodes, and the base URL.
type serveFunc func(cfg fakeopenai.Config, keys ...fakeopenai.Key) (*fakeopenai.Server, *http.Client, string)

// overBoth runs f over 127.0.0.1 (NewTestServer) and over ServePipe under
// synctest. f must not call t.Run.
func overBoth(t *testing.T, f func(t *testing.T, serve serveFunc)) {
	t.Run("loopback", func(t *testing.T) {
		f(t, func(cfg fakeopenai.Config, keys ...fakeopenai.Key) (*fakeopenai.Server, *http.Client, string) {
			s, base := fakeopenai.NewTestServer(t, cfg, keys...)
			tr := &http.Transport{DisableCompression: true}
			t.Cleanup(tr.CloseIdleConnections)
			return s, &http.Client{Transport: tr}, base
		})
	})
	t.Run("pipe", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f(t, servePipe(t))
		})
	})
}

// servePipe is a serveFunc over ServePipe; call it inside a synctest bubble.
func servePipe(t *testing.T) serveFunc {
	return func(cfg fakeopenai.Config, keys ...fakeopenai.Key) (*fakeopenai.Server, *http.Client, string) {
		s := fakeopenai.New(cfg, keys...)
		tr, closePipe := fakeopenai.ServePipe(s)
		tr.DisableCompression = true
		t.Cleanup(func() {
			s.Close()
			closePipe()
		})
		return s, &http.Client{Transport: tr}, fakeopenai.PipeBaseURL
	}
}

func fetchWire(t *testing.T, client *http.Client, base string, c call) wire {
	t.Helper()
	r, err := send(context.Background(), client, base, c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if r.Uncompressed {
		t.Fatal("the client decoded the answer: the test needs the bytes as sent")
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return wire{r.StatusCode, r.Header, r.ContentLength, b}
}

// decoder reads body encoded with coding ("" = plain bytes).
func decoder(t *testing.T, coding string, body io.Reader) io.Reader {
	t.Helper()
	var (
		r   io.Reader
		err error
	)
	switch coding {
	case "":
		return body
	case "gzip":
		r, err = gzip.NewReader(body)
	case "deflate":
		r, err = zlib.NewReader(body)
	default:
		t.Fatalf("unknown coding %q", coding)
	}
	if err != nil {
		t.Fatalf("%s header: %v", coding, err)
	}
	return r
}

func decode(t *testing.T, coding string, raw []byte) []byte {
	t.Helper()
	b, err := io.ReadAll(decoder(t, coding, bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("decoding %s: %v", coding, err)
	}
	return b
}

// checkCoding checks that w was sent in coding ("" = plain bytes) with the
// headers that go with it, and returns its decoded body.
func checkCoding(t *testing.T, w wire, coding string) []byte {
	t.Helper()
	if got := w.header.Get("Content-Encoding"); got != coding {
		t.Errorf("Content-Encoding = %q, want %q", got, coding)
	}
	wantVary := []string(nil)
	if coding != "" {
		wantVary = []string{"Accept-Encoding"}
	}
	if got := w.header.Values("Vary"); !slices.Equal(got, wantVary) {
		t.Errorf("Vary = %q, want %q", got, wantVary)
	}
	if w.contentLength >= 0 && w.contentLength != int64(len(w.raw)) {
		t.Errorf("Content-Length = %d, but %d bytes came", w.contentLength, len(w.raw))
	}
	return decode(t, coding, w.raw)
}

// equalHeaders reports whether a and b are the same but for Date and the
// headers named in ignore.
func equalHeaders(a, b http.Header, ignore ...string) bool {
	strip := func(h http.Header) http.Header {
		h = h.Clone()
		for _, k := range append(ignore, "Date") {
			h.Del(k)
		}
		return h
	}
	return maps.EqualFunc(strip(a), strip(b), slices.Equal)
}

func TestCompressedAnswers(t *testing.T) {
	keys := []fakeopenai.Key{
		{Secret: "sk-ok", Orgs: []fakeopenai.Org{{ID: "org-main", Title: "Main"}, {ID: "org-side", Title: "Side"}}},
		{Secret: "sk-one", RPM: 1},
		{Secret: "sk-broke", Behavior: fakeopenai.OverQuota},
		{Secret: "sk-flaky", Behavior: fakeopenai.Flaky, FailFirst: 1},
		{Secret: "sk-midway", Behavior: fakeopenai.StreamErrorMidway},
		{Secret: "sk-proj-restricted"},
	}
	whisper, whisperType := multipartBody(t, map[string]string{"model": "whisper-1"}, true)
	text, textType := multipartBody(t, map[string]string{"model": "gpt-4o-transcribe", "response_format": "text"}, true)
	tests := []struct {
		name       string
		setup      []call // sent first, without Accept-Encoding
		call       call
		wantStatus int
	}{
		{name: "chat", call: call{path: "/chat/completions", key: "sk-ok", body: chat("gpt-4o")}, wantStatus: 200},
		{name: "responses", call: call{path: "/responses", key: "sk-ok", body: map[string]any{"model": "gpt-4.1", "input": "hi"}}, wantStatus: 200},
		{name: "embeddings", call: call{path: "/embeddings", key: "sk-ok", body: map[string]any{"model": "text-embedding-3-small", "input": []string{"a", "b"}}}, wantStatus: 200},
		{name: "images", call: call{path: "/images/generations", key: "sk-ok", body: map[string]any{"model": "gpt-image-1", "prompt": "a cat"}}, wantStatus: 200},
		{name: "transcription", call: call{path: "/audio/transcriptions", key: "sk-ok", body: whisper, contentType: whisperType}, wantStatus: 200},
		{name: "transcription text", call: call{path: "/audio/transcriptions", key: "sk-ok", body: text, contentType: textType}, wantStatus: 200},
		{name: "models", call: call{method: "GET", path: "/models", key: "sk-ok"}, wantStatus: 200},
		{name: "model", call: call{method: "GET", path: "/models/gpt-4o", key: "sk-ok"}, wantStatus: 200},
		{name: "me", call: call{method: "GET", path: "/me", key: "sk-ok"}, wantStatus: 200},
		{name: "organizations", call: call{method: "GET", path: "/organizations", key: "sk-ok"}, wantStatus: 200},
		{name: "chat stream", call: call{path: "/chat/completions", key: "sk-ok",
			body: chat("gpt-4o", "stream", true, "stream_options", map[string]any{"include_usage": true})}, wantStatus: 200},
		{name: "responses stream", call: call{path: "/responses", key: "sk-ok", body: map[string]any{"model": "gpt-4.1", "input": "hi", "stream": true}}, wantStatus: 200},
		{name: "stream error midway", call: call{path: "/chat/completions", key: "sk-midway", body: chat("gpt-4o", "stream", true)}, wantStatus: 200},
		{name: "bad json", call: call{path: "/chat/completions", key: "sk-ok", body: `{"model":`}, wantStatus: 400},
		{name: "missing auth", call: call{path: "/chat/completions", body: chat("gpt-4o")}, wantStatus: 401},
		{name: "invalid key", call: call{path: "/chat/completions", key: "sk-unknown-0123456789", body: chat("gpt-4o")}, wantStatus: 401},
		{name: "restricted", call: call{method: "GET", path: "/organizations", key: "sk-proj-restricted"}, wantStatus: 403},
		{name: "invalid url", call: call{path: "/xyz", key: "sk-ok", body: "{}"}, wantStatus: 404},
		{name: "unknown model", call: call{path: "/chat/completions", key: "sk-ok", body: chat("gpt-9")}, wantStatus: 404},
		{name: "rate limited", setup: []call{{path: "/chat/completions", key: "sk-one", body: chat("gpt-4o")}},
			call: call{path: "/chat/completions", key: "sk-one", body: chat("gpt-4o")}, wantStatus: 429},
		{name: "over quota", call: call{path: "/chat/completions", key: "sk-broke", body: chat("gpt-4o")}, wantStatus: 429},
		{name: "server error", call: call{path: "/chat/completions", key: "sk-flaky", body: chat("gpt-4o")}, wantStatus: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			overBoth(t, func(t *testing.T, serve serveFunc) {
				// Each answer comes from a fresh Server on a stopped clock, so
				// that ids, timestamps and buckets are the same every time.
				answer := func(acceptEncoding ...string) (wire, fakeopenai.Record) {
					s, client, base := serve(fakeopenai.Config{Now: newClock().Now}, keys...)
					for _, c := range tt.setup {
						fetchWire(t, client, base, c)
					}
					c := tt.call
					c.acceptEncoding = acceptEncoding
					w := fetchWire(t, client, base, c)
					recs := s.Records()
					return w, recs[len(recs)-1]
				}
				plain, rec := answer()
				if plain.status != tt.wantStatus {
					t.Fatalf("status = %d, want %d: %s", plain.status, tt.wantStatus, plain.raw)
				}
				if len(plain.raw) == 0 {
					t.Fatal("empty answer")
				}
				if checkCoding(t, plain, ""); rec.Encoding != "" {
					t.Errorf("plain answer recorded as %q", rec.Encoding)
				}
				for _, coding := range []string{"gzip", "deflate"} {
					accept := "gzip, deflate, br"
					if coding == "deflate" {
						accept = "deflate, br"
					}
					w, rec := answer(accept)
					if w.status != plain.status || !equalHeaders(w.header, plain.header, "Content-Encoding", "Vary", "Content-Length") {
						t.Errorf("%s: %d %v, want %d %v", coding, w.status, w.header, plain.status, plain.header)
					}
					if body := checkCoding(t, w, coding); !bytes.Equal(body, plain.raw) {
						t.Errorf("%s answer decodes to\n%s\nwant\n%s", coding, body, plain.raw)
					}
					if rec.Encoding != coding || rec.Status != tt.wantStatus {
						t.Errorf("%s: record = %+v", coding, rec)
					}
				}
			})
		})
	}
}

func TestAcceptEncoding(t *testing.T) {
	tests := []struct {
		name   string
		accept []string // Accept-Encoding lines; nil = none
		want   string
	}{
		{"none", nil, ""},
		{"empty", []string{""}, ""},
		{"identity", []string{"identity"}, ""},
		{"gzip", []string{"gzip"}, "gzip"},
		{"node and python", []string{"gzip, deflate"}, "gzip"},
		{"with br", []string{"gzip, deflate, br"}, "gzip"},
		{"br only", []string{"br"}, ""},
		{"gzip refused", []string{"gzip;q=0"}, ""},
		{"gzip refused with decimals", []string{"gzip;q=0.000"}, ""},
		{"gzip refused, deflate", []string{"gzip;q=0, deflate"}, "deflate"},
		{"deflate", []string{"deflate"}, "deflate"},
		{"gzip even when less wanted", []string{"deflate;q=1, gzip;q=0.1"}, "gzip"},
		{"case and spaces", []string{"GZIP ; Q=0.5"}, "gzip"},
		{"x-gzip", []string{"x-gzip"}, "gzip"},
		{"star", []string{"*"}, "gzip"},
		{"star refused", []string{"*;q=0"}, ""},
		{"star but not gzip", []string{"*, gzip;q=0"}, "deflate"},
		{"star but neither", []string{"gzip;q=0, deflate;q=0, *"}, ""},
		{"identity only", []string{"identity;q=1, *;q=0"}, ""},
		{"two lines", []string{"br", "gzip"}, "gzip"},
		{"malformed q", []string{"gzip;q=abc"}, ""},
		{"q above 1", []string{"gzip;q=2"}, ""},
		{"q not a number", []string{"deflate, *;q=NaN"}, "deflate"},
		{"malformed gzip, deflate", []string{"gzip;q=x, deflate"}, "deflate"},
	}
	s, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-a"})
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	models := call{method: "GET", path: "/models", key: "sk-a"}
	plain := fetchWire(t, client, base, models).raw
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Reset()
			c := models
			c.acceptEncoding = tt.accept
			w := fetchWire(t, client, base, c)
			if body := checkCoding(t, w, tt.want); w.status != 200 || !bytes.Equal(body, plain) {
				t.Errorf("%d %s", w.status, body)
			}
			if rec := s.Records()[0]; rec.Encoding != tt.want {
				t.Errorf("Record.Encoding = %q, want %q", rec.Encoding, tt.want)
			}
		})
	}
}

func TestNoCompression(t *testing.T) {
	tests := []struct {
		name string
		call call
	}{
		{"json", call{path: "/chat/completions", key: "sk-a", body: chat("gpt-4o")}},
		{"error", call{path: "/chat/completions", key: "sk-unknown", body: chat("gpt-4o")}},
		{"stream", call{path: "/chat/completions", key: "sk-a", body: chat("gpt-4o", "stream", true)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			overBoth(t, func(t *testing.T, serve serveFunc) {
				answer := func(cfg fakeopenai.Config, acceptEncoding ...string) (wire, fakeopenai.Record) {
					cfg.Now = newClock().Now
					s, client, base := serve(cfg, fakeopenai.Key{Secret: "sk-a"})
					c := tt.call
					c.acceptEncoding = acceptEncoding
					return fetchWire(t, client, base, c), s.Records()[0]
				}
				want, _ := answer(fakeopenai.Config{})
				got, rec := answer(fakeopenai.Config{NoCompression: true}, "gzip, deflate, br")
				checkCoding(t, got, "")
				if got.status != want.status || !bytes.Equal(got.raw, want.raw) || !equalHeaders(got.header, want.header) {
					t.Errorf("NoCompression: %d %v\n%s\nwant %d %v\n%s", got.status, got.header, got.raw, want.status, want.header, want.raw)
				}
				if rec.Encoding != "" {
					t.Errorf("Record.Encoding = %q", rec.Encoding)
				}
			})
		})
	}
}

// readEvent reads one server-sent event: its lines up to the blank line.
func readEvent(r *bufio.Reader) (string, error) {
	var ev strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF && ev.Len()+len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		if line == "\n" {
			return ev.String(), nil
		}
		ev.WriteString(line)
	}
}

func TestStreamArrivesEventByEvent(t *testing.T) {
	const interval = 250 * time.Millisecond
	chatStream := call{path: "/chat/completions", key: "sk-paced", body: chat("gpt-4o", "stream", true)}
	responsesStream := call{path: "/responses", key: "sk-paced", body: map[string]any{"model": "gpt-4.1", "input": "hi", "stream": true}}
	tests := []struct {
		name       string
		call       call
		accept     string
		wantCoding string
		wantEvents int    // the role chunk, 6 deltas, the finish chunk, [DONE]: 2 s
		wantLast   string // a prefix of the last event
	}{
		{"chat gzip", chatStream, "gzip, deflate", "gzip", 9, "data: [DONE]"},
		{"chat deflate", chatStream, "deflate", "deflate", 9, "data: [DONE]"},
		{"chat plain", chatStream, "identity", "", 9, "data: [DONE]"},
		{"responses gzip", responsesStream, "gzip", "gzip", 14, "event: response.completed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, client, base := servePipe(t)(fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-paced", StreamInterval: interval})
				c := tt.call
				c.acceptEncoding = []string{tt.accept}
				start := time.Now()
				resp, err := send(t.Context(), client, base, c)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if got := resp.Header.Get("Content-Encoding"); resp.StatusCode != 200 || got != tt.wantCoding {
					t.Fatalf("%d, Content-Encoding %q", resp.StatusCode, got)
				}
				events := bufio.NewReader(decoder(t, tt.wantCoding, resp.Body))
				for i := 0; ; i++ {
					ev, err := readEvent(events)
					if err == io.EOF {
						if i != tt.wantEvents {
							t.Errorf("%d events, want %d", i, tt.wantEvents)
						}
						break
					}
					if err != nil {
						t.Fatalf("event %d: %v", i, err)
					}
					// Time moves only once every goroutine waits: an event that
					// arrives at i·interval was sent alone, not with the rest.
					if got, want := time.Since(start), time.Duration(i)*interval; got != want {
						t.Errorf("event %d arrived at %v, want %v", i, got, want)
					}
					if i == 0 {
						synctest.Wait()
						if rec := s.Records()[0]; rec.Spent || rec.Encoding != tt.wantCoding {
							t.Errorf("after the first event: record = %+v", rec)
						}
					}
					if i == tt.wantEvents-1 && !strings.HasPrefix(ev, tt.wantLast) {
						t.Errorf("last event = %q", ev)
					}
				}
				synctest.Wait()
				if rec := s.Records()[0]; !rec.Spent || s.InFlight() != 0 {
					t.Errorf("after the stream: record = %+v, InFlight %d", rec, s.InFlight())
				}
			})
		})
	}
}

func TestStreamIntervalEndsEarly(t *testing.T) {
	tests := []struct {
		name      string
		end       func(s *fakeopenai.Server, cancel context.CancelFunc)
		wantSpent bool
	}{
		{"client leaves", func(_ *fakeopenai.Server, cancel context.CancelFunc) { cancel() }, false},
		{"server closes", func(s *fakeopenai.Server, _ context.CancelFunc) { s.Close() }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s, client, base := servePipe(t)(fakeopenai.Config{}, fakeopenai.Key{Secret: "sk-slow", StreamInterval: time.Hour})
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				start := time.Now()
				resp, err := send(ctx, client, base, call{path: "/chat/completions", key: "sk-slow", body: chat("gpt-4o", "stream", true),
					acceptEncoding: []string{"gzip"}})
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				events := bufio.NewReader(decoder(t, "gzip", resp.Body))
				if _, err := readEvent(events); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				tt.end(s, cancel)
				n := 1
				for ; ; n++ {
					if _, err = readEvent(events); err != nil {
						break
					}
				}
				if tt.wantSpent && (err != io.EOF || n != 9) || !tt.wantSpent && !errors.Is(err, context.Canceled) {
					t.Errorf("after %d events: %v", n, err)
				}
				synctest.Wait()
				if rec := s.Records()[0]; rec.Spent != tt.wantSpent || s.InFlight() != 0 || time.Since(start) != 0 {
					t.Errorf("record %+v, InFlight %d, after %v", rec, s.InFlight(), time.Since(start))
				}
			})
		})
	}
}
