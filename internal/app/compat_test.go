package app_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// These tests prove that openai-api-route's own config examples, loaded
// unchanged, behave as openai-api-route documents them: who may use which
// upstream, in which order upstreams are tried, allow and deny, and
// timeouts. The configs name real hosts (api.openai.com, localhost:5000);
// a fakeopenai.Router answers for all of them in memory and notes where
// each attempt went.

// upstreamScript says how the router's hosts answer: a status per host
// (200 when not listed), or a hang until the attempt's time runs out.
type upstreamScript struct {
	// replicate answers for api.replicate.com when no status or hang is
	// scripted for it: Replicate's predictions API, for key_for_replicate.
	replicate http.Handler

	mu     sync.Mutex
	status map[string]int // by host
	hang   map[string]bool
}

func (s *upstreamScript) set(host string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == nil {
		s.status = map[string]int{}
	}
	s.status[host] = status
}

func (s *upstreamScript) hangOn(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang == nil {
		s.hang = map[string]bool{}
	}
	s.hang[host] = true
}

func (s *upstreamScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	status, hang := s.status[r.Host], s.hang[r.Host]
	s.mu.Unlock()
	if r.Host == "api.replicate.com" && status == 0 && !hang && s.replicate != nil {
		s.replicate.ServeHTTP(w, r)
		return
	}
	io.Copy(io.Discard, r.Body)
	if hang {
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch status {
	case 0, 200:
		fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	case 401:
		w.WriteHeader(401)
		fmt.Fprint(w, `{"error":{"message":"Incorrect API key provided: sk-b***bad.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
	default:
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}`)
	}
}

// compatProxy serves the config file (openai-api-route's fixtures, or one
// given as text) over a router, built by app.New as keypool serve builds it;
// it returns the handler, the router and the log.
type compatProxy struct {
	h      http.Handler
	router *fakeopenai.Router
	script *upstreamScript
	tr     *keypool.Transport
	logs   *syncBuffer
	cfg    *config.Config
}

func newCompatProxy(t *testing.T, cfg *config.Config) *compatProxy {
	t.Helper()
	script := &upstreamScript{replicate: fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "key_for_replicate"})}
	router := &fakeopenai.Router{Handler: script}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.DBType = "none" // these tests are not about records: no ./db.sqlite
	a, err := app.New(cfg, app.Options{Logger: logger, Transport: []keypool.Option{keypool.WithBase(router),
		keypool.WithBackoff(time.Millisecond, time.Millisecond), keypool.WithMaxWait(0)}})
	if err != nil {
		t.Fatal(err)
	}
	return &compatProxy{h: a.Handler(), router: router, script: script, tr: a.Transport(), logs: logs, cfg: cfg}
}

// syncBuffer is a log written by the proxy's goroutines and read by the
// test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func fixture(t *testing.T, name string) *config.Config {
	t.Helper()
	cfg, err := config.Load(filepath.Join("..", "config", "testdata", "openai-api-route", name))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// request is one client request of a case.
type request struct {
	token  string // the Authorization header's value after "Bearer "; "" for none
	model  string // a chat model, or "transcription" for a multipart upload
	stream bool
}

func (p *compatProxy) send(req request) (status int, hits []fakeopenai.Hit) {
	p.router.Reset()
	var body io.Reader
	path, ctype := "/v1/chat/completions", "application/json"
	if req.model == "transcription" {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		mw.WriteField("model", "whisper-1")
		fw, _ := mw.CreateFormFile("file", "a.wav")
		fw.Write([]byte("RIFF"))
		mw.Close()
		body, path, ctype = &b, "/v1/audio/transcriptions", mw.FormDataContentType()
	} else {
		body = strings.NewReader(fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, req.model, req.stream))
	}
	r := httptest.NewRequest("POST", path, body)
	r.Header.Set("Content-Type", ctype)
	if req.token != "" {
		r.Header.Set("Authorization", "Bearer "+req.token)
	}
	w := httptest.NewRecorder()
	p.h.ServeHTTP(w, r)
	return w.Code, p.router.Hits()
}

// attempt is where one attempt went: the URL and the Authorization sent.
type attempt struct{ url, auth string }

func attempts(hits []fakeopenai.Hit) []attempt {
	var out []attempt
	for _, h := range hits {
		out = append(out, attempt{h.URL, h.Authorization})
	}
	return out
}

// compatCase is one request to a fixture and what openai-api-route's
// documentation says becomes of it.
type compatCase struct {
	name   string
	req    request
	script func(*upstreamScript) // before the request; nil: every host answers 200
	status int                   // 0: any refusal (4xx or 5xx) without an attempt
	want   []attempt
}

func runCompatCases(t *testing.T, file string, cases []compatCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newCompatProxy(t, fixture(t, file))
			defer p.tr.CloseIdleConnections()
			if tc.script != nil {
				tc.script(p.script)
			}
			status, hits := p.send(tc.req)
			got := attempts(hits)
			switch {
			case tc.status == 0 && (status < 400 || len(got) > 0):
				t.Fatalf("status %d, attempts %v; want a refusal without any attempt", status, got)
			case tc.status != 0 && (status != tc.status || !slices.Equal(got, tc.want)):
				t.Fatalf("status %d, attempts %v; want %d, %v", status, got, tc.status, tc.want)
			}
			for _, secret := range []string{"woshimima", "iampassword", "guest", "secret_key_1", "secret_key_2", "hahaha"} {
				if strings.Contains(p.logs.String(), secret) {
					t.Fatalf("the log holds %q:\n%s", secret, p.logs.String())
				}
			}
		})
	}
}

const (
	mixtral              = "mistralai/mixtral-8x7b-instruct-v0.1"
	replicatePredictions = "https://api.replicate.com/v1/models/" + mixtral + "/predictions"

	v1    = "https://api.openai.com/v1/chat/completions"
	v2    = "https://api.openai.com/v2/chat/completions"
	bearK = "Bearer "
)

// TestOpenAIAPIRouteSample: the repository's config.sample.yaml. One token,
// lb_policy order, two OpenAI upstreams with allow and deny lists, and a
// replicate upstream that serves the one model it allows as a prediction.
func TestOpenAIAPIRouteSample(t *testing.T) {
	woshimima := request{token: "woshimima", model: "gpt-3.5-trubo"}
	runCompatCases(t, "config.sample.yaml", []compatCase{
		{name: "no token", req: request{model: "gpt-3.5-trubo"}, status: 401},
		{name: "wrong token", req: request{token: "iampassword", model: "gpt-3.5-trubo"}, status: 401},
		{name: "first upstream first", req: woshimima, status: 200, want: []attempt{{v2, bearK + "secret_key_1"}}},
		// In order; and a quick transient failure with nothing else left
		// is tried again after a backoff (keypool's retry, within 4
		// attempts).
		{name: "failover in order", req: woshimima, script: func(s *upstreamScript) { s.set("api.openai.com", 500) },
			status: 500, want: []attempt{{v2, bearK + "secret_key_1"}, {v1, bearK + "secret_key_2"},
				{v2, bearK + "secret_key_1"}, {v1, bearK + "secret_key_2"}}},
		{name: "allowed nowhere", req: request{token: "woshimima", model: "gpt-4o"}},
		{name: "denied", req: request{token: "woshimima", model: "gpt-4"}},
		{name: "replicate's model to Replicate", req: request{token: "woshimima", model: mixtral}, status: 200,
			want: []attempt{{replicatePredictions, bearK + "key_for_replicate"}}},
		{name: "Replicate refuses the key", req: request{token: "woshimima", model: mixtral},
			// Its only key revoked, the pool has none left for the model.
			script: func(s *upstreamScript) { s.set("api.replicate.com", 401) }, status: 503,
			want: []attempt{{replicatePredictions, bearK + "key_for_replicate"}}},
	})
}

// TestOpenAIAPIRouteReadmeConfig: the README's sample config. Global timeouts
// of 120 s and 10 s, a whisper-only upstream matched by URL path, and the
// third upstream with a 30 s timeout and a deny list.
func TestOpenAIAPIRouteReadmeConfig(t *testing.T) {
	runCompatCases(t, "readme-config.yaml", []compatCase{
		{name: "no token", req: request{model: "gpt-4o"}, status: 401},
		{name: "transcription by path", req: request{token: "woshimima", model: "transcription"}, status: 200,
			want: []attempt{{"https://localhost:8888/v1/audio/transcriptions", bearK + "hahaha"}}},
		{name: "allow list", req: request{token: "woshimima", model: "gpt-3.5-trubo-0613"}, status: 200,
			want: []attempt{{v2, bearK + "secret_key_1"}}},
		{name: "not allowed on the first two", req: request{token: "woshimima", model: "gpt-4o"}, status: 200,
			want: []attempt{{v1, bearK + "secret_key_2"}}},
		{name: "denied on the third", req: request{token: "woshimima", model: "gpt-4"}},
		// The third upstream allows every model but gpt-4, and comes first.
		{name: "replicate's model, in order", req: request{token: "woshimima", model: mixtral}, status: 200,
			want: []attempt{{v1, bearK + "secret_key_2"}}},
		{name: "replicate's model fails over to Replicate", req: request{token: "woshimima", model: mixtral},
			script: func(s *upstreamScript) { s.set("api.openai.com", 500) }, status: 200,
			want: []attempt{{v1, bearK + "secret_key_2"}, {replicatePredictions, bearK + "key_for_replicate"}}},
		{name: "a failed upstream fails over", req: request{token: "woshimima", model: "gpt-3.5-trubo"},
			script: func(s *upstreamScript) { s.set("api.openai.com", 502) }, status: 502,
			want: []attempt{{v2, bearK + "secret_key_1"}, {v1, bearK + "secret_key_2"},
				{v2, bearK + "secret_key_1"}, {v1, bearK + "secret_key_2"}}},
	})
}

// TestOpenAIAPIRouteReadmeTimeouts: each upstream waits as long as the
// README's config says before the request fails over to the next: 120 s,
// 10 s for a stream, and the third upstream's own 30 s.
func TestOpenAIAPIRouteReadmeTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   request
		total time.Duration // until the last hung attempt gives up
		want  []attempt
	}{
		{"timeout", request{token: "woshimima", model: "gpt-3.5-trubo"}, 120*time.Second + 30*time.Second,
			[]attempt{{v2, bearK + "secret_key_1"}, {v1, bearK + "secret_key_2"}}},
		{"stream_timeout", request{token: "woshimima", model: "gpt-3.5-trubo", stream: true}, 10*time.Second + 10*time.Second,
			[]attempt{{v2, bearK + "secret_key_1"}, {v1, bearK + "secret_key_2"}}},
		{"the upstream's own timeout", request{token: "woshimima", model: "gpt-4o"}, 30 * time.Second,
			[]attempt{{v1, bearK + "secret_key_2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newCompatProxy(t, fixture(t, "readme-config.yaml"))
				p.script.hangOn("api.openai.com")
				start := time.Now()
				status, hits := p.send(tc.req)
				// Backoff between attempts is a millisecond here.
				if took := time.Since(start); took < tc.total || took > tc.total+time.Second {
					t.Errorf("the request took %v, want %v", took, tc.total)
				}
				if status != http.StatusBadGateway || !slices.Equal(attempts(hits), tc.want) {
					t.Fatalf("status %d, attempts %v; want 502, %v", status, attempts(hits), tc.want)
				}
			})
		})
	}
}

// TestOpenAIAPIRouteReadmeAuthorization: an upstream with a token of its own
// takes only that token. The README: "只有携带 woshimima 验证头的用户可以使用该上游"
// (only users with the woshimima token can use this upstream), although
// iampassword is a top-level token too.
func TestOpenAIAPIRouteReadmeAuthorization(t *testing.T) {
	runCompatCases(t, "readme-authorization-upstream.yaml", []compatCase{
		{name: "its own token", req: request{token: "woshimima", model: "gpt-4o"}, status: 200,
			want: []attempt{{v1, bearK + "key"}}},
		{name: "another top-level token", req: request{token: "iampassword", model: "gpt-4o"}, status: 403},
		{name: "no token", req: request{model: "gpt-4o"}, status: 401},
	})
}

// TestOpenAIAPIRouteReadmeComplex: the README's "complex" example. Anyone may
// use the local transcription upstream (noauth); only the guest token may
// use the guest upstream, which has no key, so its requests carry no
// Authorization; the default token may use neither of them for chat.
func TestOpenAIAPIRouteReadmeComplex(t *testing.T) {
	const (
		local = "http://localhost:5000/v1/audio/transcriptions"
		guest = "https://api.xxx.local/v1/chat/completions"
	)
	runCompatCases(t, "readme-complex.yaml", []compatCase{
		{name: "anyone transcribes", req: request{model: "transcription"}, status: 200, want: []attempt{{local, bearK + "xxx"}}},
		{name: "a wrong token transcribes", req: request{token: "nobody", model: "transcription"}, status: 200,
			want: []attempt{{local, bearK + "xxx"}}},
		{name: "guest transcribes", req: request{token: "guest", model: "transcription"}, status: 200,
			want: []attempt{{local, bearK + "xxx"}}},
		{name: "guest chats, without a key", req: request{token: "guest", model: "gpt-3.5-turbo-0125"}, status: 200,
			want: []attempt{{guest, ""}}},
		{name: "the default token may not use the guest upstream", req: request{token: "woshimima", model: "gpt-3.5-turbo-0125"}},
		{name: "no token may not use the guest upstream", req: request{model: "gpt-3.5-turbo-0125"}},
		{name: "the default token transcribes", req: request{token: "woshimima", model: "transcription"}, status: 200,
			want: []attempt{{local, bearK + "xxx"}}},
		{name: "guest, another model", req: request{token: "guest", model: "gpt-4o"}},
	})
}

func parseConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(text), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestLBPolicyRandom: lb_policy random spreads requests over the upstreams
// a client may use, and failover still reaches each once.
func TestLBPolicyRandom(t *testing.T) {
	p := newCompatProxy(t, parseConfig(t, `authorization: tok
lb_policy: random
upstreams:
  - {sk: sk-a, endpoint: "https://a.example/v1"}
  - {sk: sk-b, endpoint: "https://b.example/v1"}
  - {sk: sk-c, endpoint: "https://c.example/v1", authorization: other}
`))
	defer p.tr.CloseIdleConnections()
	count := map[string]int{}
	for range 200 {
		status, hits := p.send(request{token: "tok", model: "gpt-4o"})
		if status != 200 || len(hits) != 1 {
			t.Fatalf("status %d, hits %v", status, hits)
		}
		count[strings.Split(hits[0].URL, "/")[2]]++
	}
	// 200 fair coin flips: fewer than 60 on either side has odds below 1e-8.
	if count["a.example"] < 60 || count["b.example"] < 60 || count["c.example"] != 0 {
		t.Fatalf("requests per upstream: %v", count)
	}
	for range 20 {
		p := newCompatProxy(t, p.cfg)
		p.script.set("a.example", 500)
		p.script.set("b.example", 500)
		_, hits := p.send(request{token: "tok", model: "gpt-4o"})
		var hosts []string
		for _, h := range hits {
			hosts = append(hosts, strings.Split(h.URL, "/")[2])
		}
		// Each once in a shuffled order, then each again (a transient
		// failure with nothing else left is retried after a backoff).
		if len(hosts) != 4 || hosts[0] == hosts[1] {
			t.Fatalf("failover went to %v, want a and b once each first", hosts)
		}
		slices.Sort(hosts)
		if !slices.Equal(hosts, []string{"a.example", "a.example", "b.example", "b.example"}) {
			t.Fatalf("failover went to %v, want a and b twice each", hosts)
		}
	}
}

// TestSkAsis: an upstream with sk: asis sends each client's own
// Authorization; the pool learns nothing from its answers, and a client
// token never reaches a pool upstream.
func TestSkAsis(t *testing.T) {
	p := newCompatProxy(t, parseConfig(t, `authorization: tok-proxy
upstreams:
  - sk: asis
    endpoint: https://byok.example/v1
    noauth: true
    allow: ["byok-*"]
  - sk: sk-pool
    endpoint: https://pool.example/v1
`))
	defer p.tr.CloseIdleConnections()
	const byok = "https://byok.example/v1/chat/completions"
	status, hits := p.send(request{token: "sk-own-1", model: "byok-1"})
	if got := attempts(hits); status != 200 || !slices.Equal(got, []attempt{{byok, "Bearer sk-own-1"}}) {
		t.Fatalf("own key: status %d, attempts %v", status, got)
	}
	status, hits = p.send(request{token: "tok-proxy", model: "gpt-4o"})
	if got := attempts(hits); status != 200 || !slices.Equal(got, []attempt{{"https://pool.example/v1/chat/completions", "Bearer sk-pool"}}) {
		t.Fatalf("proxy token: status %d, attempts %v", status, got)
	}
	// A client's own key is not a proxy token: the pool's upstream stays
	// out of its reach.
	if status, hits = p.send(request{token: "sk-own-1", model: "gpt-4o"}); len(hits) != 0 || status < 400 {
		t.Fatalf("own key for a pool model: status %d, attempts %v", status, attempts(hits))
	}
	// A bad client key is the client's: its 401 comes back as it is, and
	// the upstream stays usable for the next client.
	p.script.set("byok.example", 401)
	if status, _ = p.send(request{token: "sk-bad", model: "byok-1"}); status != 401 {
		t.Fatalf("bad own key: status %d", status)
	}
	p.script.set("byok.example", 200)
	if status, _ = p.send(request{token: "sk-own-2", model: "byok-1"}); status != 200 {
		t.Fatalf("after a bad key: status %d", status)
	}
	for _, k := range p.tr.Snapshot() {
		if k.Auth == keypool.AuthCaller && (k.State != keypool.StateReady || len(k.Lacks) > 0) {
			t.Fatalf("the asis stand-in learned from a client's key: %+v", k)
		}
	}
	for _, secret := range []string{"sk-own-1", "sk-own-2", "sk-bad", "tok-proxy", "sk-pool"} {
		if strings.Contains(p.logs.String(), secret) {
			t.Fatalf("the log holds %q:\n%s", secret, p.logs.String())
		}
	}
}

// TestCORS: browsers get openai-api-route's CORS headers, a preflight needs
// no token, and an open proxy (no token anywhere) sends none: any page a
// local browser opens could spend its keys.
func TestCORS(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		want      bool
	}{
		{"tokens", "authorization: tok\nupstreams:\n  - {sk: sk-a, endpoint: 'https://a.example/v1'}\n", true},
		{"cors off", "authorization: tok\ncors: false\nupstreams:\n  - {sk: sk-a, endpoint: 'https://a.example/v1'}\n", false},
		{"open proxy", "upstreams:\n  - {sk: sk-a, endpoint: 'https://a.example/v1'}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newCompatProxy(t, parseConfig(t, tc.cfg))
			defer p.tr.CloseIdleConnections()
			p.script.set("a.example", 200)
			pre := httptest.NewRequest("OPTIONS", "/v1/chat/completions", nil)
			pre.Header.Set("Origin", "https://chat.example")
			pre.Header.Set("Access-Control-Request-Method", "POST")
			w := httptest.NewRecorder()
			p.h.ServeHTTP(w, pre)
			if got := w.Header().Get("Access-Control-Allow-Origin") == "*"; got != tc.want {
				t.Fatalf("preflight: status %d, headers %v", w.Code, w.Header())
			}
			if tc.want && (w.Code != 200 || len(p.router.Hits()) != 0 ||
				w.Header().Get("Access-Control-Allow-Headers") != "Origin, Authorization, Content-Type") {
				t.Fatalf("preflight: status %d, headers %v, hits %v", w.Code, w.Header(), p.router.Hits())
			}
			req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
			req.Header.Set("Authorization", "Bearer tok")
			w = httptest.NewRecorder()
			p.h.ServeHTTP(w, req)
			if got := w.Header().Get("Access-Control-Allow-Origin") == "*"; w.Code != 200 || got != tc.want {
				t.Fatalf("answer: status %d, headers %v", w.Code, w.Header())
			}
		})
	}
}
