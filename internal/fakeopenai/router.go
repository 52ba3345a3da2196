package fakeopenai

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
)

// Router is an http.RoundTripper that stands in for every host at once: it
// answers each request in memory with Handler, after noting where it was
// going. Tests put it under a transport (keypool.WithBase) whose config names
// real hosts, such as openai-api-route's sample config with api.openai.com,
// so that the config is tested unchanged and nothing leaves the process. It
// runs the handler in the caller's goroutine, so it works under
// testing/synctest; a handler that waits for the request's context to end
// makes the attempt fail with the context's error, as a hung upstream does.
//
// A Router is safe for simultaneous use by multiple goroutines.
type Router struct {
	// Handler answers every request; nil answers 200 with an empty JSON
	// object. r.Host is the host the request was sent to.
	Handler http.Handler

	mu   sync.Mutex
	hits []Hit
}

// Hit is one request a Router saw.
type Hit struct {
	Method        string
	URL           string // as sent: scheme, host, path and query
	Authorization string // the Authorization header; "" when none
	Model         string // the JSON body's "model"; "" when none
}

// RoundTrip answers req with r.Handler.
func (r *Router) RoundTrip(req *http.Request) (*http.Response, error) {
	hit := Hit{Method: req.Method, URL: req.URL.String(), Authorization: req.Header.Get("Authorization")}
	in := req.Clone(req.Context())
	in.Host = req.URL.Host
	in.RequestURI = req.URL.RequestURI()
	in.Body = http.NoBody
	if req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		var m struct {
			Model string `json:"model"`
		}
		if json.Unmarshal(body, &m) == nil {
			hit.Model = m.Model
		}
		in.Body = io.NopCloser(bytes.NewReader(body))
	}
	r.mu.Lock()
	r.hits = append(r.hits, hit)
	r.mu.Unlock()
	rec := httptest.NewRecorder()
	if r.Handler == nil {
		rec.Header().Set("Content-Type", "application/json")
		rec.WriteString("{}")
	} else {
		r.Handler.ServeHTTP(rec, in)
	}
	if req.Body != nil {
		req.Body.Close()
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// Hits returns what the Router saw, in order.
func (r *Router) Hits() []Hit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Hit(nil), r.hits...)
}

// Reset forgets what the Router saw.
func (r *Router) Reset() {
	r.mu.Lock()
	r.hits = nil
	r.mu.Unlock()
}
