package fakeopenai

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiError is an error answer; it marshals to the inside of the API's
// {"error":{…}} envelope.
type apiError struct {
	status     int
	retryAfter time.Duration // > 0: send Retry-After

	Message string `json:"message"`
	Type    string `json:"type"`
	Param   any    `json:"param"`
	Code    any    `json:"code"`
}

func errorEnvelope(e *apiError) any {
	return struct {
		Error *apiError `json:"error"`
	}{e}
}

func invalidRequest(status int, msg string, param, code any) *apiError {
	return &apiError{status: status, Message: msg, Type: "invalid_request_error", Param: param, Code: code}
}

func errInvalidURL(method, path string) *apiError {
	return invalidRequest(http.StatusNotFound, fmt.Sprintf("Invalid URL (%s %s)", method, path), nil, nil)
}

func errMissingAuth() *apiError {
	return invalidRequest(http.StatusUnauthorized, "Missing bearer or basic authentication in header", nil, nil)
}

func errInvalidKey(secret string) *apiError {
	return invalidRequest(http.StatusUnauthorized, "Incorrect API key provided: "+maskKey(secret)+
		". You can find your API key at https://platform.openai.com/account/api-keys.", nil, "invalid_api_key")
}

func errMismatchedOrg() *apiError {
	return invalidRequest(http.StatusUnauthorized, "OpenAI-Organization header should match organization for API key", nil, "mismatched_organization")
}

func errMismatchedProject() *apiError {
	return invalidRequest(http.StatusUnauthorized, "OpenAI-Project header should match project for API key", nil, "mismatched_project")
}

// errRestricted answers org listing for project and service-account keys,
// which cannot read organizations.
func errRestricted() *apiError {
	return invalidRequest(http.StatusForbidden, "You have insufficient permissions for this operation. Missing scopes: api.organization.read. "+
		"Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), "+
		"and if you're using a restricted API key, that it has the necessary scopes.", nil, nil)
}

func errQuota() *apiError {
	return &apiError{status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "insufficient_quota",
		Message: "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."}
}

func errBillingInactive() *apiError {
	return &apiError{status: http.StatusTooManyRequests, Type: "billing_not_active",
		Message: "Your account is not active, please check your billing details on our website."}
}

func errTerminated() *apiError {
	return &apiError{status: http.StatusTooManyRequests, Type: "access_terminated", Code: "access_terminated",
		Message: "Your access was terminated due to violation of our policies, please check your email for more information. If you believe this is in error and would like to appeal, please contact us through our help center at help.openai.com."}
}

// errServer is the upstream failure a Flaky key answers with status (0 = 500).
func errServer(status int) *apiError {
	switch status {
	case 0, http.StatusInternalServerError:
		return &apiError{status: http.StatusInternalServerError, Type: "server_error",
			Message: "The server had an error while processing your request. Sorry about that!"}
	case http.StatusBadGateway:
		return &apiError{status: status, Type: "cf_bad_gateway", Code: http.StatusBadGateway, Message: "Bad gateway."}
	case http.StatusServiceUnavailable:
		return &apiError{status: status, Type: "server_error",
			Message: "That model is currently overloaded with other requests. You can retry your request, or contact us through our help center at help.openai.com if the error persists. (Please include the request ID in your message.)"}
	}
	return &apiError{status: status, Type: "server_error", Message: http.StatusText(status)}
}

const streamErrorMessage = "The server experienced an error while processing your request. Sorry about that!"

func errStream() *apiError { return &apiError{Message: streamErrorMessage, Type: "server_error"} }

func errBadJSON() *apiError {
	return invalidRequest(http.StatusBadRequest, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. "+
		"The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, "+
		"please contact us through our help center at help.openai.com.)", nil, nil)
}

func errInvalidType(te *json.UnmarshalTypeError) *apiError {
	want := "an object"
	switch te.Type.String() {
	case "bool":
		want = "a boolean"
	case "int":
		want = "an integer"
	case "string":
		want = "a string"
	}
	got := te.Value
	switch {
	case got == "bool":
		got = "a boolean"
	case strings.HasPrefix(got, "number"):
		got = "a number"
	case got == "array" || got == "object":
		got = "an " + got
	default:
		got = "a " + got
	}
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Invalid type for '%s': expected %s, but got %s instead.", te.Field, want, got), te.Field, "invalid_type")
}

func errBelowMin(param string, least, got int) *apiError {
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Invalid '%s': integer below minimum value. Expected a value >= %d, but got %d instead.", param, least, got),
		param, "integer_below_min_value")
}

func errNoModel() *apiError {
	return invalidRequest(http.StatusBadRequest, "you must provide a model parameter", nil, nil)
}

func errModelNotFound(model string, param any) *apiError {
	return invalidRequest(http.StatusNotFound, fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model), param, "model_not_found")
}

const verifyHint = "Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization. If you just verified, it can take up to 15 minutes for access to propagate."

func errVerifyModel(model string) *apiError {
	return invalidRequest(http.StatusForbidden, fmt.Sprintf("Your organization must be verified to use the model `%s`. %s", model, verifyHint), nil, nil)
}

func errVerifyStream() *apiError {
	return invalidRequest(http.StatusBadRequest, "Your organization must be verified to stream this model. "+verifyHint, "stream", "unsupported_value")
}

func errEmptyInput() *apiError {
	return invalidRequest(http.StatusBadRequest, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", nil, nil)
}

func errMultipart(contentType string) *apiError {
	return invalidRequest(http.StatusBadRequest, fmt.Sprintf("Invalid Content-Type header (%s), expected multipart/form-data.", contentType), nil, nil)
}

func errMissingFile() *apiError {
	return invalidRequest(http.StatusBadRequest, "1 validation error for Request\nbody -> file\n  field required (type=value_error.missing)", nil, nil)
}

// maskKey hides a secret the way the API's 401 message does: the first 8 and
// last 4 characters stay, the rest become stars.
func maskKey(s string) string {
	if len(s) <= 12 {
		keep := min(3, len(s))
		return s[:keep] + strings.Repeat("*", len(s)-keep)
	}
	return s[:8] + strings.Repeat("*", len(s)-12) + s[len(s)-4:]
}

// The generated reply: fixed words, so tests can predict text and usage.
var replyWords = strings.Fields("Hello from the fake OpenAI server.")

const (
	fingerprint     = "fp_f4k30a1c0de"
	reasoningTokens = 64 // spent by o-series and gpt-5 models before answering
	cacheMinimum    = 1024
	cacheBlock      = 128
)

// generation is what the fake "model" produced for one request.
type generation struct {
	words                     []string
	finish                    string // "stop", or "length" when the output limit cut it
	prompt, cached, reasoning int
}

func generate(model string, prompt int, limit *int) generation {
	g := generation{words: replyWords, finish: "stop", prompt: prompt}
	if isReasoning(model) {
		g.reasoning = reasoningTokens
	}
	if limit != nil {
		g.reasoning = min(g.reasoning, *limit)
		if n := max(*limit-g.reasoning, 0); n < len(g.words) {
			g.words, g.finish = g.words[:n], "length"
		}
	}
	if prompt >= cacheMinimum {
		g.cached = prompt / cacheBlock * cacheBlock
	}
	return g
}

func (g generation) text() string    { return strings.Join(g.words, " ") }
func (g generation) completion() int { return len(g.words) + g.reasoning }

// deltas is the text cut into stream pieces that join back into text().
func (g generation) deltas() []string {
	out := make([]string, len(g.words))
	for i, w := range g.words {
		if i > 0 {
			w = " " + w
		}
		out[i] = w
	}
	return out
}

func isReasoning(model string) bool {
	if strings.HasPrefix(model, "gpt-5") {
		return !strings.Contains(model, "chat")
	}
	return len(model) > 1 && model[0] == 'o' && model[1] >= '0' && model[1] <= '9'
}

// needsVerifiedStream: models an unverified organization may call but not stream.
func needsVerifiedStream(model string) bool {
	return strings.HasPrefix(model, "gpt-5") || modelFamily(model) == "o3"
}

type object = map[string]any

func (g generation) chatUsage() object {
	return object{
		"prompt_tokens": g.prompt, "completion_tokens": g.completion(), "total_tokens": g.prompt + g.completion(),
		"prompt_tokens_details": object{"cached_tokens": g.cached, "audio_tokens": 0},
		"completion_tokens_details": object{"reasoning_tokens": g.reasoning, "audio_tokens": 0,
			"accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
	}
}

func (g generation) responsesUsage() object {
	return object{
		"input_tokens": g.prompt, "input_tokens_details": object{"cached_tokens": g.cached},
		"output_tokens": g.completion(), "output_tokens_details": object{"reasoning_tokens": g.reasoning},
		"total_tokens": g.prompt + g.completion(),
	}
}

func chatCompletion(id, model string, created int64, g generation) object {
	return object{
		"id": "chatcmpl-" + id, "object": "chat.completion", "created": created, "model": model,
		"choices": []any{object{
			"index":         0,
			"message":       object{"role": "assistant", "content": g.text(), "refusal": nil, "annotations": []any{}},
			"logprobs":      nil,
			"finish_reason": g.finish,
		}},
		"usage": g.chatUsage(), "service_tier": "default", "system_fingerprint": fingerprint,
	}
}

// streamChat writes g as chat.completion.chunk events, as the scripted
// behaviour wants them. It reports whether the stream ran to its [DONE].
func streamChat(sse *sseWriter, id, model string, created int64, g generation, includeUsage bool, script Behavior) bool {
	chunk := func(choices []any) object {
		c := object{"id": "chatcmpl-" + id, "object": "chat.completion.chunk", "created": created, "model": model,
			"service_tier": "default", "system_fingerprint": fingerprint, "choices": choices}
		if includeUsage {
			c["usage"] = nil
		}
		return c
	}
	choice := func(delta object, finish any) []any {
		return []any{object{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}}
	}
	if script == StreamErrorFirst {
		sse.send("", errorEnvelope(errStream()))
		return false
	}
	if !sse.send("", chunk(choice(object{"role": "assistant", "content": "", "refusal": nil}, nil))) {
		return false
	}
	deltas := g.deltas()
	if script == StreamErrorMidway {
		deltas = deltas[:min(2, len(deltas))]
	}
	for _, d := range deltas {
		if !sse.send("", chunk(choice(object{"content": d}, nil))) {
			return false
		}
	}
	if script == StreamErrorMidway {
		sse.send("", errorEnvelope(errStream()))
		return false
	}
	if !sse.send("", chunk(choice(object{}, g.finish))) {
		return false
	}
	if includeUsage {
		last := chunk([]any{})
		last["usage"] = g.chatUsage()
		if !sse.send("", last) {
			return false
		}
	}
	return sse.send("", "[DONE]")
}

// responseObject is a Responses API "response"; g nil = still in progress.
func responseObject(id, model string, created int64, g *generation) object {
	r := object{
		"id": "resp_" + id, "object": "response", "created_at": created, "status": "in_progress",
		"background": false, "error": nil, "incomplete_details": nil, "instructions": nil,
		"model": model, "output": []any{}, "parallel_tool_calls": true, "previous_response_id": nil,
		"service_tier": "default", "store": true, "temperature": 1.0, "top_p": 1.0,
		"text": object{"format": object{"type": "text"}}, "tool_choice": "auto", "tools": []any{},
		"truncation": "disabled", "usage": nil, "user": nil, "metadata": object{},
	}
	if g != nil {
		r["status"] = g.status()
		r["output"] = []any{messageItem(id, g.status(), outputText(g.text()))}
		r["usage"] = g.responsesUsage()
		if g.finish == "length" {
			r["incomplete_details"] = object{"reason": "max_output_tokens"}
		}
	}
	return r
}

// status is the status of a finished response, and of its message item.
func (g generation) status() string {
	if g.finish == "length" {
		return "incomplete"
	}
	return "completed"
}

func messageItem(id, status string, parts ...any) object {
	return object{"id": "msg_" + id, "type": "message", "status": status, "role": "assistant", "content": append([]any{}, parts...)}
}

func outputText(text string) object {
	return object{"type": "output_text", "annotations": []any{}, "logprobs": []any{}, "text": text}
}

// streamResponse writes g as Responses API events, as the scripted behaviour
// wants them. It reports whether the stream ran to its final event.
func streamResponse(sse *sseWriter, id, model string, created int64, g generation, script Behavior) bool {
	seq := 0
	emit := func(typ string, fields object) bool {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		return sse.send(typ, fields)
	}
	fail := func() bool {
		emit("error", object{"code": "server_error", "message": streamErrorMessage, "param": nil})
		return false
	}
	if script == StreamErrorFirst {
		return fail()
	}
	msgID, text := "msg_"+id, g.text()
	part := func(fields object) object {
		fields["item_id"], fields["output_index"], fields["content_index"] = msgID, 0, 0
		return fields
	}
	ok := emit("response.created", object{"response": responseObject(id, model, created, nil)}) &&
		emit("response.in_progress", object{"response": responseObject(id, model, created, nil)}) &&
		emit("response.output_item.added", object{"output_index": 0, "item": messageItem(id, "in_progress")}) &&
		emit("response.content_part.added", part(object{"part": outputText("")}))
	if !ok {
		return false
	}
	deltas := g.deltas()
	if script == StreamErrorMidway {
		deltas = deltas[:min(2, len(deltas))]
	}
	for _, d := range deltas {
		if !emit("response.output_text.delta", part(object{"delta": d, "logprobs": []any{}})) {
			return false
		}
	}
	if script == StreamErrorMidway {
		return fail()
	}
	return emit("response.output_text.done", part(object{"text": text, "logprobs": []any{}})) &&
		emit("response.content_part.done", part(object{"part": outputText(text)})) &&
		emit("response.output_item.done", object{"output_index": 0, "item": messageItem(id, g.status(), outputText(text))}) &&
		emit("response."+g.status(), object{"response": responseObject(id, model, created, &g)})
}

// embeddingVector is a deterministic unit vector of 8 dimensions for input.
func embeddingVector(model string, input any) []float64 {
	sum := []byte(digest(model, fmt.Sprint(input)))
	v := make([]float64, 8)
	var norm float64
	for i := range v {
		x := float64(binary.BigEndian.Uint32(sum[i*4:]))/math.MaxUint32*2 - 1
		v[i], norm = x, norm+x*x
	}
	for i := range v {
		v[i] = float64(float32(v[i] / math.Sqrt(norm)))
	}
	return v
}

// base64Floats encodes v as the API's encoding_format "base64" does:
// little-endian float32s.
func base64Floats(v []float64) string {
	b := make([]byte, 0, 4*len(v))
	for _, f := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(f)))
	}
	return base64.StdEncoding.EncodeToString(b)
}

func embeddingsResult(model string, inputs []any, asBase64 bool, promptTokens int) object {
	data := make([]any, len(inputs))
	for i, in := range inputs {
		var vec any = embeddingVector(model, in)
		if asBase64 {
			vec = base64Floats(vec.([]float64))
		}
		data[i] = object{"object": "embedding", "index": i, "embedding": vec}
	}
	return object{"object": "list", "data": data, "model": model,
		"usage": object{"prompt_tokens": promptTokens, "total_tokens": promptTokens}}
}

// transcriptionResult is the json response_format; the gpt-4o transcribe
// models also report token usage, whisper-1 does not.
func transcriptionResult(model, text string, promptTokens int) object {
	body := object{"text": text}
	if model != "whisper-1" {
		n := len(strings.Fields(text))
		body["usage"] = object{"type": "tokens", "input_tokens": promptTokens, "output_tokens": n, "total_tokens": promptTokens + n}
	}
	return body
}

// onePixelPNG is the image the fake "generates".
const onePixelPNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="

func imagesResult(id, model, prompt string, created int64, promptTokens int) object {
	if model == "gpt-image-1" {
		return object{"created": created, "data": []any{object{"b64_json": onePixelPNG}},
			"usage": object{"input_tokens": promptTokens, "output_tokens": 272, "total_tokens": promptTokens + 272,
				"input_tokens_details": object{"text_tokens": promptTokens, "image_tokens": 0}}}
	}
	return object{"created": created, "data": []any{object{
		"url": "https://fake.openai.test/images/" + id + ".png", "revised_prompt": prompt}}}
}

// modelEntry is one model of /v1/models, its fields in the API's order.
type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func modelObject(id string) modelEntry {
	n, _ := strconv.ParseUint(digest("created", id)[:8], 16, 64)
	return modelEntry{ID: id, Object: "model", Created: 1680000000 + int64(n%60000000), OwnedBy: "system"}
}

// modelList encodes a key's /v1/models answer; a key's list never changes,
// so it is encoded once.
func modelList(models []string) json.RawMessage {
	data := make([]modelEntry, len(models))
	for i, m := range models {
		data[i] = modelObject(m)
	}
	b, _ := json.Marshal(struct {
		Object string       `json:"object"`
		Data   []modelEntry `json:"data"`
	}{"list", data})
	return b
}

func orgObject(o Org) object {
	return object{
		"object": "organization", "id": o.ID, "created": 1680000000, "title": o.Title, "name": o.slug(),
		"description": nil, "personal": o.Title == "Personal", "is_default": o.Default, "role": "owner",
		"projects": object{"object": "list", "data": []any{}},
	}
}

// sseWriter writes server-sent events, flushing each one (through the
// content encoder, if any), pausing interval before each event after the
// first, and stops for good once the client has gone.
type sseWriter struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	ctx      context.Context
	interval time.Duration
	closed   <-chan struct{} // Server.closed: pauses end early
	sent     int
	err      error
}

func newSSEWriter(w http.ResponseWriter, ctx context.Context, interval time.Duration, closed <-chan struct{}) *sseWriter {
	s := &sseWriter{w: w, rc: http.NewResponseController(w), ctx: ctx, interval: interval, closed: closed}
	s.err = s.rc.Flush() // the headers go out at once, before any event
	return s
}

// send writes one event (event "" = a data line only; a string data is sent
// as is, anything else as JSON). It reports false once the client has gone.
func (s *sseWriter) send(event string, data any) bool {
	if s.err == nil && s.sent > 0 && s.interval > 0 {
		s.pause()
	}
	if s.err == nil {
		s.err = s.ctx.Err()
	}
	if s.err != nil {
		return false
	}
	s.sent++
	var b []byte
	if event != "" {
		b = fmt.Appendf(b, "event: %s\n", event)
	}
	b = append(b, "data: "...)
	if str, ok := data.(string); ok {
		b = append(b, str...)
	} else {
		j, err := json.Marshal(data)
		if err != nil {
			panic(err) // the fake's own bodies always marshal
		}
		b = append(b, j...)
	}
	b = append(b, "\n\n"...)
	if _, s.err = s.w.Write(b); s.err == nil {
		s.err = s.rc.Flush()
	}
	return s.err == nil
}

// pause waits interval, or until the client goes away or the Server closes.
func (s *sseWriter) pause() {
	t := time.NewTimer(s.interval)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	case <-s.closed:
	}
}
