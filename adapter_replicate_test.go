package keypool_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

const llama = "meta/meta-llama-3-70b-instruct"

// setupReplicate starts the fake with keys and a transport over one
// Replicate upstream holding them in the same order.
func setupReplicate(t *testing.T, keys ...fakeopenai.Key) (*fakeopenai.Server, *keypool.Transport, *recorder) {
	t.Helper()
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	var creds []keypool.Key
	for _, k := range keys {
		creds = append(creds, keypool.NewKey(k.Secret))
	}
	rec := &recorder{}
	tr, err := keypool.New(
		keypool.WithUpstreams(keypool.Upstream{Name: "replicate", BaseURL: base, Keys: creds, Type: keypool.TypeReplicate}),
		keypool.WithObserver(rec),
		keypool.WithBackoff(time.Millisecond, 2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return fake, tr, rec
}

// final is the attempt whose answer went back, once its body was read.
func (r *recorder) final(t *testing.T) keypool.AttemptEvent {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.attempts {
		if a.Final {
			return a
		}
	}
	t.Fatalf("no final attempt among %d", len(r.attempts))
	return keypool.AttemptEvent{}
}

// chunks reads an OpenAI stream: the JSON of each data line, and whether
// it ended with [DONE].
func chunks(t *testing.T, body []byte) (out []map[string]any, done bool) {
	t.Helper()
	for _, line := range strings.Split(string(body), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		switch {
		case !ok:
		case data == "[DONE]":
			done = true
		default:
			var m map[string]any
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Fatalf("a data line that is not JSON: %q", data)
			}
			out = append(out, m)
		}
	}
	return out, done
}

func streamText(cs []map[string]any) string {
	var b strings.Builder
	for _, c := range cs {
		choices, _ := c["choices"].([]any)
		for _, ch := range choices {
			delta, _ := ch.(map[string]any)["delta"].(map[string]any)
			s, _ := delta["content"].(string)
			b.WriteString(s)
		}
	}
	return b.String()
}

func TestReplicateChat(t *testing.T) {
	fake, tr, rec := setupReplicate(t, fakeopenai.Key{Secret: "r8_good"})
	body := `{"model":"` + llama + `","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hello there"}],"max_tokens":50}`
	resp, b := post(t, tr, body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var c struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role, Content string
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
			Total      int `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Object != "chat.completion" || c.Model != llama || len(c.Choices) != 1 || c.Choices[0].Message.Role != "assistant" ||
		c.Choices[0].Message.Content == "" || c.Choices[0].FinishReason != "stop" {
		t.Fatalf("not a chat completion: %s", b)
	}
	recs := fake.Records()
	if len(recs) != 1 || recs[0].Path != "/v1/models/"+llama+"/predictions" || !recs[0].Spent {
		t.Fatalf("the fake saw %+v; want one prediction on %s", recs, llama)
	}
	if c.Usage.Prompt != recs[0].PromptTokens || c.Usage.Completion != recs[0].CompletionTokens || c.Usage.Total != c.Usage.Prompt+c.Usage.Completion {
		t.Fatalf("usage %+v; the fake counted %d+%d", c.Usage, recs[0].PromptTokens, recs[0].CompletionTokens)
	}
	if u := rec.final(t).Usage; u.InputTokens != int64(c.Usage.Prompt) || u.OutputTokens != int64(c.Usage.Completion) {
		t.Fatalf("metered %+v, answered %+v", u, c.Usage)
	}
}

func TestReplicateStream(t *testing.T) {
	fake, tr, rec := setupReplicate(t, fakeopenai.Key{Secret: "r8_good"})
	resp, b := post(t, tr, chatBody("mistralai/mixtral-8x7b-instruct-v0.1", true))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	cs, done := chunks(t, b)
	if !done || len(cs) < 3 {
		t.Fatalf("a stream of %d chunks, [DONE] %v:\n%s", len(cs), done, b)
	}
	first := cs[0]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	if first["role"] != "assistant" || cs[0]["object"] != "chat.completion.chunk" {
		t.Fatalf("first chunk %v", cs[0])
	}
	last := cs[len(cs)-1]
	if choices := last["choices"].([]any); len(choices) != 0 || last["usage"] == nil {
		t.Fatalf("the last chunk is not the usage chunk: %v", last)
	}
	if fin := cs[len(cs)-2]["choices"].([]any)[0].(map[string]any)["finish_reason"]; fin != "stop" {
		t.Fatalf("finish_reason %v", fin)
	}
	if streamText(cs) == "" {
		t.Fatal("no text streamed")
	}
	var spent fakeopenai.Record
	for _, r := range fake.Records() {
		if r.Spent {
			spent = r
		}
	}
	u := rec.final(t).Usage
	if spent.CompletionTokens == 0 || u.OutputTokens != int64(spent.CompletionTokens) || u.InputTokens != int64(spent.PromptTokens) {
		t.Fatalf("metered %+v; the fake spent %d+%d", u, spent.PromptTokens, spent.CompletionTokens)
	}
}

// An error event before the first byte, and a failed prediction, fail
// over to another key.
func TestReplicateFailsOver(t *testing.T) {
	for _, stream := range []bool{true, false} {
		name := map[bool]string{true: "stream", false: "sync"}[stream]
		t.Run(name, func(t *testing.T) {
			_, tr, rec := setupReplicate(t, fakeopenai.Key{Secret: "r8_bad", Behavior: fakeopenai.StreamErrorFirst},
				fakeopenai.Key{Secret: "r8_good"})
			resp, b := post(t, tr, chatBody(llama, stream))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if stream {
				if cs, done := chunks(t, b); !done || streamText(cs) == "" {
					t.Fatalf("not a whole stream:\n%s", b)
				}
			}
			got := rec.outcomes()
			if len(got) != 2 || got[0] != keypool.OutcomeServerError.String() || got[1] != keypool.OutcomeSuccess.String() {
				t.Fatalf("outcomes %v; want server error, then success", got)
			}
		})
	}
}

// A stream cut short after output, by an error event or without its done
// event, ends the client's stream with an error event, no [DONE], and is
// metered.
func TestReplicateStreamCutShort(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  fakeopenai.Key
		want string
	}{
		{"error event", fakeopenai.Key{Secret: "r8_mid", Behavior: fakeopenai.StreamErrorMidway}, "CUDA out of memory"},
		{"no done", fakeopenai.Key{Secret: "r8_cut", StreamCutShort: true}, "without its done event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tr, rec := setupReplicate(t, tc.key)
			resp, b := post(t, tr, chatBody(llama, true))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			cs, done := chunks(t, b)
			if done || len(cs) == 0 || streamText(cs) == "" {
				t.Fatalf("[DONE] %v, %d chunks:\n%s", done, len(cs), b)
			}
			e, _ := cs[len(cs)-1]["error"].(map[string]any)
			if msg, _ := e["message"].(string); !strings.Contains(msg, tc.want) || e["type"] != "server_error" {
				t.Fatalf("the stream does not end with an error event naming %q:\n%s", tc.want, b)
			}
			ev := rec.final(t)
			if ev.Outcome != keypool.OutcomeSuccess || ev.Duration == 0 {
				t.Fatalf("final attempt %+v", ev)
			}
			if tc.name == "error event" && ev.Usage.OutputTokens != 3 {
				t.Fatalf("metered %+v; want the 3 output tokens streamed", ev.Usage)
			}
		})
	}
}

func TestReplicateKeyOutcomes(t *testing.T) {
	t.Run("401 revokes", func(t *testing.T) {
		fake, tr, _ := setupReplicate(t, fakeopenai.Key{Secret: "r8_revoked", Behavior: fakeopenai.Revoked},
			fakeopenai.Key{Secret: "r8_good"})
		for range 2 {
			if resp, b := post(t, tr, chatBody(llama, false)); resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
		}
		if st := stateOf(t, tr, "r8_revoked").State; st != keypool.StateRevoked {
			t.Fatalf("the revoked key is %v", st)
		}
		if n := fake.Count("r8_revoked"); n > 1 {
			t.Fatalf("the revoked key was sent %d requests", n)
		}
	})
	t.Run("402 over quota", func(t *testing.T) {
		_, tr, _ := setupReplicate(t, fakeopenai.Key{Secret: "r8_broke", Behavior: fakeopenai.OverQuota},
			fakeopenai.Key{Secret: "r8_good"})
		for range 2 {
			if resp, b := post(t, tr, chatBody(llama, false)); resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
		}
		if st := stateOf(t, tr, "r8_broke").State; st != keypool.StateOverQuota {
			t.Fatalf("the key without credit is %v", st)
		}
	})
	t.Run("429 rests", func(t *testing.T) {
		_, tr, _ := setupReplicate(t, fakeopenai.Key{Secret: "r8_slow", RPM: 1})
		if resp, b := post(t, tr, chatBody(llama, false)); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		resp, b := post(t, tr, chatBody(llama, false))
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		if info := stateOf(t, tr, "r8_slow"); !info.CoolingUntil.After(time.Now()) {
			t.Fatalf("the throttled key rests until %v", info.CoolingUntil)
		}
	})
	t.Run("5xx fails over", func(t *testing.T) {
		_, tr, rec := setupReplicate(t, fakeopenai.Key{Secret: "r8_flaky", Behavior: fakeopenai.Flaky, FailFirst: 5},
			fakeopenai.Key{Secret: "r8_good"})
		if resp, b := post(t, tr, chatBody(llama, false)); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		if got := rec.outcomes(); got[len(got)-1] != keypool.OutcomeSuccess.String() {
			t.Fatalf("outcomes %v", got)
		}
	})
}

// Routes Replicate has no counterpart for get OpenAI's 404 without a
// request; so do models Replicate cannot name, and bodies that do not read.
func TestReplicateRefusesWhatItCannotServe(t *testing.T) {
	fake, tr, _ := setupReplicate(t, fakeopenai.Key{Secret: "r8_good"})
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"models", "GET", "/v1/models", "", 404},
		{"embeddings", "POST", "/v1/embeddings", `{"model":"` + llama + `","input":"x"}`, 404},
		{"responses", "POST", "/v1/responses", `{"model":"` + llama + `","input":"x"}`, 404},
		{"not a Replicate model", "POST", "/v1/chat/completions", chatBody("gpt-4o", false), 400},
		{"no user turn", "POST", "/v1/chat/completions", `{"model":"` + llama + `","messages":[{"role":"system","content":"x"}]}`, 400},
		{"an image", "POST", "/v1/chat/completions", `{"model":"` + llama + `","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400},
		{"tools", "POST", "/v1/chat/completions", `{"model":"` + llama + `","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, 400},
		{"a tool turn", "POST", "/v1/chat/completions", `{"model":"` + llama + `","messages":[{"role":"user","content":"x"},{"role":"tool","content":"y"}]}`, 400},
		{"n 2", "POST", "/v1/chat/completions", `{"model":"` + llama + `","messages":[{"role":"user","content":"x"}],"n":2}`, 400},
		{"not JSON", "POST", "/v1/chat/completions", `{"model":"` + llama + `",`, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake.Reset()
			var rd io.Reader
			if tc.body != "" {
				rd = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest(tc.method, "http://client.invalid"+tc.path, rd)
			req.Header.Set("Content-Type", "application/json")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			e := keypool.ParseAPIError(resp.StatusCode, b)
			if resp.StatusCode != tc.status || e == nil || e.Message == "" {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if n := len(fake.Records()); n != 0 {
				t.Fatalf("the fake saw %d requests", n)
			}
		})
	}
	if st := stateOf(t, tr, "r8_good").State; st == keypool.StateRevoked || st == keypool.StateCooling {
		t.Fatalf("the key is %v after the client's mistakes", st)
	}
}

// The checker asks Replicate who the key is (GET /v1/account, free): a
// live key is ready, a refused one revoked; nothing else is asked.
func TestReplicateCheck(t *testing.T) {
	fake, tr, _ := setupReplicate(t, fakeopenai.Key{Secret: "r8_good"}, fakeopenai.Key{Secret: "r8_revoked", Behavior: fakeopenai.Revoked})
	c, err := keypool.NewChecker(tr)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.CheckAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].State != keypool.StateReady || res[1].State != keypool.StateRevoked || res[0].Err != nil {
		t.Fatalf("results %+v", res)
	}
	for _, r := range fake.Records() {
		if r.Method != "GET" || r.Path != "/v1/account" {
			t.Fatalf("the check sent %s %s", r.Method, r.Path)
		}
	}
	if n := len(fake.Records()); n != 2 {
		t.Fatalf("the check sent %d requests for 2 keys", n)
	}
}

// A prediction still running when Replicate stops holding the answer
// (Prefer: wait) is polled at its urls.get until it finishes.
func TestReplicatePolls(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "r8_good"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Prefer") // as if the wait ran out
		fake.ServeHTTP(w, r)
	}))
	defer srv.Close()
	tr, err := keypool.New(keypool.WithUpstreams(keypool.Upstream{BaseURL: srv.URL + "/v1",
		Keys: []keypool.Key{keypool.NewKey("r8_good")}, Type: keypool.TypeReplicate}))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	resp, b := post(t, tr, chatBody(llama, false))
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"chat.completion"`) || !strings.Contains(string(b), `"completion_tokens"`) {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	recs := fake.Records()
	if len(recs) != 2 || recs[1].Method != "GET" || !strings.HasPrefix(recs[1].Path, "/v1/predictions/") || !recs[0].Spent {
		t.Fatalf("the fake saw %+v; want the prediction, then one poll", recs)
	}
}

// A client that leaves a stream before it is over cancels the prediction,
// so that it stops running and costing; one that reads it to the end does
// not.
func TestReplicateCancelsALeftStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "r8_good", StreamInterval: time.Second})
		pipe, closePipe := fakeopenai.ServePipe(fake)
		defer func() {
			closePipe()
			fake.Close()
		}()
		tr, err := keypool.New(keypool.WithBase(pipe), keypool.WithUpstreams(keypool.Upstream{
			BaseURL: fakeopenai.PipeBaseURL, Keys: []keypool.Key{keypool.NewKey("r8_good")}, Type: keypool.TypeReplicate}))
		if err != nil {
			t.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		cancels := func() (n int) {
			for _, r := range fake.Records() {
				if strings.HasSuffix(r.Path, "/cancel") {
					n++
				}
			}
			return n
		}

		resp, _ := post(t, tr, chatBody(llama, true)) // read to the end
		synctest.Wait()
		if resp.StatusCode != 200 || cancels() != 0 {
			t.Fatalf("status %d; %d cancels of a stream read whole", resp.StatusCode, cancels())
		}

		req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody(llama, true)))
		resp, err = tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if _, err := resp.Body.Read(buf); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		synctest.Wait()
		if n := cancels(); n != 1 {
			t.Fatalf("%d cancels of a stream left early", n)
		}
	})
}

// A prediction still running when its attempt's time runs out is
// cancelled: the pool has moved on and no one will read it.
func TestReplicateCancelsAnAbandonedPrediction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := fakeopenai.New(fakeopenai.Config{}, fakeopenai.Key{Secret: "r8_good"})
		running := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Prefer") // as if the wait ran out
			fake.ServeHTTP(w, r)
		})
		pipe, closePipe := fakeopenai.ServePipe(running)
		defer func() {
			closePipe()
			fake.Close()
		}()
		tr, err := keypool.New(keypool.WithBase(pipe), keypool.WithMaxWait(0), keypool.WithUpstreams(keypool.Upstream{
			BaseURL: fakeopenai.PipeBaseURL, Keys: []keypool.Key{keypool.NewKey("r8_good")}, Type: keypool.TypeReplicate,
			Timeout: 100 * time.Millisecond}))
		if err != nil {
			t.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody(llama, false)))
		if resp, err := tr.RoundTrip(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatal("a prediction that outran its attempt's time was answered")
			}
		}
		synctest.Wait()
		n := 0
		for _, r := range fake.Records() {
			if strings.HasSuffix(r.Path, "/cancel") {
				n++
			}
		}
		if n == 0 {
			t.Fatalf("no cancel among %+v", fake.Records())
		}
	})
}
