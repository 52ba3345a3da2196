package keypool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// azureAdapter speaks Azure OpenAI. Its answers are OpenAI's own shapes
// already (chat completions, streams ending in [DONE], the same
// x-ratelimit-remaining-* names and retry-after-ms), so the adapter rewrites
// the request and a few error bodies only:
//
//   - the key goes in api-key, never as Bearer;
//   - BaseURL is the resource (https://NAME.openai.azure.com): a model's
//     route goes to /openai/deployments/{deployment}/…?api-version=…, any
//     other route to /openai/…?api-version=…; a BaseURL ending in
//     /openai/v1 takes the newer form, where paths are OpenAI's, there is
//     no api-version, and the body's model is the deployment's name;
//   - Azure's 401 ("code":"401") is OpenAI's invalid_api_key, so that the
//     key is revoked; its 404 DeploymentNotFound is model_not_found; its
//     429 ("code":"429") is rate_limit_exceeded. A content-filter 400 is
//     about the request and passes on as it is.
//
// Keys of one Azure resource share its quota, as an OpenAI project's keys
// do: an answer is marked with the resource's host as its organization, so
// that the pool puts them in one scope and spends one budget.
type azureAdapter struct{}

// azureDeploymentRoutes are the routes Azure serves per deployment in its
// classic form.
var azureDeploymentRoutes = map[string]bool{
	"/chat/completions": true, "/completions": true, "/embeddings": true,
	"/audio/transcriptions": true, "/audio/translations": true, "/audio/speech": true,
	"/images/generations": true, "/images/edits": true,
}

// azureV1Suffix ends the BaseURL of an upstream that takes Azure's newer
// OpenAI-style paths.
const azureV1Suffix = "/openai/v1"

func (azureAdapter) send(base http.RoundTripper, out *http.Request, x *adaptInfo) (*http.Response, error) {
	basePath := azureBasePath(x.up.BaseURL)
	route := strings.TrimPrefix(out.URL.Path, basePath)
	v1 := strings.HasSuffix(basePath, azureV1Suffix)
	model := x.model
	if strings.HasPrefix(model, "/") {
		model = "" // the transport names a request without a model by its path
	}
	deployment := azureDeployment(x.up, model)
	if model != "" && !validDeployment(deployment) {
		return adapterAnswer(out, http.StatusBadRequest, errorJSONParam(
			fmt.Sprintf("keypool: model %q has no valid Azure deployment name", clip(model, 128)),
			"invalid_request_error", "model", "invalid_value")), closeBody(out)
	}
	rewriteModel := model != "" && deployment != model
	switch {
	case v1:
		// Paths are OpenAI's: only the model changes.
	case azureDeploymentRoutes[route]:
		if model == "" {
			return adapterAnswer(out, http.StatusBadRequest, errorJSONParam(
				"keypool: an Azure upstream needs the request's model to choose its deployment",
				"invalid_request_error", "model", "missing_required_parameter")), closeBody(out)
		}
		out.URL.Path = basePath + "/openai/deployments/" + deployment + route
		rewriteModel = false // the path names the deployment; Azure ignores the body's model
	default:
		out.URL.Path = basePath + "/openai" + route
	}
	out.URL.RawPath = ""
	if !v1 {
		q := out.URL.Query()
		q.Set("api-version", azureAPIVersion(x.up))
		out.URL.RawQuery = q.Encode()
	}
	if rewriteModel {
		if err := setBodyModel(out, x.body, deployment); err != nil {
			return adapterAnswer(out, http.StatusBadRequest, errorJSONParam(
				"keypool: "+err.Error(), "invalid_request_error", "model", "invalid_value")), closeBody(out)
		}
	}
	azureCredentials(out.Header, x)

	resp, err := base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	decodeResponse(resp)
	if headerValue(resp.Header, "Openai-Organization") == "" {
		resp.Header.Set("Openai-Organization", clip(out.URL.Host, maxScopeName))
	}
	if resp.StatusCode/100 == 2 {
		if isEventStream(resp.Header) {
			resp.Body = &azureStream{rc: resp.Body}
		}
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if b, ok := azureError(resp.StatusCode, body, deployment); ok {
		body = b
		resp.Header.Set("Content-Type", "application/json")
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// checkAzureFields refuses Azure's fields on an upstream of another type,
// and a deployment whose name cannot stand in a URL path.
func checkAzureFields(u *Upstream) error {
	if u.Type != TypeAzure {
		if len(u.Deployments) > 0 || u.APIVersion != "" {
			return fmt.Errorf("Deployments and APIVersion are for TypeAzure upstreams only")
		}
		return nil
	}
	for model, d := range u.Deployments {
		if !validDeployment(d) {
			return fmt.Errorf("the Azure deployment of model %q is not a valid name", clip(model, 128))
		}
	}
	if strings.ContainsAny(u.APIVersion, "&#?/ ") {
		return fmt.Errorf("the Azure api-version %q is not valid", clip(u.APIVersion, 64))
	}
	return nil
}

// azureBasePath is the path of an Azure upstream's BaseURL, as the pool
// joins request paths to it.
func azureBasePath(baseURL string) string {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return ""
	}
	return u.Path
}

// azureDeployment is the deployment that serves model: the upstream's map,
// else the model's own name.
func azureDeployment(up *Upstream, model string) string {
	if d, ok := up.Deployments[model]; ok && d != "" {
		return d
	}
	return model
}

func azureAPIVersion(up *Upstream) string {
	if up.APIVersion != "" {
		return up.APIVersion
	}
	return DefaultAzureAPIVersion
}

// validDeployment reports whether name can stand in a URL path as one
// segment: Azure's names are letters, digits, '-', '_' and '.', and a
// client's model name must not climb out of /openai/deployments.
func validDeployment(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > maxModelName {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// azureCredentials puts the attempt's key in api-key, where Azure reads it;
// a caller's own key (AuthCaller) moves there from its Bearer header.
func azureCredentials(h http.Header, x *adaptInfo) {
	switch x.up.Auth {
	case AuthNone:
	case AuthCaller:
		if v := headerValue(h, "Authorization"); len(v) > len("Bearer ") && strings.EqualFold(v[:len("Bearer ")], "Bearer ") {
			h["Api-Key"] = []string{strings.TrimSpace(v[len("Bearer "):])}
		}
	default:
		h["Api-Key"] = []string{x.secret()}
	}
	delete(h, "Authorization")
}

// setBodyModel puts deployment as the JSON body's model (the /openai/v1
// form names the deployment there). body is the client's whole body.
func setBodyModel(out *http.Request, body []byte, deployment string) error {
	if body == nil || headerValue(out.Header, "Content-Encoding") != "" || isMultipart(out.Header) {
		return fmt.Errorf("the body's model cannot be set to its Azure deployment (too large, encoded or not JSON)")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return fmt.Errorf("the body's model cannot be set to its Azure deployment (not a JSON object)")
	}
	fields["model"], _ = json.Marshal(deployment)
	b, err := json.Marshal(fields)
	if err != nil {
		return fmt.Errorf("the body's model cannot be set to its Azure deployment: %w", err)
	}
	if out.Body != nil {
		out.Body.Close()
	}
	out.Body = io.NopCloser(bytes.NewReader(b))
	out.ContentLength = int64(len(b))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	out.Header.Del("Content-Length")
	return nil
}

// azureError turns the Azure errors that say something about the key or
// the deployment into OpenAI's, so that the Policy reads them as it reads
// OpenAI's; ok is false for a body that passes on as it is (a content
// filter's 400 among them: it is the client's answer).
func azureError(status int, body []byte, deployment string) ([]byte, bool) {
	e := ParseAPIError(status, body)
	if e == nil {
		return nil, false
	}
	switch {
	case status == http.StatusUnauthorized && e.Type == "" && (e.Code == "401" || e.Code == ""):
		// "Access denied due to invalid subscription key or wrong API endpoint."
		return errorJSON(e.Message, "invalid_request_error", "invalid_api_key"), true
	case status == http.StatusNotFound && e.Code == "DeploymentNotFound":
		return errorJSON(fmt.Sprintf("The Azure deployment %q does not exist.", clip(deployment, 128)),
			"invalid_request_error", "model_not_found"), true
	case status == http.StatusTooManyRequests && e.Type == "" && e.Code == "429":
		return errorJSON(e.Message, "", "rate_limit_exceeded"), true
	}
	return nil, false
}

// closeBody closes the body of a request the adapter answers itself: a
// RoundTripper closes its request's body on every path.
func closeBody(out *http.Request) error {
	if out.Body != nil {
		out.Body.Close()
	}
	return nil
}

// errorJSONParam is errorJSON with a param.
func errorJSONParam(message, typ, param, code string) []byte {
	b, _ := json.Marshal(map[string]map[string]string{"error": {"message": message, "type": typ, "param": param, "code": code}})
	return append(b, '\n')
}

// azureStream hands an Azure stream on with its first event of content
// first. Azure opens a chat stream with an event of the prompt's filter
// results and no choices, sent before the model writes anything: read
// first, it would make the stream look started, so that a stream that hangs
// or fails before its first token would neither time out as a first event
// does nor fail over. The filter event follows the first real one instead
// (clients take events without choices anywhere in a stream).
type azureStream struct {
	rc      io.ReadCloser
	started bool
	pending []byte // to hand out before reading on
	err     error  // to return once pending is out
}

// azureStreamLookahead bounds what is held to reorder the opening events.
const azureStreamLookahead = 64 << 10

func (s *azureStream) Read(p []byte) (int, error) {
	if !s.started {
		s.started = true
		s.pending, s.err = reorderAzureStream(s.rc)
	}
	if len(s.pending) > 0 {
		n := copy(p, s.pending)
		s.pending = s.pending[n:]
		return n, nil
	}
	if s.err != nil {
		return 0, s.err
	}
	return s.rc.Read(p)
}

func (s *azureStream) Close() error { return s.rc.Close() }

// reorderAzureStream reads the opening of a stream and returns it with a
// leading prompt-filter event moved after the event that follows it; an
// error is the read's, after what was read.
func reorderAzureStream(r io.Reader) ([]byte, error) {
	buf := make([]byte, 0, 2048)
	var err error
	// read reads until buf holds n complete events, or it cannot.
	read := func(n int) bool {
		for len(eventEnds(buf, n)) < n {
			if err != nil || len(buf) >= azureStreamLookahead {
				return false
			}
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			var m int
			m, err = r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+m]
		}
		return true
	}
	if !read(1) {
		return buf, err
	}
	first := eventEnds(buf, 1)[0]
	if !promptFilterEvent(buf[:first]) || !read(2) {
		return buf, err
	}
	second := eventEnds(buf, 2)[1]
	out := make([]byte, 0, len(buf))
	out = append(out, buf[first:second]...)
	out = append(out, buf[:first]...)
	out = append(out, buf[second:]...)
	return out, err
}

// eventEnds returns where the first n events of an SSE stream in b end
// (after their blank line), as many as b holds.
func eventEnds(b []byte, n int) []int {
	var ends []int
	for i := 0; i < len(b) && len(ends) < n; i++ {
		if b[i] != '\n' {
			continue
		}
		j := i + 1
		if j < len(b) && b[j] == '\r' {
			j++
		}
		if j < len(b) && b[j] == '\n' {
			ends = append(ends, j+1)
			i = j
		}
	}
	return ends
}

// promptFilterEvent reports whether ev is Azure's opening event: data of an
// object with prompt_filter_results and an empty choices list.
func promptFilterEvent(ev []byte) bool {
	for line := range bytes.SplitSeq(ev, []byte("\n")) {
		data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("data:"))
		if !ok {
			continue
		}
		var chunk struct {
			Choices *[]json.RawMessage `json:"choices"`
			Filter  json.RawMessage    `json:"prompt_filter_results"`
		}
		return json.Unmarshal(bytes.TrimSpace(data), &chunk) == nil &&
			chunk.Choices != nil && len(*chunk.Choices) == 0 && len(chunk.Filter) > 0
	}
	return false
}
