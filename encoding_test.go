package keypool_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/keypool/keypool"
)

// gzipAll is an upstream that gzips every answer, asked or not, errors and
// streams included (each event flushed), as a CDN edge that ignores
// Accept-Encoding would. sk-revoked gets a 401, sk-quota a 429
// insufficient_quota, every other key a 200 with usage; a stream sends its
// first event, then waits for release before the rest.
type gzipAll struct {
	release chan struct{}
	mu      sync.Mutex
	bodies  []string // request bodies as the upstream read them
	encs    []string // their Content-Encoding
	accepts []string // the Accept-Encoding of each request
}

func (g *gzipAll) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	g.mu.Lock()
	g.bodies = append(g.bodies, string(b))
	g.encs = append(g.encs, r.Header.Get("Content-Encoding"))
	g.accepts = append(g.accepts, r.Header.Get("Accept-Encoding"))
	g.mu.Unlock()
	w.Header().Set("Content-Encoding", "gzip")
	zw := gzip.NewWriter(w)
	defer zw.Close()
	key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	stream := bytes.Contains(b, []byte(`"stream":true`))
	switch {
	case key == "sk-revoked":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		fmt.Fprint(zw, `{"error":{"message":"Incorrect API key provided: sk-rev***oked.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
	case key == "sk-quota":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(429)
		fmt.Fprint(zw, `{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`)
	case stream:
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(zw, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		zw.Flush()
		w.(http.Flusher).Flush()
		select {
		case <-g.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(zw, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n")
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(zw, `{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`)
	}
}

func newGzipAll(t *testing.T, opts []keypool.Option, up keypool.Upstream) (*gzipAll, *keypool.Transport) {
	t.Helper()
	g := &gzipAll{release: make(chan struct{})}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	up.BaseURL = srv.URL + "/v1"
	tr, err := keypool.New(append([]keypool.Option{keypool.WithUpstreams(up)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return g, tr
}

// TestCompressedAnswersAreRead: whatever the caller's Accept-Encoding and
// whatever the base RoundTripper does with compression, the pool reads
// plain bytes: a revoked and an over-quota key are recognised, usage is
// counted, and the caller gets plain JSON.
func TestCompressedAnswersAreRead(t *testing.T) {
	noDecode := http.DefaultTransport.(*http.Transport).Clone()
	noDecode.DisableCompression = true
	for _, tc := range []struct {
		name   string
		base   http.RoundTripper
		accept string
	}{
		{"default base, caller asks gzip", nil, "gzip, deflate, br"},
		{"default base, caller asks nothing", nil, ""},
		{"base that never decodes", noDecode, "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []keypool.Option{keypool.WithTrialsFirst(false)}
			if tc.base != nil {
				opts = append(opts, keypool.WithBase(tc.base))
			}
			send := func(tr *keypool.Transport) (*http.Response, []byte) {
				req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
				if tc.accept != "" {
					req.Header.Set("Accept-Encoding", tc.accept)
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp, b
			}
			// A revoked and an over-quota key: both are recognised, and the
			// caller gets keypool's own error, plain.
			_, bad := newGzipAll(t, opts, keypool.Upstream{Keys: []keypool.Key{keypool.NewKey("sk-revoked"), keypool.NewKey("sk-quota")}})
			resp, b := send(bad)
			if resp.StatusCode != 503 || resp.Header.Get("Content-Encoding") != "" || !bytes.Contains(b, []byte(`"no_key_available"`)) {
				t.Fatalf("status %d, headers %v, body %q", resp.StatusCode, resp.Header, b)
			}
			states := map[keypool.KeyID]keypool.KeyInfo{}
			for _, k := range bad.Snapshot() {
				states[k.ID] = k
			}
			if s := states[keypool.NewKey("sk-revoked").ID()].State; s != keypool.StateRevoked {
				t.Errorf("revoked key: %s", s)
			}
			if s := states[keypool.NewKey("sk-quota").ID()].State; s != keypool.StateOverQuota {
				t.Errorf("over-quota key: %s", s)
			}
			// A good key: its usage is counted, the caller gets plain JSON.
			_, good := newGzipAll(t, opts, keypool.Upstream{Keys: []keypool.Key{keypool.NewKey("sk-good-1")}})
			resp, b = send(good)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "" || !bytes.HasPrefix(b, []byte(`{"id":"x"`)) {
				t.Fatalf("status %d, headers %v, body %q", resp.StatusCode, resp.Header, b)
			}
			if u := good.Snapshot()[0].Usage; len(u) != 1 || u[0].InputTokens != 3 || u[0].OutputTokens != 4 {
				t.Errorf("usage %+v", u)
			}
		})
	}
}

// TestCompressedStreamArrivesEventByEvent: a gzipped stream is decoded as it
// comes, so its first event is read (and the stream timeout met) before the
// upstream sends the rest.
func TestCompressedStreamArrivesEventByEvent(t *testing.T) {
	g, tr := newGzipAll(t, nil, keypool.Upstream{Keys: []keypool.Key{keypool.NewKey("sk-good-1")}})
	req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o","stream":true}`))
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err) // the first event never came: the stream was not decoded as it arrived
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: {") {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(g.release)
	rest, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(rest, []byte("[DONE]")) {
		t.Fatalf("rest %q", rest)
	}
	if u := tr.Snapshot()[0].Usage; len(u) != 1 || u[0].OutputTokens != 7 {
		t.Fatalf("usage %+v", u)
	}
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

// TestRequestModelAsTheUpstreamSeesIt: a deny list cannot be stepped around
// with a compressed body, a byte-order mark, or a body keypool cannot read;
// absurd model names are refused before they reach the pool.
func TestRequestModelAsTheUpstreamSeesIt(t *testing.T) {
	g, tr := newGzipAll(t, []keypool.Option{keypool.WithMaxBodyBuffer(1 << 20)},
		keypool.Upstream{Name: "main", Keys: []keypool.Key{keypool.NewKey("sk-good-1")}, Deny: []string{"o1-pro*"}})
	send := func(body []byte, encoding string) error {
		req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if encoding != "" {
			req.Header.Set("Content-Encoding", encoding)
		}
		resp, err := tr.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if nk, ok := keypool.Refusal(resp); ok {
				return nk // the pool's refusal, as an error for the table
			}
		}
		return err
	}
	for _, tc := range []struct {
		name     string
		body     []byte
		encoding string
		want     error // nil: served
	}{
		{"plain denied", []byte(`{"model":"o1-pro"}`), "", keypool.ErrNoKey},
		{"gzip denied", gzipped(`{"model":"o1-pro"}`), "gzip", keypool.ErrNoKey},
		{"x-gzip denied", gzipped(`{"model":"o1-pro-2025"}`), "x-gzip", keypool.ErrNoKey},
		{"byte-order mark denied", []byte("\xEF\xBB\xBF{\"model\":\"o1-pro\"}"), "", keypool.ErrNoKey},
		{"brotli: unreadable", []byte("\x1b\x03\x00"), "br", keypool.ErrUnreadableModel},
		{"not JSON: unreadable", []byte(`model=o1-pro`), "", keypool.ErrUnreadableModel},
		{"gzip garbage", []byte("not gzip at all"), "gzip", nil},
		{"model too long", []byte(`{"model":"` + strings.Repeat("m", 257) + `"}`), "", keypool.ErrBadModel},
		{"model empty", []byte(`{"model":""}`), "", keypool.ErrBadModel},
		{"model with a newline", []byte(`{"model":"gpt-4o\n"}`), "", keypool.ErrBadModel},
		{"model not UTF-8", []byte("{\"model\":\"gpt\xff\"}"), "", keypool.ErrBadModel},
		{"gzip bomb", gzipped(`{"model":"gpt-4o","pad":"` + strings.Repeat("a", 2<<20) + `"}`), "gzip", keypool.ErrBodyTooLarge},
		{"gzip allowed", gzipped(`{"model":"gpt-4o"}`), "gzip", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g.mu.Lock()
			g.bodies, g.encs = nil, nil
			g.mu.Unlock()
			err := send(tc.body, tc.encoding)
			g.mu.Lock()
			bodies, encs := g.bodies, g.encs
			g.mu.Unlock()
			switch {
			case tc.want == nil && tc.name == "gzip garbage":
				// Undecodable: an error before any attempt, never the
				// body passed on as if it were plain.
				if err == nil || len(bodies) != 0 {
					t.Fatalf("err %v, upstream saw %d requests", err, len(bodies))
				}
			case tc.want == nil:
				if err != nil || len(bodies) != 1 || bodies[0] != `{"model":"gpt-4o"}` || encs[0] != "" {
					t.Fatalf("err %v; upstream saw %q with encoding %q", err, bodies, encs)
				}
			default:
				if !errors.Is(err, tc.want) || len(bodies) != 0 {
					t.Fatalf("err %v, want %v; upstream saw %q", err, tc.want, bodies)
				}
			}
		})
	}
}

// TestUnreadableModelGoesOnlyWhereNoListApplies: a body whose model cannot
// be read may still use an upstream without model lists.
func TestUnreadableModelGoesOnlyWhereNoListApplies(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"upstream":%q}`, r.URL.Path)
	}))
	defer srv.Close()
	tr, err := keypool.New(keypool.WithUpstreams(
		keypool.Upstream{Name: "listed", BaseURL: srv.URL + "/listed", Keys: []keypool.Key{keypool.NewKey("sk-a")}, Allow: []string{"gpt-4o"}},
		keypool.Upstream{Name: "open", BaseURL: srv.URL + "/open", Keys: []keypool.Key{keypool.NewKey("sk-b")}},
	))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "http://x/v1/chat/completions", strings.NewReader(`not json`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "/open/") {
		t.Fatalf("went to %s", b)
	}
}

// TestPoolKeyErrorsAreKeypools: an upstream's error about the pool's key is
// not handed to the caller (it can quote the key and looks like the
// caller's own bad key); other errors pass, with any copy of the key's
// secret replaced by its ID.
func TestPoolKeyErrorsAreKeypools(t *testing.T) {
	const secret = "sk-echo-secret-0123456789"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo", "key="+key)
		switch {
		case strings.Contains(r.URL.Path, "revoked"):
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`, key[:6]+"***"+key[len(key)-4:])
		default:
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"error":{"message":"Bad request sent with %s.","type":"invalid_request_error","param":null,"code":null}}`, key)
		}
	}))
	defer srv.Close()
	for _, tc := range []struct {
		path, wantCode string
		status         int
	}{
		{"/v1/revoked", "no_key_available", 503},
		{"/v1/chat/completions", "", 400},
	} {
		tr, err := keypool.New(keypool.WithUpstream(srv.URL+"/v1", secret))
		if err != nil {
			t.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("POST", "http://x"+tc.path, strings.NewReader(`{"model":"gpt-4o"}`))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		all := fmt.Sprint(resp.Header) + string(b)
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.wantCode) ||
			strings.Contains(all, secret) || strings.Contains(all, "sk-ech") || strings.Contains(all, "6789") && tc.status != 400 {
			t.Fatalf("%s: status %d, headers %v, body %s", tc.path, resp.StatusCode, resp.Header, b)
		}
		if tc.status == 400 && !strings.Contains(string(b), string(keypool.NewKey(secret).ID())) {
			t.Fatalf("%s: the key's ID does not stand in for it: %s", tc.path, b)
		}
	}
}
