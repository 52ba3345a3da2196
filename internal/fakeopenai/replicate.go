package fakeopenai

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Replicate's predictions API, as a Server also serves it for its keys
// (Bearer r8_…), beside OpenAI's:
//
//   - POST /v1/models/{owner}/{name}/predictions, and POST /v1/predictions
//     with a "version", create a prediction from {"input": {...}}: with
//     "Prefer: wait" it answers 201 with the prediction finished (status
//     succeeded, output a list of text pieces, metrics.input_token_count
//     and output_token_count); without, 201 with status starting, and
//     GET /v1/predictions/{id} then shows it finished. With "stream": true
//     it answers 201 at once with urls.stream.
//   - GET /v1/stream/{id} is the prediction's event stream: "output"
//     events, each a piece of text, then "done" with data {}; a failed
//     prediction sends "error" with {"detail": …}.
//   - POST /v1/predictions/{id}/cancel cancels it (status canceled).
//   - GET /v1/account answers the key's account (a check).
//
// Refusals are Replicate's problem+json ({"title","detail","status"}): 401
// for a missing, unknown or Revoked key (Terminated too), 402 for
// OverQuota and BillingInactive (no credit), 404 for a model the key does
// not serve, 422 for an input without a prompt, 429 with retry_after (in
// seconds) when the key's org buckets are empty (the same buckets as
// OpenAI's routes: RPM, TPM and Window apply), Flaky's FailStatus. Scripts:
// StreamErrorFirst sends an error event first (a non-stream prediction
// fails), StreamErrorMidway some output and then an error event,
// StreamCutShort some output and then the end of the stream without done,
// StreamHang the stream's headers only, SlowHeaders waits before the
// prediction is created.
//
// A key with Models nil serves ReplicateModels as well as DefaultModels.
// The record of a prediction's creation is the one that spends (Spent,
// token counts) once its output is delivered in full: at once with Prefer:
// wait, at the first poll, or at the end of its stream.

// ReplicateModels returns the Replicate models a Key with Models nil serves.
func ReplicateModels() []string {
	return []string{
		"meta/meta-llama-3-70b-instruct", "meta/meta-llama-3-8b-instruct",
		"mistralai/mixtral-8x7b-instruct-v0.1", "mistralai/mistral-7b-instruct-v0.2",
	}
}

// replicatePrediction is one prediction the Server created.
type replicatePrediction struct {
	id, model, secret string
	created           time.Time
	stream            bool
	pieces            []string
	input, output     int // tokens
	failed            bool
	polled            bool // its urls.get was read once
	canceled          bool // by POST …/cancel
	record            *Record
}

// isReplicate says whether path is one of Replicate's routes.
func isReplicate(method, path string) bool {
	switch {
	case method == http.MethodPost && strings.HasPrefix(path, "/v1/models/") && strings.HasSuffix(path, "/predictions"):
		return true
	case method == http.MethodPost && path == "/v1/predictions",
		method == http.MethodPost && strings.HasPrefix(path, "/v1/predictions/") && strings.HasSuffix(path, "/cancel"):
		return true
	case method == http.MethodGet && (strings.HasPrefix(path, "/v1/predictions/") || strings.HasPrefix(path, "/v1/stream/") || path == "/v1/account"):
		return true
	}
	return false
}

func (x *exchange) serveReplicate() {
	path := x.r.URL.Path
	if strings.HasPrefix(path, "/v1/stream/") {
		x.replicateStream(strings.TrimPrefix(path, "/v1/stream/"))
		return
	}
	if e := x.authenticate(); e != nil {
		x.replicateFail(http.StatusUnauthorized, "Unauthenticated", "You did not pass a valid authentication token", 0)
		return
	}
	if x.key.Behavior == Terminated {
		x.replicateFail(http.StatusUnauthorized, "Unauthenticated", "You did not pass a valid authentication token", 0)
		return
	}
	switch {
	case path == "/v1/account":
		user := digest("user", x.key.Secret)[:12]
		x.replicateJSON(http.StatusOK, object{"type": "user", "username": "user-" + user, "name": "Fake User", "github_url": nil})
	case x.r.Method == http.MethodPost && strings.HasSuffix(path, "/cancel"):
		x.replicateCancel(strings.TrimSuffix(strings.TrimPrefix(path, "/v1/predictions/"), "/cancel"))
	case strings.HasPrefix(path, "/v1/predictions/"):
		x.replicatePoll(strings.TrimPrefix(path, "/v1/predictions/"))
	default:
		x.replicateCreate()
	}
}

// replicateCreate creates a prediction.
func (x *exchange) replicateCreate() {
	var body struct {
		Version string         `json:"version"`
		Input   map[string]any `json:"input"`
		Stream  bool           `json:"stream"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, x.r.Body, maxBody))
	if err := dec.Decode(&body); err != nil {
		x.replicateFail(http.StatusBadRequest, "Invalid JSON", "The request body is not valid JSON", 0)
		return
	}
	model := body.Version
	if strings.HasPrefix(x.r.URL.Path, "/v1/models/") {
		model = strings.TrimSuffix(strings.TrimPrefix(x.r.URL.Path, "/v1/models/"), "/predictions")
	}
	prompt, _ := body.Input["prompt"].(string)
	x.update(func(r *Record) { r.Model, r.Stream = model, body.Stream })
	switch {
	case x.key.Behavior == OverQuota || x.key.Behavior == BillingInactive:
		x.replicateFail(http.StatusPaymentRequired, "Insufficient credit",
			"You have insufficient credit to run this model. Go to https://replicate.com/account/billing#billing to purchase credit.", 0)
		return
	case !x.ks.models[model] && !(x.ks.defaultModels && slices.Contains(ReplicateModels(), model)):
		x.replicateFail(http.StatusNotFound, "Not found", "The requested resource could not be found.", 0)
		return
	case prompt == "":
		x.replicateFail(http.StatusUnprocessableEntity, "Input validation failed", `- input: prompt is required`, 0)
		return
	}
	if e := x.scriptedFailure(&request{Stream: body.Stream}); e != nil && x.key.Behavior == Flaky {
		x.replicateFail(e.status, "Internal server error", "Internal server error", 0)
		return
	}
	if x.key.Behavior == SlowHeaders && !x.delay(&request{}) {
		return
	}
	sys, _ := body.Input["system_prompt"].(string)
	in := estimateTokens(prompt + sys)
	var limit *int
	for _, name := range []string{"max_tokens", "max_new_tokens"} {
		if v, ok := body.Input[name].(float64); ok {
			n := int(v)
			limit = &n
		}
	}
	req := &request{Model: model, route: chatRoute, prompt: in, MaxTokens: limit}
	if _, e := x.admit(req); e != nil {
		x.replicateFail(http.StatusTooManyRequests, "Request was throttled.",
			fmt.Sprintf("Request was throttled. Expected available in %d seconds.", seconds(e.retryAfter)), seconds(e.retryAfter))
		return
	}
	g := generate(model, in, limit)
	p := &replicatePrediction{id: digest("prediction", x.id)[:26], model: model, secret: x.key.Secret, created: x.s.now(),
		stream: body.Stream, pieces: g.deltas(), input: in, output: len(g.words),
		failed: x.key.Behavior == StreamErrorFirst && !body.Stream, record: x.rec}
	finished := !body.Stream && strings.HasPrefix(x.r.Header.Get("Prefer"), "wait")
	o := x.predictionObject(p, finished)
	x.s.mu.Lock()
	if x.s.predictions == nil {
		x.s.predictions = map[string]*replicatePrediction{}
	}
	x.s.predictions[p.id] = p
	x.s.mu.Unlock()
	if finished && !p.failed {
		p.spend(x.s, true) // before the answer: see replicateStream
	}
	x.replicateJSON(http.StatusCreated, o)
}

func seconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// replicatePoll answers GET /v1/predictions/{id}: the prediction finished.
func (x *exchange) replicatePoll(id string) {
	x.s.mu.Lock()
	p := x.s.predictions[id]
	var o object
	if p != nil && p.secret == x.key.Secret {
		o = x.predictionObject(p, true)
	}
	first := o != nil && !p.polled && !p.stream
	if o != nil {
		p.polled = true
	}
	x.s.mu.Unlock()
	if o == nil {
		x.replicateFail(http.StatusNotFound, "Not found", "The requested resource could not be found.", 0)
		return
	}
	if first && !p.failed {
		p.spend(x.s, true) // before the answer: see replicateStream
	}
	x.replicateJSON(http.StatusOK, o)
}

// replicateCancel answers POST /v1/predictions/{id}/cancel: the
// prediction, canceled (one already finished stays as it was).
func (x *exchange) replicateCancel(id string) {
	x.s.mu.Lock()
	p := x.s.predictions[id]
	var o object
	if p != nil && p.secret == x.key.Secret {
		p.canceled = true
		o = x.predictionObject(p, true)
	}
	x.s.mu.Unlock()
	if o == nil {
		x.replicateFail(http.StatusNotFound, "Not found", "The requested resource could not be found.", 0)
		return
	}
	x.replicateJSON(http.StatusOK, o)
}

// predictionObject is p as Replicate shows it: finished, or just started.
// A p that others may see requires Server.mu held.
func (x *exchange) predictionObject(p *replicatePrediction, finished bool) object {
	base := "http://" + x.r.Host
	if x.r.TLS != nil {
		base = "https://" + x.r.Host
	}
	urls := object{"get": base + "/v1/predictions/" + p.id, "cancel": base + "/v1/predictions/" + p.id + "/cancel"}
	if p.stream {
		urls["stream"] = base + "/v1/stream/" + p.id
	}
	o := object{"id": p.id, "model": p.model, "version": digest("version", p.model)[:64],
		"input": object{}, "logs": "", "output": nil, "error": nil, "status": "starting",
		"created_at": p.created.UTC().Format(time.RFC3339Nano), "urls": urls, "metrics": object{}}
	switch {
	case p.canceled && !p.record.Spent:
		o["status"] = "canceled"
	case finished && p.failed:
		o["status"], o["error"] = "failed", "CUDA out of memory"
		if p.stream { // it streamed some output before it failed
			o["metrics"] = object{"input_token_count": p.input, "output_token_count": p.output}
		}
	case finished:
		o["status"], o["output"] = "succeeded", p.pieces
		o["metrics"] = object{"input_token_count": p.input, "output_token_count": p.output, "predict_time": 0.5}
	}
	return o
}

// replicateStream serves a prediction's event stream.
func (x *exchange) replicateStream(id string) {
	x.s.mu.Lock()
	p := x.s.predictions[id]
	if p != nil {
		x.ks = x.s.keys[p.secret]
	}
	x.s.mu.Unlock()
	if p == nil || !p.stream || x.ks == nil {
		x.replicateFail(http.StatusNotFound, "Not found", "The requested resource could not be found.", 0)
		return
	}
	x.key = x.ks.key
	x.update(func(r *Record) { r.Model, r.Stream = p.model, true })
	x.w.Header().Set("Cache-Control", "no-store")
	x.replicateHeader(http.StatusOK, "text/event-stream")
	sse := newSSEWriter(x.w, x.r.Context(), x.key.StreamInterval, x.s.closed)
	if x.key.Behavior == StreamHang {
		x.hang(nil)
		return
	}
	pieces, end := p.pieces, "done"
	switch {
	case x.key.Behavior == StreamErrorFirst:
		pieces, end = nil, "error"
	case x.key.Behavior == StreamErrorMidway:
		pieces, end = pieces[:min(3, len(pieces))], "error"
	case x.key.StreamCutShort:
		pieces, end = pieces[:min(3, len(pieces))], ""
	}
	for _, piece := range pieces {
		if !sse.send("output", piece) {
			return
		}
	}
	switch end {
	case "error":
		x.s.mu.Lock()
		p.failed, p.output = true, len(pieces)
		x.s.mu.Unlock()
		sse.send("error", object{"detail": "Prediction failed: CUDA out of memory"})
	case "done":
		// The prediction's own record spends: the stream is read without
		// a key, at a URL the prediction named. It spends before the done
		// event goes, and gives it back if the event could not be sent: a
		// client stops reading at done, and may look at the records before
		// this handler returns.
		p.spend(x.s, true)
		if !sse.send("done", object{}) {
			p.spend(x.s, false)
		}
	}
}

// spend marks p's record as having spent its tokens, or not.
func (p *replicatePrediction) spend(s *Server, spent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.record.Spent, p.record.PromptTokens, p.record.CompletionTokens = spent, 0, 0
	if spent {
		p.record.PromptTokens, p.record.CompletionTokens = p.input, p.output
	}
}

func (x *exchange) replicateFail(status int, title, detail string, retryAfter int) {
	o := object{"title": title, "detail": detail, "status": status}
	if retryAfter > 0 {
		o["retry_after"] = retryAfter
	}
	x.replicateWrite(status, "application/problem+json", o)
}

func (x *exchange) replicateJSON(status int, v any) {
	x.replicateWrite(status, "application/json", v)
}

func (x *exchange) replicateWrite(status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		panic(err) // the fake's own bodies always marshal
	}
	x.replicateHeader(status, contentType)
	x.w.Write(body)
}

func (x *exchange) replicateHeader(status int, contentType string) {
	h := x.w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Replicate-Edge-Cluster", "fake")
	x.w.WriteHeader(status)
	x.wrote = true
	coding := h.Get("Content-Encoding")
	x.update(func(r *Record) { r.Status, r.Encoding = status, coding })
}
