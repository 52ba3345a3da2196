package keypool

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// replicateAdapter serves OpenAI chat completions from Replicate's
// predictions API. A chat request becomes a prediction on its model
// ("owner/name", or "owner/name:version" for a version of it), its messages
// a prompt; the prediction's output, or its stream of output events, comes
// back as a chat.completion or chat.completion.chunk events, with usage
// from the prediction's metrics. Replicate's refusals come back as OpenAI's
// errors, so that the pool reads them as it reads OpenAI's: a 401 revokes
// the key, a 429 rests it (retry_after), 402 (no credit) puts it over quota,
// 5xx and failed predictions fail over.
type replicateAdapter struct{}

const (
	// replicateWait is how long Replicate holds a non-stream prediction's
	// answer (Prefer: wait, at most 60 s) before it answers with the
	// prediction still running; the adapter then polls its urls.get.
	replicateWait = "wait=60"
	// replicateBodyLimit bounds a prediction's JSON as read.
	replicateBodyLimit = 8 << 20
	// replicateLineLimit bounds one line of Replicate's event stream.
	replicateLineLimit = 1 << 20
)

// replicatePoll is the first pause between polls of a running prediction;
// pauses double up to replicatePollMax.
const (
	replicatePoll    = 250 * time.Millisecond
	replicatePollMax = 2 * time.Second
)

func (replicateAdapter) send(base http.RoundTripper, out *http.Request, x *adaptInfo) (*http.Response, error) {
	if out.Body != nil {
		out.Body.Close() // the prediction's body is built from x.body
	}
	if route := replicateRoute(out.URL.Path, x.up.BaseURL); out.Method != http.MethodPost || route != "/chat/completions" {
		return openAIError(out, http.StatusNotFound, "invalid_request_error", "unknown_url",
			fmt.Sprintf("keypool: a Replicate upstream serves POST /v1/chat/completions only, not %s /v1%s", clip(out.Method, 16), clip(route, 128))), nil
	}
	if x.body == nil {
		return openAIError(out, http.StatusBadRequest, "invalid_request_error", "",
			"keypool: a chat completion for a Replicate upstream needs a JSON body the pool can read whole"), nil
	}
	var chat replicateChat
	if err := json.Unmarshal(x.body, &chat); err != nil {
		return openAIError(out, http.StatusBadRequest, "invalid_request_error", "",
			"keypool: the chat completion's body is not valid JSON for a Replicate upstream"), nil
	}
	target, input, msg := chat.prediction(out.URL)
	if msg != "" {
		return openAIError(out, http.StatusBadRequest, "invalid_request_error", "", msg), nil
	}
	req, err := replicateRequest(out, http.MethodPost, target, input)
	if err != nil {
		return nil, err
	}
	if !chat.Stream {
		req.Header.Set("Prefer", replicateWait)
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	decodeResponse(resp)
	if resp.StatusCode/100 != 2 {
		return replicateRefusal(out, resp), nil
	}
	p, err := readPrediction(resp)
	if err != nil {
		return nil, err
	}
	if chat.Stream {
		resp, err := chat.stream(base, out, p)
		if err != nil || resp.StatusCode/100 != 2 {
			abandon(base, out, p)
		}
		return resp, err
	}
	for !p.finished() {
		if p.URLs.Get == "" {
			abandon(base, out, p)
			return nil, errors.New("keypool: a running Replicate prediction without urls.get")
		}
		next, err := chat.poll(base, out, p)
		if err != nil {
			abandon(base, out, p) // the attempt's time ran out, or the client left
			return nil, err
		}
		p = next
	}
	if p.Status != "succeeded" {
		return openAIError(out, http.StatusBadGateway, "server_error", "", p.failure()), nil
	}
	return jsonResponse(out, http.StatusOK, chat.completion(p)), nil
}

// replicateRoute is the client's path after /v1 ("/chat/completions"):
// path less the upstream base URL's own path.
func replicateRoute(path, baseURL string) string {
	if u, err := url.Parse(baseURL); err == nil {
		path = strings.TrimPrefix(path, strings.TrimSuffix(u.Path, "/"))
	}
	return path
}

// replicateChat is the part of an OpenAI chat request a prediction is
// built from.
type replicateChat struct {
	Model               string           `json:"model"`
	Messages            []replicateMsg   `json:"messages"`
	MaxTokens           *int             `json:"max_tokens"`
	MaxCompletionTokens *int             `json:"max_completion_tokens"`
	Temperature         *float64         `json:"temperature"`
	TopP                *float64         `json:"top_p"`
	PresencePenalty     *float64         `json:"presence_penalty"`
	FrequencyPenalty    *float64         `json:"frequency_penalty"`
	Seed                *int64           `json:"seed"`
	Stop                json.RawMessage  `json:"stop"`
	Stream              bool             `json:"stream"`
	StreamOptions       *json.RawMessage `json:"stream_options"`
	Tools               json.RawMessage  `json:"tools"`
	Functions           json.RawMessage  `json:"functions"`
	N                   *int             `json:"n"`

	polls int // of a running prediction, so far
}

type replicateMsg struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text is a message's content: a string, or the text parts of an array.
func (m replicateMsg) text() (string, bool) {
	c := bytes.TrimSpace(m.Content)
	if len(c) == 0 || string(c) == "null" {
		return "", true
	}
	var s string
	if json.Unmarshal(c, &s) == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(c, &parts) != nil {
		return "", false
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", false // images, audio: no prompt holds them
		}
		b.WriteString(p.Text)
	}
	return b.String(), true
}

func (c *replicateChat) includeUsage() bool {
	if c.StreamOptions == nil {
		return false
	}
	var o struct {
		IncludeUsage bool `json:"include_usage"`
	}
	return json.Unmarshal(*c.StreamOptions, &o) == nil && o.IncludeUsage
}

func (c *replicateChat) maxTokens() *int {
	if c.MaxCompletionTokens != nil {
		return c.MaxCompletionTokens
	}
	return c.MaxTokens
}

// prediction returns the URL and body of the prediction that answers c on
// the upstream at base (a URL under whose path "/models/…" lies), or a
// message saying why c cannot be one.
func (c *replicateChat) prediction(base *url.URL) (*url.URL, map[string]any, string) {
	owner, name, version, ok := splitReplicateModel(c.Model)
	if !ok {
		return nil, nil, fmt.Sprintf("keypool: model %q is not a Replicate model (owner/name or owner/name:version)", clip(c.Model, 128))
	}
	if !empty(c.Tools) || !empty(c.Functions) {
		return nil, nil, "keypool: a Replicate upstream does not call tools"
	}
	if c.N != nil && *c.N != 1 {
		return nil, nil, "keypool: a Replicate upstream answers one choice (n: 1)"
	}
	in, msg := c.input(owner + "/" + name)
	if msg != "" {
		return nil, nil, msg
	}
	u := *base
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	root := strings.TrimSuffix(u.Path, "/chat/completions")
	body := map[string]any{"input": in}
	if version != "" {
		u.Path = root + "/predictions"
		body["version"] = version
	} else {
		u.Path = root + "/models/" + owner + "/" + name + "/predictions"
	}
	if c.Stream {
		body["stream"] = true
	}
	return &u, body, ""
}

// empty reports a JSON value that says nothing: absent, null, [] or {}.
func empty(raw json.RawMessage) bool {
	switch string(bytes.TrimSpace(raw)) {
	case "", "null", "[]", "{}":
		return true
	}
	return false
}

// splitReplicateModel reads "owner/name" or "owner/name:version".
func splitReplicateModel(model string) (owner, name, version string, ok bool) {
	model, version, versioned := strings.Cut(model, ":")
	owner, name, ok = strings.Cut(model, "/")
	valid := func(s string) bool {
		return s != "" && !strings.ContainsAny(s, "/?#%\\ \t\r\n")
	}
	ok = ok && valid(owner) && valid(name) && (!versioned || valid(version))
	return owner, name, version, ok
}

// input builds a prediction's input from c. Replicate's language models
// take a prompt (and most a system_prompt) which their own template wraps:
// a conversation of one user turn goes as that, plainly. A longer one is
// written out in the model family's chat format, and prompt_template
// "{prompt}" keeps the model from wrapping it again.
func (c *replicateChat) input(model string) (map[string]any, string) {
	var system []string
	var turns []replicateMsg
	for _, m := range c.Messages {
		t, ok := m.text()
		if !ok {
			return nil, "keypool: a Replicate upstream takes text messages only"
		}
		m.Content, _ = json.Marshal(t)
		switch m.Role {
		case "system", "developer":
			system = append(system, t)
		case "user", "assistant":
			turns = append(turns, m)
		default:
			return nil, fmt.Sprintf("keypool: a Replicate upstream takes system, user and assistant messages, not %q", clip(m.Role, 32))
		}
	}
	if len(turns) == 0 || turns[len(turns)-1].Role != "user" {
		return nil, "keypool: a chat completion for a Replicate upstream must end with a user message"
	}
	in := map[string]any{}
	fam := replicateFamily(model)
	if len(turns) == 1 {
		in["prompt"], _ = turns[0].text()
		if len(system) > 0 {
			in["system_prompt"] = strings.Join(system, "\n\n")
		}
	} else {
		in["prompt"] = fam.format(strings.Join(system, "\n\n"), turns)
		in["prompt_template"] = "{prompt}"
	}
	if n := c.maxTokens(); n != nil {
		in[fam.maxTokens] = *n
	}
	if c.Temperature != nil {
		in["temperature"] = *c.Temperature
	}
	if c.TopP != nil {
		in["top_p"] = *c.TopP
	}
	if c.PresencePenalty != nil {
		in["presence_penalty"] = *c.PresencePenalty
	}
	if c.FrequencyPenalty != nil {
		in["frequency_penalty"] = *c.FrequencyPenalty
	}
	if c.Seed != nil {
		in["seed"] = *c.Seed
	}
	if stop := stopSequences(c.Stop); stop != "" {
		in["stop_sequences"] = stop
	}
	return in, ""
}

// stopSequences is OpenAI's stop (a string or a list) as Replicate's
// comma-separated stop_sequences.
func stopSequences(raw json.RawMessage) string {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return strings.Join(many, ",")
	}
	return ""
}

// promptFamily is how one family of models reads a conversation.
type promptFamily struct {
	maxTokens string // the input naming the most tokens to generate
	format    func(system string, turns []replicateMsg) string
}

// replicateFamily returns the prompt family of a model: Mistral's
// [INST] … [/INST] (mistralai/*, mixtral), Llama 3's headers, Llama 2's
// [INST] <<SYS>>; any other model gets a plain transcript.
func replicateFamily(model string) promptFamily {
	m := strings.ToLower(model)
	switch {
	case strings.Contains(m, "mistral") || strings.Contains(m, "mixtral"):
		return promptFamily{"max_new_tokens", formatMistral}
	case strings.Contains(m, "llama-3") || strings.Contains(m, "llama3"):
		return promptFamily{"max_tokens", formatLlama3}
	case strings.Contains(m, "llama-2"):
		return promptFamily{"max_new_tokens", formatLlama2}
	}
	return promptFamily{"max_tokens", formatTranscript}
}

func turnText(m replicateMsg) string {
	var s string
	json.Unmarshal(m.Content, &s)
	return s
}

func formatMistral(system string, turns []replicateMsg) string {
	var b strings.Builder
	b.WriteString("<s>")
	for i, m := range turns {
		t := turnText(m)
		if m.Role == "user" {
			if i == 0 && system != "" {
				t = system + "\n\n" + t
			}
			b.WriteString("[INST] " + t + " [/INST]")
		} else {
			b.WriteString(" " + t + "</s>")
		}
	}
	return b.String()
}

func formatLlama2(system string, turns []replicateMsg) string {
	var b strings.Builder
	for i, m := range turns {
		t := turnText(m)
		if m.Role == "user" {
			if i == 0 && system != "" {
				t = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + t
			}
			b.WriteString("<s>[INST] " + t + " [/INST]")
		} else {
			b.WriteString(" " + t + " </s>")
		}
	}
	return b.String()
}

func formatLlama3(system string, turns []replicateMsg) string {
	var b strings.Builder
	b.WriteString("<|begin_of_text|>")
	head := func(role, text string) {
		b.WriteString("<|start_header_id|>" + role + "<|end_header_id|>\n\n" + text + "<|eot_id|>")
	}
	if system != "" {
		head("system", system)
	}
	for _, m := range turns {
		head(m.Role, turnText(m))
	}
	b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	return b.String()
}

func formatTranscript(system string, turns []replicateMsg) string {
	var b strings.Builder
	if system != "" {
		b.WriteString(system + "\n\n")
	}
	for _, m := range turns {
		if m.Role == "user" {
			b.WriteString("User: ")
		} else {
			b.WriteString("Assistant: ")
		}
		b.WriteString(turnText(m) + "\n")
	}
	b.WriteString("Assistant:")
	return b.String()
}

// replicateRequest builds a request to Replicate with out's context and
// credentials, and nothing else of the client's.
func replicateRequest(out *http.Request, method string, u *url.URL, body any) (*http.Request, error) {
	var rd io.Reader
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("keypool: building a Replicate prediction: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(out.Context(), method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("keypool: building a Replicate request: %w", err)
	}
	if b != nil {
		req.Header.Set("Content-Type", "application/json")
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	if v := out.Header["Authorization"]; len(v) > 0 {
		req.Header["Authorization"] = v
	}
	if v := out.Header.Get("User-Agent"); v != "" {
		req.Header.Set("User-Agent", v)
	}
	return req, nil
}

// prediction is the part of Replicate's prediction object the adapter reads.
type prediction struct {
	ID        string          `json:"id"`
	Status    string          `json:"status"`
	Output    json.RawMessage `json:"output"`
	Error     json.RawMessage `json:"error"`
	CreatedAt string          `json:"created_at"`
	Metrics   struct {
		InputTokens  *int `json:"input_token_count"`
		OutputTokens *int `json:"output_token_count"`
	} `json:"metrics"`
	URLs struct {
		Get    string `json:"get"`
		Stream string `json:"stream"`
		Cancel string `json:"cancel"`
	} `json:"urls"`
}

func readPrediction(resp *http.Response) (*prediction, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, replicateBodyLimit+1))
	if err != nil {
		return nil, fmt.Errorf("keypool: reading a Replicate prediction: %w", err)
	}
	if len(b) > replicateBodyLimit {
		return nil, errors.New("keypool: a Replicate prediction larger than 8 MiB")
	}
	p := &prediction{}
	if err := json.Unmarshal(b, p); err != nil || p.Status == "" {
		return nil, errors.New("keypool: Replicate answered a prediction that does not read as one")
	}
	return p, nil
}

func (p *prediction) finished() bool {
	return p.Status == "succeeded" || p.Status == "failed" || p.Status == "canceled"
}

// failure says why p did not succeed, for the client.
func (p *prediction) failure() string {
	var msg string
	if json.Unmarshal(p.Error, &msg) != nil || msg == "" {
		msg = string(bytes.TrimSpace(p.Error))
	}
	if msg == "" || msg == "null" {
		return fmt.Sprintf("keypool: the Replicate prediction %s", p.Status)
	}
	return fmt.Sprintf("keypool: the Replicate prediction %s: %s", p.Status, clip(msg, 512))
}

// text is p's output: a list of pieces (a language model's tokens) or one
// string.
func (p *prediction) text() string {
	var pieces []string
	if json.Unmarshal(p.Output, &pieces) == nil {
		return strings.Join(pieces, "")
	}
	var s string
	json.Unmarshal(p.Output, &s)
	return s
}

func (p *prediction) created() int64 {
	if t, err := time.Parse(time.RFC3339Nano, p.CreatedAt); err == nil {
		return t.Unix()
	}
	return time.Now().Unix()
}

// usage is OpenAI's usage object from p's metrics; nil when Replicate
// did not count.
func (p *prediction) usage() map[string]any {
	if p.Metrics.InputTokens == nil && p.Metrics.OutputTokens == nil {
		return nil
	}
	in, out := deref(p.Metrics.InputTokens), deref(p.Metrics.OutputTokens)
	return map[string]any{"prompt_tokens": in, "completion_tokens": out, "total_tokens": in + out}
}

func deref(n *int) int {
	if n == nil {
		return 0
	}
	return *n
}

// poll waits a while, then reads p again from its urls.get.
func (c *replicateChat) poll(base http.RoundTripper, out *http.Request, p *prediction) (*prediction, error) {
	wait := replicatePoll
	if c.polls > 0 {
		wait = min(replicatePoll<<min(c.polls, 8), replicatePollMax)
	}
	c.polls++
	if err := sleep(out.Context(), wait); err != nil {
		return nil, err
	}
	u, err := url.Parse(p.URLs.Get)
	if err != nil {
		return nil, errors.New("keypool: a Replicate prediction's urls.get is not a URL")
	}
	return fetchPrediction(base, out, u)
}

func (c *replicateChat) finishReason(p *prediction) string {
	if n := c.maxTokens(); n != nil && p.Metrics.OutputTokens != nil && *p.Metrics.OutputTokens >= *n {
		return "length"
	}
	return "stop"
}

// completion is p, succeeded, as a chat.completion.
func (c *replicateChat) completion(p *prediction) map[string]any {
	m := map[string]any{
		"id": "chatcmpl-" + p.ID, "object": "chat.completion", "created": p.created(), "model": c.Model,
		"choices": []any{map[string]any{
			"index": 0, "message": map[string]any{"role": "assistant", "content": p.text(), "refusal": nil},
			"logprobs": nil, "finish_reason": c.finishReason(p),
		}},
	}
	if u := p.usage(); u != nil {
		m["usage"] = u
	}
	return m
}

// replicateRefusal turns Replicate's refusal (a problem+json with detail
// and, on a 429, retry_after) into OpenAI's error of the same meaning.
func replicateRefusal(out *http.Request, resp *http.Response) *http.Response {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	status, typ, code, msg, retry := replicateError(resp.StatusCode, b)
	answer := openAIError(out, status, typ, code, msg)
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		answer.Header.Set("Retry-After", ra)
	} else if retry > 0 {
		setRetryAfter(answer.Header, time.Duration(retry*float64(time.Second)))
	}
	return answer
}

// replicateError reads a Replicate error body: OpenAI's status, type, code
// and message of the same meaning, and a 429's retry_after in seconds.
func replicateError(status int, body []byte) (int, string, string, string, float64) {
	var e struct {
		Detail     json.RawMessage `json:"detail"`
		Title      string          `json:"title"`
		RetryAfter float64         `json:"retry_after"`
	}
	json.Unmarshal(body, &e)
	var detail string
	if json.Unmarshal(e.Detail, &detail) != nil {
		detail = string(bytes.TrimSpace(e.Detail)) // a validation error's list
	}
	msg := "Replicate: " + cmp.Or(detail, e.Title, http.StatusText(status), strconv.Itoa(status))
	msg = clip(msg, 512)
	switch {
	case status == http.StatusUnauthorized:
		return status, "invalid_request_error", "invalid_api_key", msg, 0
	case status == http.StatusPaymentRequired:
		return http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota", msg, 0
	case status == http.StatusTooManyRequests:
		return status, "requests", "rate_limit_exceeded", msg, e.RetryAfter
	case status == http.StatusNotFound:
		return status, "invalid_request_error", "model_not_found", msg, 0
	case status == http.StatusUnprocessableEntity:
		return http.StatusBadRequest, "invalid_request_error", "", msg, 0
	case status >= 500:
		return status, "server_error", "", msg, 0
	}
	return status, "invalid_request_error", "", msg, 0
}

// openAIError is an answer in OpenAI's error shape, made by the adapter.
func openAIError(out *http.Request, status int, typ, code, msg string) *http.Response {
	e := map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}
	if code != "" {
		e["code"] = code
	}
	return jsonResponse(out, status, map[string]any{"error": e})
}

func jsonResponse(out *http.Request, status int, v any) *http.Response {
	b, _ := json.Marshal(v)
	return adapterAnswer(out, status, b)
}

// stream opens p's event stream and answers it as OpenAI's.
func (c *replicateChat) stream(base http.RoundTripper, out *http.Request, p *prediction) (*http.Response, error) {
	if p.URLs.Stream == "" {
		return openAIError(out, http.StatusBadRequest, "invalid_request_error", "",
			fmt.Sprintf("keypool: Replicate's %s does not stream its output", clip(c.Model, 128))), nil
	}
	u, err := url.Parse(p.URLs.Stream)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, errors.New("keypool: a Replicate prediction's urls.stream is not a URL")
	}
	req, err := replicateRequest(out, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-store")
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	decodeResponse(resp)
	if resp.StatusCode/100 != 2 {
		return replicateRefusal(out, resp), nil
	}
	body := &replicateStream{chat: c, p: p, base: base, out: out, rc: resp.Body,
		lines: newLineReader(resp.Body, replicateLineLimit), created: p.created(), usage: c.includeUsage()}
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}, "Cache-Control": {"no-cache"}},
		Body:          body,
		ContentLength: -1,
		Request:       out,
	}, nil
}

// replicateStream reads Replicate's event stream (output, error, done) and
// gives OpenAI's: a chat.completion.chunk per output event, on done a last
// chunk with the finish reason (and, when the client asked for usage, a
// usage chunk from the finished prediction's metrics) and data: [DONE]. An
// error event, a done that is not a success, or a stream that ends without
// done, ends it with OpenAI's error event and no [DONE]: a client sees the
// answer is cut short, and the pool, reading that event first, fails over
// when nothing was handed back yet.
type replicateStream struct {
	chat    *replicateChat
	p       *prediction
	base    http.RoundTripper
	out     *http.Request
	rc      io.ReadCloser
	lines   *lineReader
	created int64
	usage   bool

	pending []byte // converted, not yet read
	started bool   // the first chunk (with the role) is out
	ended   bool   // nothing more will be converted
	// over is ended, for Close, which may run beside Read: a stream
	// closed before it is over cancels its prediction.
	over atomic.Bool
}

func (s *replicateStream) Read(b []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.ended {
			return 0, io.EOF
		}
		s.next()
	}
	n := copy(b, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

// Close closes Replicate's stream; a prediction whose stream is not over
// (the client went away) is cancelled, so that it stops running and
// costing.
func (s *replicateStream) Close() error {
	err := s.rc.Close()
	if s.over.CompareAndSwap(false, true) && s.p.URLs.Cancel != "" {
		go cancelPrediction(s.base, s.out, s.p.URLs.Cancel)
	}
	return err
}

// abandon cancels a prediction whose answer no one will read: the
// attempt failed over or ended after it was created.
func abandon(base http.RoundTripper, out *http.Request, p *prediction) {
	if p.URLs.Cancel != "" && !p.finished() {
		go cancelPrediction(base, out, p.URLs.Cancel)
	}
}

// replicateCancelTimeout bounds the request that cancels a prediction.
const replicateCancelTimeout = 10 * time.Second

// cancelPrediction asks Replicate to stop a prediction, once, in a context
// of its own: the attempt's has ended.
func cancelPrediction(base http.RoundTripper, out *http.Request, cancelURL string) {
	u, err := url.Parse(cancelURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return
	}
	ctx, stop := context.WithTimeout(context.WithoutCancel(out.Context()), replicateCancelTimeout)
	defer stop()
	req, err := replicateRequest(out.WithContext(ctx), http.MethodPost, u, nil)
	if err != nil {
		return
	}
	if resp, err := base.RoundTrip(req); err == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, errorBodyLimit))
		resp.Body.Close()
	}
}

// next converts the next Replicate event.
func (s *replicateStream) next() {
	event, data, err := s.lines.event()
	switch {
	case err == io.EOF:
		s.fail("keypool: the Replicate stream ended without its done event")
	case err != nil:
		s.fail("keypool: reading the Replicate stream: " + err.Error())
	case event == "output":
		s.chunk(map[string]any{"content": data}, nil)
	case event == "error":
		msg := data
		var d struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal([]byte(data), &d) == nil && d.Detail != "" {
			msg = d.Detail
		}
		s.fail("keypool: the Replicate prediction failed: " + clip(msg, 512))
	case event == "done":
		var d struct {
			Reason string `json:"reason"`
		}
		json.Unmarshal([]byte(data), &d)
		if d.Reason != "" {
			s.fail("keypool: the Replicate prediction ended: " + clip(d.Reason, 64))
			return
		}
		s.done()
	}
	// Other events (Replicate's logs) say nothing to the client.
}

func (s *replicateStream) chunk(delta map[string]any, finish any) {
	if !s.started {
		delta["role"] = "assistant"
		s.started = true
	}
	m := map[string]any{
		"id": "chatcmpl-" + s.p.ID, "object": "chat.completion.chunk", "created": s.created, "model": s.chat.Model,
		"choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}},
	}
	if s.usage {
		m["usage"] = nil
	}
	s.data(m)
}

func (s *replicateStream) data(v any) {
	b, _ := json.Marshal(v)
	s.pending = append(s.pending, "data: "...)
	s.pending = append(s.pending, b...)
	s.pending = append(s.pending, "\n\n"...)
}

// done ends a stream that succeeded.
func (s *replicateStream) done() {
	s.ended = true
	s.over.Store(true)
	final := s.finished()
	s.chunk(map[string]any{}, s.chat.finishReason(final))
	s.usageChunk(final)
	s.pending = append(s.pending, "data: [DONE]\n\n"...)
}

// fail ends the stream with OpenAI's error event: after the usage so far,
// when the client asked for usage and output was handed back (before any
// output, the error event must come first, for the pool to fail over).
func (s *replicateStream) fail(msg string) {
	s.ended = true
	s.over.Store(true)
	if s.started {
		s.usageChunk(s.finished())
	}
	s.data(map[string]any{"error": map[string]any{"message": msg, "type": "server_error", "param": nil, "code": nil}})
}

// finished is the prediction as it stands once its stream ended, read
// once from its urls.get when the client asked for usage: the metrics are
// the finished prediction's. Without them it is the prediction as created.
func (s *replicateStream) finished() *prediction {
	if !s.usage || s.p.URLs.Get == "" {
		return s.p
	}
	u, err := url.Parse(s.p.URLs.Get)
	if err != nil {
		return s.p
	}
	p, err := fetchPrediction(s.base, s.out, u)
	if err != nil {
		return s.p
	}
	return p
}

// usageChunk adds OpenAI's usage chunk, when the client asked for it and
// p has metrics.
func (s *replicateStream) usageChunk(p *prediction) {
	if u := p.usage(); s.usage && u != nil {
		s.data(map[string]any{
			"id": "chatcmpl-" + s.p.ID, "object": "chat.completion.chunk", "created": s.created, "model": s.chat.Model,
			"choices": []any{}, "usage": u,
		})
	}
}

func fetchPrediction(base http.RoundTripper, out *http.Request, u *url.URL) (*prediction, error) {
	req, err := replicateRequest(out, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	decodeResponse(resp)
	if resp.StatusCode/100 != 2 {
		resp.Body.Close()
		return nil, fmt.Errorf("keypool: reading a Replicate prediction: %d", resp.StatusCode)
	}
	return readPrediction(resp)
}

// lineReader reads server-sent events, each line bounded, through the
// package's one line cutter (sseLines).
type lineReader struct {
	r     io.Reader
	cut   sseLines
	chunk sseChunk
	buf   [4096]byte
	line  []byte // the line so far, across chunks
	limit int
	eof   error
}

func newLineReader(r io.Reader, limit int) *lineReader {
	l := &lineReader{r: r, limit: limit}
	l.chunk = l.cut.cut(nil)
	return l
}

// next returns the next line without its ending (\n, \r\n or \r).
func (l *lineReader) next() (string, error) {
	for {
		for {
			start, end, ended, ok := l.chunk.next()
			if !ok {
				break
			}
			l.line = append(l.line, l.chunk.p[start:end]...)
			if ended {
				s := string(l.line)
				l.line = l.line[:0]
				return s, nil
			}
		}
		if l.eof != nil {
			if len(l.line) > 0 {
				s := string(l.line)
				l.line = l.line[:0]
				return s, nil
			}
			return "", l.eof
		}
		if len(l.line) > l.limit {
			return "", errors.New("keypool: an event stream line longer than 1 MiB")
		}
		n, err := l.r.Read(l.buf[:])
		l.chunk = l.cut.cut(l.buf[:n])
		if err != nil {
			l.eof = err
		}
	}
}

// event returns the next event's type ("message" when it names none) and
// its data lines joined by newlines.
func (l *lineReader) event() (string, string, error) {
	var event string
	var data []string
	seen := false
	for {
		line, err := l.next()
		if err != nil {
			if seen && err == io.EOF {
				return cmp.Or(event, "message"), strings.Join(data, "\n"), nil
			}
			return "", "", err
		}
		if line == "" {
			if seen {
				return cmp.Or(event, "message"), strings.Join(data, "\n"), nil
			}
			continue
		}
		if line[0] == ':' {
			continue // a comment, a keep-alive
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "event":
			event, seen = value, true
		case "data":
			data, seen = append(data, value), true
		}
	}
}
