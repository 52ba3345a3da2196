package fakeopenai

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The Server answers Azure OpenAI's paths too, as a resource
// (https://NAME.openai.azure.com) does, for the same scripted keys and
// buckets (an Azure resource's keys share its quota: give them one Org):
//
//   - /openai/deployments/{deployment}/{route}?api-version=… (route:
//     chat/completions, embeddings, …) and GET /openai/models?api-version=…,
//     the key in the api-key header (a Bearer key is refused);
//   - the newer /openai/v1/{route} with no api-version, the key in api-key
//     or as Bearer, and the deployment's name as the body's model.
//
// A deployment serves the model AddDeployment gave it. Answers are Azure's:
// errors as {"error":{"code":"401"|"429"|"DeploymentNotFound",…}} with no
// type, x-ratelimit-remaining-requests and -tokens but no limit or reset
// headers, retry-after and retry-after-ms on a 429, no openai-organization,
// a stream that opens with a prompt_filter_results event, and a 400
// content_filter for a prompt that holds ContentFilterTrigger.

// ContentFilterTrigger, in a chat request's messages sent to an Azure path,
// makes the fake answer Azure's content-filter 400.
const ContentFilterTrigger = "trip-the-azure-content-filter"

// AddDeployment makes the deployment name serve model on the Azure paths.
// It is safe while serving.
func (s *Server) AddDeployment(name, model string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deployments[name] = model
}

// azureCall is what an Azure request carries into the OpenAI handler, so that
// its Record shows the path and deployment as sent.
type azureCall struct {
	path, deployment string
}

type azureCallKey struct{}

// serveAzure answers a request on an Azure path: it checks what Azure
// checks, then serves the request as OpenAI's handler does and rewrites the
// answer into Azure's shape.
func (s *Server) serveAzure(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	var route, deployment string
	v1 := strings.HasPrefix(path, "/openai/v1/")
	switch {
	case v1:
		route = "/v1/" + strings.TrimPrefix(path, "/openai/v1/")
	case strings.HasPrefix(path, "/openai/deployments/"):
		rest := strings.TrimPrefix(path, "/openai/deployments/")
		d, tail, ok := strings.Cut(rest, "/")
		if !ok || d == "" || tail == "" {
			s.azureRefuse(w, r, http.StatusNotFound, "404", "Resource not found")
			return
		}
		deployment, route = d, "/v1/"+tail
	case path == "/openai/models" && r.Method == http.MethodGet:
		route = "/v1/models"
	default:
		s.azureRefuse(w, r, http.StatusNotFound, "404", "Resource not found")
		return
	}
	if !v1 && r.URL.Query().Get("api-version") == "" {
		s.azureRefuse(w, r, http.StatusNotFound, "404", "Resource not found")
		return
	}
	secret := strings.TrimSpace(r.Header.Get("api-key"))
	if secret == "" && v1 {
		secret = secretOf(r.Header)
	}
	if secret == "" {
		s.azureRefuse(w, r, http.StatusUnauthorized, "401", "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.")
		return
	}
	s.mu.Lock()
	ks := s.keys[secret]
	valid := ks != nil && ks.key.Behavior != Revoked
	s.mu.Unlock()
	if !valid {
		s.azureRefuse(w, r, http.StatusUnauthorized, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.")
		return
	}

	var body []byte
	if r.Body != nil {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			return
		}
		body = b
	}
	var fields map[string]json.RawMessage
	if r.Method == http.MethodPost && json.Unmarshal(body, &fields) == nil && fields != nil {
		if v1 {
			json.Unmarshal(fields["model"], &deployment)
		}
		if deployment != "" {
			s.mu.Lock()
			model, ok := s.deployments[deployment]
			s.mu.Unlock()
			if !ok {
				s.azureRefuse(w, r, http.StatusNotFound, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.")
				return
			}
			fields["model"], _ = json.Marshal(model)
			body, _ = json.Marshal(fields)
		}
		var msgs any
		json.Unmarshal(fields["messages"], &msgs)
		if strings.Contains(textOf(msgs), ContentFilterTrigger) {
			s.azureContentFilter(w, r, secret)
			return
		}
	}

	in := r.Clone(context.WithValue(r.Context(), azureCallKey{}, azureCall{path: path, deployment: deployment}))
	in.URL.Path, in.URL.RawPath, in.URL.RawQuery = route, "", ""
	in.RequestURI = route
	in.Header.Del("api-key")
	in.Header.Del("Accept-Encoding") // the answer is encoded here, once rewritten
	in.Header.Del("OpenAI-Organization")
	in.Header.Del("OpenAI-Project")
	in.Header.Set("Authorization", "Bearer "+secret)
	in.Body = io.NopCloser(bytes.NewReader(body))
	in.ContentLength = int64(len(body))

	aw := &azureWriter{header: http.Header{}, apiVersion: r.URL.Query().Get("api-version")}
	if coding := s.coding(r); coding != "" {
		enc := newEncoder(w, coding, &s.encoders)
		defer enc.Close()
		w = enc
		// The handler records the coding it finds here; the encoder sets
		// the header that goes out.
		aw.header.Set("Content-Encoding", coding)
	}
	aw.w = w
	s.ServeHTTP(aw, in)
	aw.finish()
}

// azureRefuse answers an Azure error before the request reaches the
// handler, and records it.
func (s *Server) azureRefuse(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	s.record(r, status)
	writeAzureError(w, status, code, message)
}

// azureContentFilter answers Azure's refusal of a prompt: the request's
// fault, not the key's.
func (s *Server) azureContentFilter(w http.ResponseWriter, r *http.Request, secret string) {
	s.record(r, http.StatusBadRequest)
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
		"type":    nil, "param": "prompt", "code": "content_filter", "status": 400,
		"innererror": map[string]any{
			"code": "ResponsibleAIPolicyViolation",
			"content_filter_result": map[string]any{
				"hate":      map[string]any{"filtered": true, "severity": "high"},
				"self_harm": map[string]any{"filtered": false, "severity": "safe"},
				"sexual":    map[string]any{"filtered": false, "severity": "safe"},
				"violence":  map[string]any{"filtered": false, "severity": "safe"},
			},
		},
	}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("apim-request-id", digest("apim", secret)[:32])
	w.WriteHeader(http.StatusBadRequest)
	w.Write(body)
}

// record notes a request answered without the OpenAI handler.
func (s *Server) record(r *http.Request, status int) {
	rec := &Record{Time: s.now(), Method: r.Method, Path: r.URL.Path, Key: secretOf(r.Header), Status: status}
	if rec.Key == "" {
		rec.Key = strings.TrimSpace(r.Header.Get("api-key"))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.records = append(s.records, rec)
}

func writeAzureError(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// azureWriter rewrites the OpenAI handler's answer into Azure's: its
// headers as Azure sends them, and its error bodies in Azure's shape (held
// until the handler is done: they are small).
type azureWriter struct {
	w          http.ResponseWriter
	header     http.Header
	apiVersion string
	status     int
	errBody    bytes.Buffer
}

func (a *azureWriter) Header() http.Header { return a.header }

func (a *azureWriter) WriteHeader(status int) {
	if a.status != 0 {
		return
	}
	a.status = status
	if status/100 == 2 {
		a.writeHeaders()
		if strings.HasPrefix(a.header.Get("Content-Type"), "text/event-stream") {
			// Azure sends the prompt's filter results as soon as the
			// prompt passed, before the model writes anything.
			io.WriteString(a.w, azurePromptFilterEvent)
		}
	}
}

// writeHeaders sends the headers Azure would: no OpenAI organization,
// version or processing time; of the rate limits, only what remains.
func (a *azureWriter) writeHeaders() {
	h := a.w.Header()
	for name, vs := range a.header {
		lower := strings.ToLower(name)
		switch {
		case strings.HasPrefix(lower, "openai-"), strings.HasPrefix(lower, "x-ratelimit-limit-"),
			strings.HasPrefix(lower, "x-ratelimit-reset-"), strings.HasSuffix(lower, "-project-tokens"),
			lower == "content-length", lower == "content-encoding":
		case lower == "x-request-id":
			h["Apim-Request-Id"] = vs
			h["X-Request-Id"] = vs
		default:
			h[name] = vs
		}
	}
	if secs, err := strconv.Atoi(a.header.Get("Retry-After")); err == nil {
		h.Set("retry-after-ms", strconv.Itoa(secs*1000))
	}
	h.Set("x-ms-region", "East US")
	a.w.WriteHeader(a.status)
}

func (a *azureWriter) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.WriteHeader(http.StatusOK)
	}
	if a.status/100 != 2 {
		return a.errBody.Write(p)
	}
	return a.w.Write(p)
}

// FlushError flushes what was written, for http.ResponseController.
func (a *azureWriter) FlushError() error {
	if a.status/100 != 2 {
		return nil
	}
	return http.NewResponseController(a.w).Flush()
}

// finish sends a held error in Azure's shape.
func (a *azureWriter) finish() {
	if a.status == 0 || a.status/100 == 2 {
		return
	}
	var env struct {
		Error struct {
			Message string `json:"message"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(a.errBody.Bytes(), &env)
	body := a.errBody.Bytes()
	switch {
	case a.status == http.StatusTooManyRequests:
		body = azureErrorBody("429", fmt.Sprintf("Requests to the ChatCompletions_Create Operation under Azure OpenAI API version %s have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after %s seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
			a.apiVersion, orDefault(a.header.Get("Retry-After"), "1")))
	case a.status == http.StatusUnauthorized:
		body = azureErrorBody("401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.")
	case a.status == http.StatusNotFound && env.Error.Code == "model_not_found":
		body = azureErrorBody("DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.")
	case a.status >= 500:
		body = azureErrorBody("InternalServerError", "The server had an error processing your request.")
	}
	a.header.Set("Content-Type", "application/json")
	a.writeHeaders()
	a.w.Write(body)
}

func azureErrorBody(code, message string) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	return b
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// azurePromptFilterEvent opens every Azure chat stream: the prompt's filter
// results, with no choices.
const azurePromptFilterEvent = `data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}` + "\n\n"
