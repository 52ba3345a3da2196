package fakeopenai_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/fakeopenai"
)

func replicateDo(t *testing.T, method, url, secret, body string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// The fake's Replicate answers in Replicate's shapes: a prediction with
// output pieces and metrics, an event stream of output and done, and
// problem+json refusals.
func TestReplicateShapes(t *testing.T) {
	fake, base := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: "r8_good"},
		fakeopenai.Key{Secret: "r8_revoked", Behavior: fakeopenai.Revoked}, fakeopenai.Key{Secret: "r8_slow", RPM: 1})
	const model = "/models/meta/meta-llama-3-70b-instruct/predictions"
	in := `{"input":{"prompt":"hello there","max_tokens":5}}`

	status, _, b := replicateDo(t, "POST", base+model, "r8_good", in, "Prefer", "wait")
	var p struct {
		ID, Status string
		Output     []string
		Metrics    struct {
			In  int `json:"input_token_count"`
			Out int `json:"output_token_count"`
		}
		URLs struct{ Get, Stream string }
	}
	if json.Unmarshal(b, &p); status != 201 || p.Status != "succeeded" || len(p.Output) != 5 || p.Metrics.Out != 5 || p.Metrics.In == 0 || p.URLs.Get == "" {
		t.Fatalf("%d %s", status, b)
	}

	status, _, b = replicateDo(t, "POST", base+model, "r8_good", `{"input":{"prompt":"hi"},"stream":true}`)
	p.URLs.Stream = ""
	if json.Unmarshal(b, &p); status != 201 || p.Status != "starting" || p.URLs.Stream == "" {
		t.Fatalf("%d %s", status, b)
	}
	status, h, b := replicateDo(t, "GET", p.URLs.Stream, "", "", "Accept", "text/event-stream")
	if status != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/event-stream") ||
		!strings.HasPrefix(string(b), "event: output\ndata: ") || !strings.HasSuffix(string(b), "event: done\ndata: {}\n\n") {
		t.Fatalf("%d %s", status, b)
	}

	for _, tc := range []struct {
		secret, body string
		status       int
	}{
		{"", in, 401}, {"r8_revoked", in, 401}, {"r8_good", `{"input":{}}`, 422},
	} {
		status, h, b := replicateDo(t, "POST", base+model, tc.secret, tc.body)
		var e struct {
			Detail string
			Status int
		}
		if json.Unmarshal(b, &e); status != tc.status || e.Status != tc.status || e.Detail == "" || h.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s: %d %s", tc.secret, status, b)
		}
	}
	replicateDo(t, "POST", base+model, "r8_slow", in, "Prefer", "wait")
	status, _, b = replicateDo(t, "POST", base+model, "r8_slow", in, "Prefer", "wait")
	var e struct {
		RetryAfter int `json:"retry_after"`
	}
	if json.Unmarshal(b, &e); status != 429 || e.RetryAfter < 1 {
		t.Fatalf("%d %s", status, b)
	}
	if status, _, _ := replicateDo(t, "POST", base+"/models/nobody/nothing/predictions", "r8_good", in); status != 404 {
		t.Fatalf("an unknown model: %d", status)
	}
	if n := fake.Completions("r8_good"); n != 2 {
		t.Fatalf("%d completions spent, want 2", n)
	}
}
