package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// clientToken is what the load clients send to the keypool proxy.
const clientToken = "tok-loadtest-0000000000"

// upstreamKeys are the keys the keypool proxy spends; the loopback upstream
// accepts any.
const upstreamKeys = "sk-load-1111111111111111,sk-load-2222222222222222,sk-load-3333333333333333,sk-load-4444444444444444"

var (
	jsonAnswer = []byte(`{"id":"chatcmpl-load","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini-2024-07-18",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":11,"completion_tokens":9,"total_tokens":20},"service_tier":"default","system_fingerprint":"fp_load"}` + "\n")
	streamEvents = func() [][]byte {
		chunk := func(delta, finish string) []byte {
			return []byte(`data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18",` +
				`"system_fingerprint":"fp_load","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + finish + `}],"usage":null}` + "\n\n")
		}
		return [][]byte{
			chunk(`{"role":"assistant","content":"","refusal":null}`, "null"),
			chunk(`{"content":"Hello"}`, "null"),
			chunk(`{"content":"! How can I help"}`, "null"),
			chunk(`{"content":" you today?"}`, "null"),
			chunk(`{}`, `"stop"`),
			[]byte(`data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini-2024-07-18",` +
				`"system_fingerprint":"fp_load","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":9,"total_tokens":20}}` + "\n\n"),
			[]byte("data: [DONE]\n\n"),
		}
	}()
	streamMarker = []byte(`"stream":true`)
)

// upstream is a fast loopback stand-in for api.openai.com: it answers every
// chat completion at once, as JSON or as an SSE stream flushed event by
// event, with the headers the real API sends (generous rate limits, so the
// pool never holds a key back).
func upstream(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"message":"Unknown request URL","type":"invalid_request_error","param":null,"code":"unknown_url"}}`)
		return
	}
	h := w.Header()
	h.Set("openai-version", "2020-10-01")
	h.Set("openai-processing-ms", "1")
	h.Set("openai-organization", "org-loadtest")
	h.Set("x-request-id", "req_loadtest")
	h.Set("x-ratelimit-limit-requests", "1000000000")
	h.Set("x-ratelimit-remaining-requests", "999999999")
	h.Set("x-ratelimit-reset-requests", "1ms")
	h.Set("x-ratelimit-limit-tokens", "1000000000")
	h.Set("x-ratelimit-remaining-tokens", "999999999")
	h.Set("x-ratelimit-reset-tokens", "1ms")
	if !bytes.Contains(body, streamMarker) {
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", fmt.Sprint(len(jsonAnswer)))
		w.Write(jsonAnswer)
		return
	}
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f := w.(http.Flusher)
	for _, ev := range streamEvents {
		if _, err := w.Write(ev); err != nil {
			return
		}
		f.Flush()
	}
}

// rig is the loopback upstream and the two proxies in front of it, each on
// its own 127.0.0.1 listener, plus one client per proxy.
type rig struct {
	upstream, bare, keypool *loopServer
	transport               *keypool.Transport
	bareTransport           *http.Transport
	bareClient, kpClient    *http.Client

	// A keypool proxy with records in SQLite, on the same transport, when
	// startRecords was called.
	recorded  *loopServer
	recClient *http.Client
	store     records.Store
	writer    *records.Writer
	// stopWriter ends the writer's Run and waits for its drain (30s at
	// most); every call after the first returns the first one's error.
	stopWriter func() error
}

// startRecords starts a second keypool proxy, on the same transport, that
// writes request records to the SQLite file at path.
func (r *rig) startRecords(path string) error {
	st, err := records.Open(records.TypeSQLite, secret.New(path))
	if err != nil {
		return err
	}
	r.store = st
	r.writer = records.NewWriter(st, records.WriterOptions{DrainTimeout: 30 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.writer.Run(ctx) }()
	r.stopWriter = sync.OnceValue(func() error {
		cancel()
		return <-ran
	})
	srv, err := server.New(server.Options{Transport: r.transport, Tokens: []secret.String{secret.New(clientToken)}, Records: r.writer})
	if err != nil {
		return err
	}
	if r.recorded, err = listen(srv.Handler()); err != nil {
		return err
	}
	r.recClient = &http.Client{Transport: newHTTPTransport(r.kpClient.Transport.(*http.Transport).MaxIdleConnsPerHost)}
	return nil
}

// newRig starts the upstream and both proxies. conns is how many idle
// connections each client keeps.
func newRig(conns int) (*rig, error) {
	up, err := listen(http.HandlerFunc(upstream))
	if err != nil {
		return nil, err
	}
	r := &rig{upstream: up}
	upURL, _ := url.Parse(up.url)

	r.bareTransport = newHTTPTransport(256)
	bare := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(upURL) },
		Transport: r.bareTransport,
	}
	if r.bare, err = listen(bare); err != nil {
		r.close()
		return nil, err
	}

	if r.transport, err = keypool.New(keypool.WithUpstream(up.url+"/v1", upstreamKeys)); err != nil {
		r.close()
		return nil, err
	}
	srv, err := server.New(server.Options{Transport: r.transport, Tokens: []secret.String{secret.New(clientToken)}})
	if err != nil {
		r.close()
		return nil, err
	}
	if r.keypool, err = listen(srv.Handler()); err != nil {
		r.close()
		return nil, err
	}
	r.bareClient = &http.Client{Transport: newHTTPTransport(conns)}
	r.kpClient = &http.Client{Transport: newHTTPTransport(conns)}
	return r, nil
}

func newHTTPTransport(idle int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 0
	t.MaxIdleConnsPerHost = idle
	t.Proxy = nil // loopback only, whatever the environment says
	return t
}

// closeIdle closes every idle connection of the clients and of the proxies'
// transports, and waits until every server has seen its connections close.
func (r *rig) closeIdle(ctx context.Context) error {
	for _, c := range []*http.Client{r.bareClient, r.kpClient} {
		if c != nil {
			c.CloseIdleConnections()
		}
	}
	if r.bareTransport != nil {
		r.bareTransport.CloseIdleConnections()
	}
	if r.transport != nil {
		r.transport.CloseIdleConnections()
	}
	for _, s := range []*loopServer{r.bare, r.keypool, r.upstream} {
		if s == nil {
			continue
		}
		if err := s.conns.wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// close stops everything the rig started.
func (r *rig) close() {
	for _, c := range []*http.Client{r.bareClient, r.kpClient, r.recClient} {
		if c != nil {
			c.CloseIdleConnections()
		}
	}
	for _, s := range []*loopServer{r.bare, r.keypool, r.recorded, r.upstream} {
		if s != nil {
			s.srv.Close()
		}
	}
	if r.stopWriter != nil {
		r.stopWriter()
	}
	if r.store != nil {
		r.store.Close()
	}
	if r.bareTransport != nil {
		r.bareTransport.CloseIdleConnections()
	}
	if r.transport != nil {
		r.transport.CloseIdleConnections()
	}
}

// loopServer is an http.Server on 127.0.0.1 that counts its open
// connections.
type loopServer struct {
	srv   *http.Server
	url   string
	conns connCount
}

func listen(h http.Handler) (*loopServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &loopServer{url: "http://" + ln.Addr().String()}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.add(-1)
			}
		},
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic("loadtest: serve: " + err.Error())
		}
	}()
	return s, nil
}

// connCount counts open connections; wait blocks until there are none.
type connCount struct {
	mu      sync.Mutex // guards n and zero
	n       int
	waiters []chan struct{}
}

func (c *connCount) add(d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += d
	if c.n == 0 {
		for _, w := range c.waiters {
			close(w)
		}
		c.waiters = nil
	}
}

func (c *connCount) wait(ctx context.Context) error {
	c.mu.Lock()
	if c.n == 0 {
		c.mu.Unlock()
		return nil
	}
	w := make(chan struct{})
	c.waiters = append(c.waiters, w)
	n := c.n
	c.mu.Unlock()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d connections still open: %w", n, ctx.Err())
	}
}
