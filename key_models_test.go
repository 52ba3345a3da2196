package keypool_test

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// F2: a trial key is sent image requests whose model is not a JSON field:
// multipart /v1/images/edits (gpt-image-1, dall-e-2) and /v1/images/generations
// with the model left to its default (dall-e-2).
func TestTrialKeyNotSentImageRequests(t *testing.T) {
	fake, tr, c := checkSetup(t, nil, nil, fakeopenai.Key{Secret: "sk-trial", Trial: true})
	if _, err := c.CheckAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info := stateOf(t, tr, "sk-trial"); !info.Trial {
		t.Fatalf("not trial: %+v", info)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("model", "gpt-image-1")
	mw.WriteField("prompt", "a hat")
	fw, _ := mw.CreateFormFile("image", "cat.png")
	fw.Write([]byte("\x89PNG...."))
	mw.Close()
	req, _ := http.NewRequest("POST", "http://client.invalid/v1/images/edits", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := tr.RoundTrip(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	req, _ = http.NewRequest("POST", "http://client.invalid/v1/images/generations", strings.NewReader(`{"prompt":"a cat"}`))
	resp, err = tr.RoundTrip(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, rec := range fake.Records() {
		if rec.Key == "sk-trial" && strings.HasPrefix(rec.Path, "/v1/images/") {
			t.Errorf("the trial key was sent an image request: %s", rec.Path)
		}
	}
}

// scriptedUpstream answers like OpenAI for one paid tier-1 key: the probe
// says 3000 RPM (paid), gpt-4o-search-preview has its own 100 RPM limit (as
// on tier 1), images are served. models is the /v1/models body.
func scriptedUpstream(models string) rvRT {
	return func(req *http.Request) (*http.Response, error) {
		body := ""
		if req.Body != nil {
			b, _ := io.ReadAll(req.Body)
			req.Body.Close()
			body = string(b)
		}
		resp := func(status int, h map[string]string, b string) *http.Response {
			r := rvOK(req, h, io.NopCloser(strings.NewReader(b)))
			r.StatusCode = status
			return r
		}
		switch {
		case req.URL.Path == "/v1/me" || req.URL.Path == "/v1/organizations":
			return resp(404, nil, `{"error":{"message":"Invalid URL","type":"invalid_request_error","param":null,"code":null}}`), nil
		case req.URL.Path == "/v1/models":
			return resp(200, nil, models), nil
		case strings.Contains(body, "babbage-002"):
			return resp(400, map[string]string{"x-ratelimit-limit-requests": "3000", "x-ratelimit-remaining-requests": "2999",
				"x-ratelimit-limit-tokens": "1000000", "x-ratelimit-remaining-tokens": "999999"},
				`{"error":{"message":"Invalid 'max_tokens'","type":"invalid_request_error","param":"max_tokens","code":"integer_below_min_value"}}`), nil
		case strings.Contains(body, "gpt-4o-search-preview"):
			return resp(200, map[string]string{"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "99",
				"x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "29000"}, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`), nil
		}
		return resp(200, map[string]string{"x-ratelimit-limit-requests": "3000", "x-ratelimit-remaining-requests": "2999"}, `{"created":1,"data":[]}`), nil
	}
}

// F7: the trial flag flips on ANY answer whose per-model request limit is
// <= 250. A paid tier-1 key that serves gpt-4o-search-preview (100 RPM on
// tier 1) becomes "trial" and loses the image families.
func TestLowPerModelLimitKeepsPaidKeyPaid(t *testing.T) {
	models := `{"object":"list","data":[{"id":"gpt-4o"},{"id":"gpt-4o-search-preview"},{"id":"gpt-image-1"}]}`
	tr, err := keypool.New(keypool.WithUpstream("https://api.openai.com/v1", "sk-paid"), keypool.WithBase(scriptedUpstream(models)))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
	res, err := c.CheckAll(context.Background())
	if err != nil || res[0].Trial {
		t.Fatalf("check: %+v %v", res, err)
	}
	do := func(path, body string) error {
		req, _ := http.NewRequest("POST", "http://client.invalid"+path, strings.NewReader(body))
		resp, err := tr.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}
	if err := do("/v1/chat/completions", `{"model":"gpt-4o-search-preview","messages":[{"role":"user","content":"news"}]}`); err != nil {
		t.Fatal(err)
	}
	if err := do("/v1/images/generations", `{"model":"gpt-image-1","prompt":"a cat"}`); err != nil {
		t.Fatalf("the paid key no longer serves images: %v (trial=%v)", err, tr.Snapshot()[0].Trial)
	}
}

// F6: a 200 model list with no models (an OpenAI-compatible gateway that does
// not list, a key whose list is empty) makes the key serve no model at all:
// an empty non-nil families map excludes it from every JSON request.
func TestEmptyModelListServesAnyModel(t *testing.T) {
	tr, _ := keypool.New(keypool.WithUpstream("https://gw.example/v1", "sk-gw"),
		keypool.WithBase(scriptedUpstream(`{"object":"list","data":[]}`)))
	c, _ := keypool.NewChecker(tr, keypool.WithCheckRate(1000))
	if _, err := c.CheckAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "http://client.invalid/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", false)))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("a ready key with an empty model list takes no request: %v", err)
	}
	resp.Body.Close()
}
