package keypool_test

import (
	"context"
	"io"
	"net/http"
	"strings"
)

// The upstream fakes below serve the external tests; "rv" is for the
// regression tests they were first written for.

// rvRT is a RoundTripper made of a func.
type rvRT func(*http.Request) (*http.Response, error)

func (f rvRT) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rvOK is a 200 JSON answer with headers h and body (a usage object if nil).
func rvOK(req *http.Request, h map[string]string, body io.ReadCloser) *http.Response {
	hd := http.Header{"Content-Type": {"application/json"}}
	for k, v := range h {
		hd.Set(k, v)
	}
	if body == nil {
		body = io.NopCloser(strings.NewReader(`{"usage":{"prompt_tokens":1,"completion_tokens":1}}`))
	}
	return &http.Response{StatusCode: 200, Header: hd, Body: body, Request: req}
}

// ctxBody blocks Read until its request's context ends, as a net/http body does.
type ctxBody struct{ ctx context.Context }

func (b ctxBody) Read(p []byte) (int, error) { <-b.ctx.Done(); return 0, context.Cause(b.ctx) }

func (b ctxBody) Close() error { return nil }

// rvPost is a chat completion request for gpt-4o.
func rvPost(ctx context.Context) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://x/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o"}`))
	return req
}
