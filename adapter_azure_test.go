package keypool_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// sentLog records what a Transport sent to its base, before the fake sees it.
type sentLog struct {
	mu   sync.Mutex
	reqs []sentReq
}

type sentReq struct {
	url           *url.URL
	authorization string
	apiKey        string
	model         string
}

func (l *sentLog) base(next http.RoundTripper) http.RoundTripper {
	return rvRT(func(r *http.Request) (*http.Response, error) {
		s := sentReq{url: r.URL, authorization: r.Header.Get("Authorization"), apiKey: r.Header.Get("Api-Key")}
		if r.Body != nil && r.GetBody != nil {
			if b, err := r.GetBody(); err == nil {
				var m struct{ Model string }
				raw, _ := io.ReadAll(b)
				json.Unmarshal(raw, &m)
				s.model = m.Model
			}
		}
		l.mu.Lock()
		l.reqs = append(l.reqs, s)
		l.mu.Unlock()
		return next.RoundTrip(r)
	})
}

func (l *sentLog) all() []sentReq {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sentReq(nil), l.reqs...)
}

// azureSetup starts the fake with keys and deployments, and a transport
// over ups (BaseURL "" is the fake's resource root), recording what it sends.
func azureSetup(t *testing.T, deployments map[string]string, keys []fakeopenai.Key, ups ...keypool.Upstream) (*fakeopenai.Server, *keypool.Transport, *recorder, *sentLog, string) {
	t.Helper()
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	root := strings.TrimSuffix(base, "/v1")
	for d, m := range deployments {
		fake.AddDeployment(d, m)
	}
	for i := range ups {
		ups[i].Type = keypool.TypeAzure
		if ups[i].BaseURL == "" {
			ups[i].BaseURL = root
		}
	}
	rec, sent := &recorder{}, &sentLog{}
	tr, err := keypool.New(keypool.WithUpstreams(ups...), keypool.WithObserver(rec),
		keypool.WithBackoff(time.Millisecond, 2*time.Millisecond), keypool.WithBase(sent.base(http.DefaultTransport)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return fake, tr, rec, sent, root
}

func azKeys(secrets ...string) []keypool.Key {
	var out []keypool.Key
	for _, s := range secrets {
		out = append(out, keypool.NewKey(s))
	}
	return out
}

const (
	azKey1 = "azure0000000000000000000000000001"
	azKey2 = "azure0000000000000000000000000002"
)

func TestAzureChatAndStream(t *testing.T) {
	resource := []fakeopenai.Org{{ID: "org-resource-a"}}
	fake, tr, rec, sent, _ := azureSetup(t, map[string]string{"my-gpt4o": "gpt-4o"},
		[]fakeopenai.Key{{Secret: azKey1, Orgs: resource}, {Secret: azKey2, Orgs: resource}},
		keypool.Upstream{Name: "azure-a", Keys: azKeys(azKey1, azKey2), Deployments: map[string]string{"gpt-4o": "my-gpt4o"}})

	resp, body := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"chat.completion"`) {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, tr, chatBody("gpt-4o", true))
	if resp.StatusCode != 200 || !strings.HasSuffix(string(body), "data: [DONE]\n\n") || !strings.Contains(string(body), `"usage":{`) {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	// Azure's opening prompt-filter event follows the first content event.
	if first, _, _ := strings.Cut(string(body), "\n\n"); strings.Contains(first, "prompt_filter_results") ||
		!strings.Contains(string(body), "prompt_filter_results") {
		t.Errorf("stream opens with %s", first)
	}
	if got := rec.outcomes(); !equal(got, []string{"success", "success"}) {
		t.Errorf("outcomes %v", got)
	}
	for _, r := range fake.Records() {
		if r.Path != "/openai/deployments/my-gpt4o/chat/completions" || r.Deployment != "my-gpt4o" || r.Status != 200 || !r.Spent {
			t.Errorf("fake saw %+v", r)
		}
	}
	for _, s := range sent.all() {
		if s.authorization != "" || s.apiKey == "" || s.url.Query().Get("api-version") != keypool.DefaultAzureAPIVersion {
			t.Errorf("sent %s with Authorization %v, api-key set %v", s.url, s.authorization != "", s.apiKey != "")
		}
	}
	// The resource's keys share its quota: one scope, named by its host, and
	// the answers' remaining counts (no limits, no resets) are its budget's.
	var used int64
	for _, secret := range []string{azKey1, azKey2} {
		info := stateOf(t, tr, secret)
		if len(info.Usage) > 0 && !strings.HasPrefix(info.Scope, "127.0.0.1:") || !info.State.Usable() {
			t.Errorf("key %s: scope %q state %v", info.ID, info.Scope, info.State)
		}
		for _, u := range info.Usage {
			used += u.Requests
		}
	}
	if used != 2 {
		t.Errorf("usage counts %d requests, want 2", used)
	}
}

func TestAzureUnauthorizedRevokes(t *testing.T) {
	fake, tr, rec, _, _ := azureSetup(t, map[string]string{"gpt-4o": "gpt-4o"},
		[]fakeopenai.Key{{Secret: azKey1, Behavior: fakeopenai.Revoked}, {Secret: azKey2}},
		keypool.Upstream{Keys: azKeys(azKey1, azKey2)})
	resp, body := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := rec.outcomes(); !equal(got, []string{"revoked", "success"}) {
		t.Errorf("outcomes %v", got)
	}
	if st := stateOf(t, tr, azKey1); st.State != keypool.StateRevoked {
		t.Errorf("key 1 %v (%s)", st.State, st.Reason)
	}
	if recs := fake.Records(); recs[0].Status != 401 || recs[1].Key != azKey2 {
		t.Errorf("fake saw %+v", recs)
	}
}

// spendDirect spends one request of key's bucket behind the pool's back.
func spendDirect(t *testing.T, root, key string) {
	t.Helper()
	req, _ := http.NewRequest("POST", root+"/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
		strings.NewReader(chatBody("gpt-4o", false)))
	req.Header.Set("api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestAzure429RestsAndFailsOver(t *testing.T) {
	fake, tr, rec, _, root := azureSetup(t, map[string]string{"gpt-4o": "gpt-4o"},
		[]fakeopenai.Key{{Secret: azKey1, RPM: 1}, {Secret: azKey2}},
		keypool.Upstream{Name: "resource-a", Keys: azKeys(azKey1)}, keypool.Upstream{Name: "resource-b", Keys: azKeys(azKey2)})
	spendDirect(t, root, azKey1)
	start := time.Now()
	resp, body := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := rec.outcomes(); !equal(got, []string{"rate_limited", "success"}) {
		t.Fatalf("outcomes %v", got)
	}
	recs := fake.Records()
	if last := recs[len(recs)-1]; last.Key != azKey2 || recs[1].Status != 429 {
		t.Errorf("fake saw %+v", recs)
	}
	// The 429's retry-after-ms (a minute's refill of one request) is the rest.
	st := stateOf(t, tr, azKey1)
	if st.State != keypool.StateCooling || st.CoolingUntil.Before(start.Add(30*time.Second)) {
		t.Errorf("key 1 %v until %v", st.State, st.CoolingUntil)
	}
	// Resting, it is not asked again.
	post(t, tr, chatBody("gpt-4o", false))
	if n := fake.Count(azKey1); n != 2 {
		t.Errorf("key 1 sent %d requests, want 2 (one direct, one 429)", n)
	}
}

func TestAzureRemainingWithoutResetsFeedsBudget(t *testing.T) {
	fake, tr, rec, _, _ := azureSetup(t, map[string]string{"gpt-4o": "gpt-4o"},
		[]fakeopenai.Key{{Secret: azKey1, RPM: 2}, {Secret: azKey2}},
		keypool.Upstream{Name: "resource-a", Keys: azKeys(azKey1)}, keypool.Upstream{Name: "resource-b", Keys: azKeys(azKey2)})
	post(t, tr, chatBody("gpt-4o", false))
	st := stateOf(t, tr, azKey1)
	if len(st.Limits) != 1 || st.Limits[0].RemainingRequests != 1 || st.Limits[0].LimitRequests != keypool.Unknown {
		t.Fatalf("limits after one answer: %+v", st.Limits)
	}
	// remaining 0, with no reset said: the budget rests, and the next
	// request goes to the other resource without a 429 first.
	post(t, tr, chatBody("gpt-4o", false))
	if st := stateOf(t, tr, azKey1); st.State != keypool.StateCooling {
		t.Errorf("key 1 %v after remaining 0", st.State)
	}
	post(t, tr, chatBody("gpt-4o", false))
	if got := rec.outcomes(); !equal(got, []string{"success", "success", "success"}) {
		t.Errorf("outcomes %v", got)
	}
	if fake.Count(azKey1) != 2 || fake.Count(azKey2) != 1 {
		t.Errorf("key 1 sent %d, key 2 %d", fake.Count(azKey1), fake.Count(azKey2))
	}
}

func TestAzureContentFilterIsTheClients(t *testing.T) {
	fake, tr, rec, _, _ := azureSetup(t, map[string]string{"gpt-4o": "gpt-4o"},
		[]fakeopenai.Key{{Secret: azKey1}, {Secret: azKey2}},
		keypool.Upstream{Keys: azKeys(azKey1, azKey2)})
	resp, body := post(t, tr, `{"model":"gpt-4o","messages":[{"role":"user","content":"`+fakeopenai.ContentFilterTrigger+`"}]}`)
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"code":"content_filter"`) || !strings.Contains(string(body), "ResponsibleAIPolicyViolation") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := rec.outcomes(); !equal(got, []string{"client_error"}) {
		t.Errorf("outcomes %v", got)
	}
	if n := len(fake.Records()); n != 1 {
		t.Errorf("%d requests upstream, want 1", n)
	}
	for _, s := range []string{azKey1, azKey2} {
		if st := stateOf(t, tr, s); !st.State.Usable() || st.State == keypool.StateCooling || !st.CoolingUntil.IsZero() {
			t.Errorf("key %s %v until %v", st.ID, st.State, st.CoolingUntil)
		}
	}
}

func TestAzurePathsAndDeployments(t *testing.T) {
	deployments := map[string]string{"my-gpt4o": "gpt-4o", "gpt-4o-mini": "gpt-4o-mini", "my-embed": "text-embedding-3-small"}
	for _, tc := range []struct {
		name        string
		v1          bool
		apiVersion  string
		path, body  string
		status      int
		sentPath    string // "" = nothing sent
		sentVersion string
		sentModel   string
	}{
		{name: "mapped", path: "/v1/chat/completions", body: chatBody("gpt-4o", false), status: 200,
			sentPath: "/openai/deployments/my-gpt4o/chat/completions", sentVersion: keypool.DefaultAzureAPIVersion, sentModel: "gpt-4o"},
		{name: "unmapped is its own deployment", apiVersion: "2024-06-01", path: "/v1/chat/completions", body: chatBody("gpt-4o-mini", false), status: 200,
			sentPath: "/openai/deployments/gpt-4o-mini/chat/completions", sentVersion: "2024-06-01", sentModel: "gpt-4o-mini"},
		{name: "embeddings", path: "/v1/embeddings", body: `{"model":"text-embedding-3-small","input":"hi"}`, status: 200,
			sentPath: "/openai/deployments/my-embed/embeddings", sentVersion: keypool.DefaultAzureAPIVersion, sentModel: "text-embedding-3-small"},
		{name: "no model route", path: "/v1/models", status: 200, sentPath: "/openai/models", sentVersion: keypool.DefaultAzureAPIVersion},
		{name: "v1 form", v1: true, path: "/v1/chat/completions", body: chatBody("gpt-4o", true), status: 200,
			sentPath: "/openai/v1/chat/completions", sentModel: "my-gpt4o"},
		{name: "v1 models", v1: true, path: "/v1/models", status: 200, sentPath: "/openai/v1/models"},
		{name: "unknown deployment", path: "/v1/chat/completions", body: chatBody("gpt-4.1", false), status: 404,
			sentPath: "/openai/deployments/gpt-4.1/chat/completions", sentVersion: keypool.DefaultAzureAPIVersion, sentModel: "gpt-4.1"},
		{name: "model that is no deployment name", path: "/v1/chat/completions", body: chatBody("../../x", false), status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := keypool.Upstream{Keys: azKeys(azKey1), APIVersion: tc.apiVersion,
				Deployments: map[string]string{"gpt-4o": "my-gpt4o", "text-embedding-3-small": "my-embed", "never-asked": "x"}}
			fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: azKey1})
			for d, m := range deployments {
				fake.AddDeployment(d, m)
			}
			up.BaseURL = strings.TrimSuffix(base, "/v1")
			if tc.v1 {
				up.BaseURL += "/openai/v1"
			}
			up.Type = keypool.TypeAzure
			sent := &sentLog{}
			tr, err := keypool.New(keypool.WithUpstreams(up), keypool.WithBase(sent.base(http.DefaultTransport)))
			if err != nil {
				t.Fatal(err)
			}
			method := "POST"
			var rd io.Reader
			if tc.body == "" {
				method = "GET"
			} else {
				rd = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequestWithContext(context.Background(), method, "http://client.invalid"+tc.path, rd)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if tc.status == 404 && !strings.Contains(string(b), "model_not_found") {
				t.Errorf("404 body %s", b)
			}
			all := sent.all()
			if tc.sentPath == "" {
				if len(all) != 0 {
					t.Errorf("sent %d requests, want none", len(all))
				}
				return
			}
			if len(all) == 0 {
				t.Fatal("nothing sent")
			}
			s := all[0]
			if s.url.Path != tc.sentPath || s.url.Query().Get("api-version") != tc.sentVersion || s.model != tc.sentModel {
				t.Errorf("sent %s model %q, want %s?api-version=%s model %q", s.url, s.model, tc.sentPath, tc.sentVersion, tc.sentModel)
			}
		})
	}
}

// An Azure answer without any rate-limit header is served and teaches the
// budget nothing.
func TestAzureAnswerWithoutLimits(t *testing.T) {
	base := rvRT(func(r *http.Request) (*http.Response, error) {
		if r.Header.Get("Api-Key") != azKey1 {
			t.Errorf("no api-key")
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		return rvOK(r, nil, nil), nil
	})
	tr, err := keypool.New(keypool.WithBase(base), keypool.WithUpstreams(keypool.Upstream{
		BaseURL: "https://res.openai.azure.com", Type: keypool.TypeAzure, Keys: azKeys(azKey1)}))
	if err != nil {
		t.Fatal(err)
	}
	resp, body := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	st := stateOf(t, tr, azKey1)
	if !st.State.Usable() || st.State == keypool.StateCooling || st.Scope != "res.openai.azure.com" {
		t.Errorf("key %v scope %q", st.State, st.Scope)
	}
	for _, l := range st.Limits {
		if l.RemainingRequests != keypool.Unknown || l.LimitRequests != keypool.Unknown {
			t.Errorf("limits %+v", l)
		}
	}
}

func TestAzureChecker(t *testing.T) {
	fake, tr, _, sent, _ := azureSetup(t, nil,
		[]fakeopenai.Key{{Secret: azKey1}, {Secret: azKey2, Behavior: fakeopenai.Revoked}},
		keypool.Upstream{Keys: azKeys(azKey1, azKey2), APIVersion: "2024-06-01"})
	c, err := keypool.NewChecker(tr)
	if err != nil {
		t.Fatal(err)
	}
	results, err := c.CheckAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].State != keypool.StateReady || results[1].State != keypool.StateRevoked || results[0].Models != nil {
		t.Fatalf("results %+v", results)
	}
	if n := len(fake.Records()); n != 2 {
		t.Errorf("%d check requests, want one per key", n)
	}
	for _, s := range sent.all() {
		if s.url.Path != "/openai/models" || s.url.Query().Get("api-version") != "2024-06-01" || s.authorization != "" {
			t.Errorf("check sent %s", s.url)
		}
	}
}

// A reload that changes an Azure upstream's deployments or api-version
// takes effect; Azure's fields on another type are refused.
func TestAzureUpdateAndValidation(t *testing.T) {
	_, _, _, sent, root := azureSetup(t, map[string]string{"a": "gpt-4o", "b": "gpt-4o"},
		[]fakeopenai.Key{{Secret: azKey1}}, keypool.Upstream{Keys: azKeys(azKey1)})
	up := keypool.Upstream{BaseURL: root, Type: keypool.TypeAzure, Keys: azKeys(azKey1), Deployments: map[string]string{"gpt-4o": "a"}}
	tr, err := keypool.New(keypool.WithUpstreams(up), keypool.WithBase(sent.base(http.DefaultTransport)))
	if err != nil {
		t.Fatal(err)
	}
	post(t, tr, chatBody("gpt-4o", false))
	up.Deployments = map[string]string{"gpt-4o": "b"}
	up.APIVersion = "2024-06-01"
	if _, err := tr.Update(up); err != nil {
		t.Fatal(err)
	}
	post(t, tr, chatBody("gpt-4o", false))
	all := sent.all()
	if len(all) != 2 || all[0].url.Path != "/openai/deployments/a/chat/completions" ||
		all[1].url.Path != "/openai/deployments/b/chat/completions" || all[1].url.Query().Get("api-version") != "2024-06-01" {
		t.Errorf("sent %v then %v", all[0].url, all[len(all)-1].url)
	}

	for _, bad := range []keypool.Upstream{
		{BaseURL: root, Keys: azKeys(azKey2), Deployments: map[string]string{"gpt-4o": "a"}},
		{BaseURL: root, Keys: azKeys(azKey2), APIVersion: "2024-06-01"},
		{BaseURL: root, Keys: azKeys(azKey2), Type: keypool.TypeAzure, Deployments: map[string]string{"gpt-4o": "../a"}},
	} {
		if _, err := keypool.New(keypool.WithUpstreams(bad)); err == nil {
			t.Errorf("New accepted %+v", bad)
		}
	}
}

// A resource without the model's deployment answers DeploymentNotFound:
// its key loses the model, and the request goes to the next resource.
func TestAzureDeploymentNotFoundFailsOver(t *testing.T) {
	fake, tr, rec, _, _ := azureSetup(t, map[string]string{"present": "gpt-4o"},
		[]fakeopenai.Key{{Secret: azKey1}, {Secret: azKey2}},
		keypool.Upstream{Name: "resource-a", Keys: azKeys(azKey1), Deployments: map[string]string{"gpt-4o": "missing"}},
		keypool.Upstream{Name: "resource-b", Keys: azKeys(azKey2), Deployments: map[string]string{"gpt-4o": "present"}})
	resp, body := post(t, tr, chatBody("gpt-4o", false))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := rec.outcomes(); !equal(got, []string{"model_not_found", "success"}) {
		t.Errorf("outcomes %v", got)
	}
	post(t, tr, chatBody("gpt-4o", false))
	if fake.Count(azKey1) != 1 || fake.Count(azKey2) != 2 {
		t.Errorf("resource a asked %d times, b %d", fake.Count(azKey1), fake.Count(azKey2))
	}
}

// A stream that fails or hangs after Azure's prompt-filter event, before
// its first token, fails over as an OpenAI stream that fails before its
// first event does.
func TestAzureStreamFailsOverBeforeFirstToken(t *testing.T) {
	for _, b := range []fakeopenai.Behavior{fakeopenai.StreamErrorFirst, fakeopenai.StreamHang} {
		t.Run(b.String(), func(t *testing.T) {
			fake, tr, rec, _, _ := azureSetup(t, map[string]string{"gpt-4o": "gpt-4o"},
				[]fakeopenai.Key{{Secret: azKey1, Behavior: b}, {Secret: azKey2}},
				keypool.Upstream{Name: "resource-a", Keys: azKeys(azKey1), StreamTimeout: 300 * time.Millisecond},
				keypool.Upstream{Name: "resource-b", Keys: azKeys(azKey2)})
			resp, body := post(t, tr, chatBody("gpt-4o", true))
			if resp.StatusCode != 200 || strings.Contains(string(body), "server_error") || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if got := rec.outcomes(); !equal(got, []string{"server_error", "success"}) {
				t.Errorf("outcomes %v", got)
			}
			if fake.Count(azKey2) != 1 {
				t.Errorf("resource b asked %d times", fake.Count(azKey2))
			}
		})
	}
}

// A caller's own key (sk: asis) goes to Azure in api-key; a keyless
// upstream sends none.
func TestAzureCallerAndNoAuth(t *testing.T) {
	for _, auth := range []keypool.UpstreamAuth{keypool.AuthCaller, keypool.AuthNone} {
		t.Run(auth.String(), func(t *testing.T) {
			var got http.Header
			base := rvRT(func(r *http.Request) (*http.Response, error) {
				got = r.Header.Clone()
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
				return rvOK(r, nil, nil), nil
			})
			tr, err := keypool.New(keypool.WithBase(base), keypool.WithUpstreams(keypool.Upstream{
				BaseURL: "https://res.openai.azure.com", Type: keypool.TypeAzure, Auth: auth}))
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
			req.Header.Set("Authorization", "Bearer callers-own-azure-key")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := ""
			if auth == keypool.AuthCaller {
				want = "callers-own-azure-key"
			}
			if got.Get("Authorization") != "" || got.Get("Api-Key") != want {
				t.Errorf("sent Authorization %q, api-key %q; want api-key %q", got.Get("Authorization"), got.Get("Api-Key"), want)
			}
		})
	}
}
