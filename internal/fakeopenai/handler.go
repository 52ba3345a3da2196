package fakeopenai

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	chatRoute           = "POST /v1/chat/completions"
	responsesRoute      = "POST /v1/responses"
	embeddingsRoute     = "POST /v1/embeddings"
	transcriptionsRoute = "POST /v1/audio/transcriptions"
	imagesRoute         = "POST /v1/images/generations"

	maxBody = 32 << 20

	// statusClientGone is recorded when the client left before any answer.
	statusClientGone = 499
)

// generationRoutes spend quota: they go through the buckets.
var generationRoutes = map[string]bool{chatRoute: true, responsesRoute: true, embeddingsRoute: true, transcriptionsRoute: true, imagesRoute: true}

// exchange is one request being served.
type exchange struct {
	s     *Server
	w     http.ResponseWriter
	r     *http.Request
	rec   *Record // fields written under s.mu; Key and Org never change
	id    string  // hex, for x-request-id and object ids
	start time.Time
	wrote bool

	// Set once the key is accepted.
	ks  *keyState
	key Key // the key's script as the request found it
	org Org // the org the request is attributed to, as the Server knows it (Server.org)
}

// ServeHTTP answers r as api.openai.com would for the scripted keys.
//
// A generation request goes: route, auth, org header, account behaviour,
// body, parameter validation (the liveness probe's 400, with read-only
// rate-limit headers), model, organization verification, scripted failures
// and delays, buckets, then the answer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	az, isAzure := r.Context().Value(azureCallKey{}).(azureCall)
	if !isAzure && strings.HasPrefix(r.URL.Path, "/openai/") {
		s.serveAzure(w, r)
		return
	}
	now := s.now()
	rec := &Record{Time: now, Method: r.Method, Path: r.URL.Path, Key: secretOf(r.Header),
		Org: r.Header.Get("OpenAI-Organization"), Project: r.Header.Get("OpenAI-Project")}
	if isAzure {
		rec.Path, rec.Deployment = az.path, az.deployment
	}
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.records = append(s.records, rec)
	s.inFlight++
	s.mu.Unlock()

	x := &exchange{s: s, w: w, r: r, rec: rec, start: now, id: digest("req", strconv.FormatUint(seq, 10))[:32]}
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !x.wrote {
			rec.Status = statusClientGone
		}
		s.inFlight--
	}()
	if coding := s.coding(r); coding != "" {
		enc := newEncoder(w, coding, &s.encoders)
		defer enc.Close() // before the handler returns: the trailer is part of the answer
		x.w = enc
	}
	x.serve()
}

// coding is the content coding r's answer is sent in; "" = plain bytes. A
// HEAD answer has no body to encode.
func (s *Server) coding(r *http.Request) string {
	if s.noCompression || r.Method == http.MethodHead {
		return ""
	}
	return negotiateCoding(r.Header.Values("Accept-Encoding"))
}

// secretOf is the key a request carries: Bearer auth, or Azure's api-key header.
func secretOf(h http.Header) string {
	auth := h.Get("Authorization")
	if len(auth) > len("Bearer ") && strings.EqualFold(auth[:len("Bearer ")], "Bearer ") {
		return strings.TrimSpace(auth[len("Bearer "):])
	}
	return strings.TrimSpace(h.Get("api-key"))
}

func (x *exchange) serve() {
	if isReplicate(x.r.Method, x.r.URL.Path) {
		x.serveReplicate()
		return
	}
	route := x.r.Method + " " + x.r.URL.Path
	account := x.r.Method == http.MethodGet && (x.r.URL.Path == "/v1/models" || x.r.URL.Path == "/v1/me" ||
		x.r.URL.Path == "/v1/organizations" || strings.HasPrefix(x.r.URL.Path, "/v1/models/"))
	if !account && !generationRoutes[route] {
		x.fail(errInvalidURL(x.r.Method, x.r.URL.Path), nil)
		return
	}
	// The body is read up front so that every record names its model, but
	// its errors answer only after the key's.
	var req *request
	var reqErr *apiError
	if !account {
		req, reqErr = parseRequest(x.r, route)
		x.update(func(r *Record) { r.Model, r.Stream = req.Model, req.Stream })
	}
	if e := x.authenticate(); e != nil {
		x.fail(e, nil)
		return
	}
	if e := x.scriptedRefusal(account); e != nil {
		x.fail(e, nil)
		return
	}
	switch {
	case reqErr != nil:
		x.fail(reqErr, nil)
	case account:
		x.serveAccount()
	default:
		x.serveGeneration(req)
	}
}

// scriptedRefusal is the answer of an account-level script, which comes
// before anything else the request could be refused for. Accounts without
// quota may still list models and organizations.
func (x *exchange) scriptedRefusal(account bool) *apiError {
	switch {
	case x.key.Behavior == Terminated:
		return errTerminated()
	case x.key.Behavior == OverQuota && !account:
		return errQuota()
	case x.key.Behavior == BillingInactive && !account:
		return errBillingInactive()
	}
	return nil
}

// authenticate finds the key and the org the request is attributed to.
func (x *exchange) authenticate() *apiError {
	secret := x.rec.Key
	if secret == "" {
		return errMissingAuth()
	}
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	ks := x.s.keys[secret]
	if ks == nil || ks.key.Behavior == Revoked {
		return errInvalidKey(secret)
	}
	org := ks.defaultOrg()
	if h := x.rec.Org; h != "" {
		o, ok := ks.org(h)
		if !ok || strings.HasPrefix(secret, "sk-svcacct-") {
			return errMismatchedOrg()
		}
		org = o
	}
	if p := x.rec.Project; p != "" && ks.key.Project != "" && p != ks.key.Project {
		return errMismatchedProject()
	}
	x.ks, x.key, x.org = ks, ks.key, x.s.org(org)
	x.rec.OrgUsed = org.ID
	return nil
}

func (x *exchange) serveAccount() {
	path := x.r.URL.Path
	switch {
	case path == "/v1/models":
		x.writeJSON(http.StatusOK, x.ks.modelList, nil)
	case strings.HasPrefix(path, "/v1/models/"):
		id := strings.TrimPrefix(path, "/v1/models/")
		if !x.ks.models[id] {
			x.fail(errModelNotFound(id, "model"), nil)
			return
		}
		x.writeJSON(http.StatusOK, modelObject(id), nil)
	case strings.HasPrefix(x.key.Secret, "sk-svcacct-") || strings.HasPrefix(x.key.Secret, "sk-proj-"):
		x.fail(errRestricted(), nil)
	default:
		orgs := make([]any, len(x.ks.orgs))
		x.s.mu.Lock()
		for i, o := range x.ks.orgs {
			orgs[i] = orgObject(x.s.org(o))
		}
		x.s.mu.Unlock()
		list := object{"object": "list", "data": orgs}
		if path == "/v1/organizations" {
			x.writeJSON(http.StatusOK, list, nil)
			return
		}
		user := digest("user", x.key.Secret)
		x.writeJSON(http.StatusOK, object{
			"object": "user", "id": "user-" + user[:24], "email": "user-" + user[:8] + "@example.com",
			"name": "Fake User", "picture": nil, "created": 1680000000, "phone_number": nil,
			"mfa_flag_enabled": false, "orgs": list,
		}, nil)
	}
}

func (x *exchange) serveGeneration(req *request) {
	if e := req.validate(); e != nil {
		// Rate limits are enforced before validation: a key whose bucket is
		// empty gets the 429 even for an invalid request (the seed's checker
		// relies on it to spot drained trial keys). Nothing is charged.
		if limited := x.refuseIfEmpty(req.Model); limited != nil {
			e = limited
		}
		x.fail(e, x.peek(req.Model))
		return
	}
	var e *apiError
	switch {
	case req.Model == "":
		e = errNoModel()
	case !x.ks.models[req.Model]:
		e = errModelNotFound(req.Model, nil)
	case x.key.Unverified && req.route == imagesRoute && req.Model == "gpt-image-1":
		e = errVerifyModel(req.Model)
	case x.key.Unverified && req.Stream && needsVerifiedStream(req.Model):
		e = errVerifyStream()
	default:
		e = x.scriptedFailure(req)
	}
	if e != nil {
		x.fail(e, nil)
		return
	}
	if !x.delay(req) {
		return
	}
	rl, e := x.admit(req)
	if e != nil {
		x.fail(e, rl)
		return
	}
	x.answer(req, rl)
}

// answer serves an admitted request. Quota counts as spent once the answer
// is delivered in full.
func (x *exchange) answer(req *request, rl *rateHeaders) {
	created := x.s.now().Unix()
	switch req.route {
	case chatRoute, responsesRoute:
		g := generate(req.Model, req.prompt, req.maxOutput())
		switch {
		case !req.Stream && req.route == chatRoute:
			x.writeJSON(http.StatusOK, chatCompletion(x.id, req.Model, created, g), rl)
		case !req.Stream:
			x.writeJSON(http.StatusOK, responseObject(x.id, req.Model, created, &g), rl)
		case !x.stream(req, rl, created, g):
			return
		}
		x.spent(req.prompt, g.completion())
	case embeddingsRoute:
		x.writeJSON(http.StatusOK, embeddingsResult(req.Model, embeddingInputs(req.Input), req.EncodingFormat == "base64", req.prompt), rl)
		x.spent(req.prompt, 0)
	case transcriptionsRoute:
		text := generation{words: replyWords}.text()
		if req.responseFormat == "text" {
			x.writeHeader(http.StatusOK, "text/plain; charset=utf-8", rl)
			io.WriteString(x.w, text+"\n")
		} else {
			x.writeJSON(http.StatusOK, transcriptionResult(req.Model, text, req.prompt), rl)
		}
		x.spent(req.prompt, len(replyWords))
	case imagesRoute:
		x.writeJSON(http.StatusOK, imagesResult(x.id, req.Model, textOf(req.Prompt), created, req.prompt), rl)
		x.spent(req.prompt, 0)
	}
}

// stream sends g as the route's event stream, as the key's script wants it.
// It reports whether the stream ran to its normal end.
func (x *exchange) stream(req *request, rl *rateHeaders, created int64, g generation) bool {
	x.writeHeader(http.StatusOK, "text/event-stream; charset=utf-8", rl)
	sse := newSSEWriter(x.w, x.r.Context(), x.key.StreamInterval, x.s.closed)
	switch {
	case x.key.Behavior == StreamHang:
		x.hang(nil)
		return false
	case req.route == chatRoute:
		return streamChat(sse, x.id, req.Model, created, g, req.includeUsage(), x.key.Behavior)
	default:
		return streamResponse(sse, x.id, req.Model, created, g, x.key.Behavior)
	}
}

// scriptedFailure is the server error the key's script answers this request
// with, if any.
func (x *exchange) scriptedFailure(req *request) *apiError {
	switch x.key.Behavior {
	case Flaky:
		x.s.mu.Lock()
		x.ks.flaky++
		n := x.ks.flaky
		x.s.mu.Unlock()
		if k := x.key; n <= k.FailFirst || k.FailEvery > 0 && (n-k.FailFirst)%k.FailEvery == 0 {
			return errServer(k.FailStatus)
		}
	case StreamErrorFirst:
		if !req.Stream {
			return errServer(http.StatusInternalServerError)
		}
	}
	return nil
}

// delay plays SlowHeaders, and StreamHang for a request that does not
// stream. It reports whether to go on serving.
func (x *exchange) delay(req *request) bool {
	switch {
	case x.key.Behavior == SlowHeaders:
		t := time.NewTimer(x.key.Delay)
		defer t.Stop()
		return x.hang(t.C)
	case x.key.Behavior == StreamHang && !req.Stream:
		return x.hang(nil)
	}
	return true
}

// hang waits for done (nil = forever), the client going away, or the Server
// closing. It reports whether done came first.
func (x *exchange) hang(done <-chan time.Time) bool {
	select {
	case <-done:
		return true
	case <-x.r.Context().Done():
	case <-x.s.closed:
	}
	return false
}

// admit charges req to the buckets of the request's org (and project), or
// returns the 429 that refuses it; either way with the headers describing
// the buckets.
func (x *exchange) admit(req *request) (*rateHeaders, *apiError) {
	now := x.s.now()
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	c := x.s.chargeFor(x.ks, x.org, req.Model, now)
	e := c.take(req.Model, req.cost())
	return c.headers(), e
}

// refuseIfEmpty returns the 429 an empty request or token bucket gives,
// charging nothing; nil when every bucket holds something.
func (x *exchange) refuseIfEmpty(model string) *apiError {
	now := x.s.now()
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	return x.s.chargeFor(x.ks, x.org, model, now).refuseIfEmpty(model)
}

// peek describes the buckets without charging them.
func (x *exchange) peek(model string) *rateHeaders {
	now := x.s.now()
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	return x.s.chargeFor(x.ks, x.org, model, now).headers()
}

func (x *exchange) update(f func(*Record)) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	f(x.rec)
}

func (x *exchange) spent(prompt, completion int) {
	x.update(func(r *Record) { r.Spent, r.PromptTokens, r.CompletionTokens = true, prompt, completion })
}

// fail answers e. A 429 that has a wait says it in Retry-After too, unless
// the key's script is NoRetryAfter.
func (x *exchange) fail(e *apiError, rl *rateHeaders) {
	if e.retryAfter > 0 && !x.key.NoRetryAfter {
		x.w.Header().Set("Retry-After", retryAfter(e.retryAfter))
	}
	x.writeJSON(e.status, errorEnvelope(e), rl)
}

func (x *exchange) writeJSON(status int, v any, rl *rateHeaders) {
	body, err := json.Marshal(v)
	if err != nil {
		panic(err) // the fake's own bodies always marshal
	}
	x.writeHeader(status, "application/json", rl)
	x.w.Write(body)
}

// writeHeader sends the status and the headers every API answer carries.
func (x *exchange) writeHeader(status int, contentType string, rl *rateHeaders) {
	h := x.w.Header()
	h.Set("Content-Type", contentType)
	h.Set("openai-version", "2020-10-01")
	h.Set("x-request-id", "req_"+x.id)
	h.Set("openai-processing-ms", strconv.FormatInt(max(0, x.s.now().Sub(x.start).Milliseconds()), 10))
	if x.org.ID != "" {
		h.Set("openai-organization", x.org.slug())
	}
	if x.key.Project != "" {
		h.Set("openai-project", x.key.Project)
	}
	if rl != nil {
		rl.set(h)
	}
	x.w.WriteHeader(status)
	x.wrote = true
	coding := h.Get("Content-Encoding") // set by the encoder, if any, as the headers went out
	x.update(func(r *Record) { r.Status, r.Encoding = status, coding })
}

// request is the part of a generation request the fake looks at.
type request struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Messages            any    `json:"messages"`
	Input               any    `json:"input"`
	Instructions        any    `json:"instructions"`
	Prompt              any    `json:"prompt"`
	EncodingFormat      string `json:"encoding_format"`
	MaxTokens           *int   `json:"max_tokens"`
	MaxCompletionTokens *int   `json:"max_completion_tokens"`
	MaxOutputTokens     *int   `json:"max_output_tokens"`

	route          string
	responseFormat string // transcriptions
	prompt         int    // estimated prompt tokens
}

// parseRequest reads a generation request. The request it returns is never
// nil: with an error, it holds what could be read.
func parseRequest(r *http.Request, route string) (*request, *apiError) {
	req := &request{route: route}
	var e *apiError
	if route == transcriptionsRoute {
		e = req.readForm(r)
	} else {
		e = req.readJSON(r)
	}
	if route == imagesRoute && req.Model == "" {
		req.Model = "dall-e-2" // the API's default
	}
	req.prompt = req.estimatePrompt()
	return req, e
}

func (req *request) readJSON(r *http.Request) *apiError {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		return errBadJSON()
	}
	if err := json.Unmarshal(body, req); err != nil {
		if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) && te.Field != "" {
			return errInvalidType(te)
		}
		return errBadJSON()
	}
	return nil
}

func (req *request) readForm(r *http.Request) *apiError {
	if err := r.ParseMultipartForm(maxBody); err != nil {
		return errMultipart(r.Header.Get("Content-Type"))
	}
	req.Model, req.Prompt, req.responseFormat = r.FormValue("model"), r.FormValue("prompt"), r.FormValue("response_format")
	f, _, err := r.FormFile("file")
	if err != nil {
		return errMissingFile()
	}
	f.Close()
	return nil
}

// validate checks the parameters the API checks before anything else; its
// error is the one a liveness probe (max_tokens -1) is meant to get.
func (req *request) validate() *apiError {
	below := func(param string, v *int, least int) *apiError {
		if v != nil && *v < least {
			return errBelowMin(param, least, *v)
		}
		return nil
	}
	switch req.route {
	case chatRoute:
		if e := below("max_tokens", req.MaxTokens, 1); e != nil {
			return e
		}
		return below("max_completion_tokens", req.MaxCompletionTokens, 1)
	case responsesRoute:
		return below("max_output_tokens", req.MaxOutputTokens, 16)
	case embeddingsRoute:
		if len(embeddingInputs(req.Input)) == 0 {
			return errEmptyInput()
		}
	}
	return nil
}

func (req *request) includeUsage() bool {
	return req.StreamOptions != nil && req.StreamOptions.IncludeUsage
}

// maxOutput is the output limit the request sets, nil if none.
func (req *request) maxOutput() *int {
	switch req.route {
	case chatRoute:
		if req.MaxCompletionTokens != nil {
			return req.MaxCompletionTokens
		}
		return req.MaxTokens
	case responsesRoute:
		return req.MaxOutputTokens
	}
	return nil
}

// cost is what the token bucket is charged: the prompt estimate plus the
// output limit, as the real API reserves.
func (req *request) cost() int {
	if m := req.maxOutput(); m != nil && *m > 0 {
		return req.prompt + *m
	}
	return req.prompt
}

func (req *request) estimatePrompt() int {
	switch req.route {
	case chatRoute:
		return estimateTokens(textOf(req.Messages))
	case responsesRoute:
		return estimateTokens(textOf(req.Input) + textOf(req.Instructions))
	case embeddingsRoute:
		n := 0
		for _, in := range embeddingInputs(req.Input) {
			if tokens, ok := in.([]any); ok {
				n += max(len(tokens), 1)
			} else {
				n += estimateTokens(textOf(in))
			}
		}
		return max(n, 1)
	}
	return estimateTokens(textOf(req.Prompt))
}

// estimateTokens is the API's rough estimate: a token per 4 bytes, at least one.
func estimateTokens(text string) int { return max(1, (len(text)+3)/4) }

// textOf gathers the text a JSON value carries: strings, arrays of them, and
// the text-bearing fields of objects (message content, input parts, tool output).
func textOf(v any) string {
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			b.WriteString(v)
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for _, k := range []string{"content", "text", "input", "output"} {
				walk(v[k])
			}
		}
	}
	walk(v)
	return b.String()
}

// embeddingInputs splits an embeddings input into its items: a string, an
// array of strings, an array of tokens, or an array of token arrays.
func embeddingInputs(v any) []any {
	switch v := v.(type) {
	case string:
		return []any{v}
	case []any:
		if len(v) > 0 {
			if _, tokens := v[0].(float64); tokens {
				return []any{v}
			}
		}
		return v
	}
	return nil
}
