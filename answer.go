package keypool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file shapes the answer a request ends with when no attempt succeeded.
// An upstream's error about the pool's own key (revoked, out of quota, rate
// limited, refused a model) is not the caller's business and can quote the
// key or the operator's organization: the caller gets keypool's own error
// instead, in OpenAI's shape, saying what happened and nothing of the key.
// Other answers (a 400 about the request, a 500) pass on with any copy of
// the key's secret in them replaced by its ID.

// poolError returns keypool's own answer to a request whose last attempt
// ended with outcome out, and false for an answer that passes on as it is.
func poolError(out Outcome, status int, e *APIError, model string) (int, []byte, bool) {
	cause := strconv.Itoa(status)
	if e != nil {
		cause += " " + orDash(e.Type) + "/" + orDash(e.Code)
	}
	model = clip(model, 128)
	switch out {
	case OutcomeRevoked, OutcomeOverQuota, OutcomeKeyRejected, OutcomeNotPermitted:
		return http.StatusServiceUnavailable, errorJSON(
			fmt.Sprintf("No key of the pool could serve model %q: the last key tried answered %s.", model, cause),
			"server_error", "no_key_available"), true
	case OutcomeRateLimited:
		typ := "requests"
		if e != nil && e.Type == "tokens" {
			typ = "tokens"
		}
		return http.StatusTooManyRequests, errorJSON(
			fmt.Sprintf("Rate limit reached for model %q on every key of the pool that could serve it (the last answered %s).", model, cause),
			typ, "rate_limit_exceeded"), true
	case OutcomeTooLarge:
		return http.StatusTooManyRequests, errorJSON(
			fmt.Sprintf("Request too large for model %q: it needs more tokens than a key of the pool may use per minute (%s).", model, cause),
			"tokens", "rate_limit_exceeded"), true
	case OutcomeModelNotFound:
		return http.StatusNotFound, errorJSON(
			fmt.Sprintf("The model %q does not exist, or no key of the pool has access to it.", model),
			"invalid_request_error", "model_not_found"), true
	}
	return 0, nil, false
}

// errorJSON is an OpenAI error body.
func errorJSON(message, typ, code string) []byte {
	b, _ := json.Marshal(struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    string  `json:"code"`
		} `json:"error"`
	}{Error: struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	}{message, typ, nil, code}})
	return append(b, '\n')
}

// final shapes the answer of attempt a (outcome out, key k) that goes back
// to the caller: keypool's own error when it is about the pool's key, else
// the upstream's with the key's secret scrubbed. An answer the pool has
// retried as far as it could is marked final for SDKs (markFinal).
func (r *roundTrip) final(resp *http.Response, a *Answer, out Outcome, k *key) *http.Response {
	if k.up.Auth != AuthCaller { // a caller's own key: its errors are the caller's
		scrubAnswer(resp, k)
		if status, body, ok := poolError(out, resp.StatusCode, a.Error, r.model); ok {
			resp.Body.Close()
			r.replace(resp, status, body)
			return markFinal(resp, time.Time{}, r.t.now())
		}
	}
	if out == OutcomeClientError {
		return resp
	}
	return markFinal(resp, time.Time{}, r.t.now())
}

// replace gives resp status and body, as keypool's own answer.
func (r *roundTrip) replace(resp *http.Response, status int, body []byte) {
	resp.StatusCode = status
	resp.Status = fmt.Sprintf("%d %s", status, http.StatusText(status))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	h := resp.Header.Clone()
	for _, name := range []string{"Content-Length", "Content-Encoding", "Transfer-Encoding", "Content-Type"} {
		delete(h, name)
	}
	h.Set("Content-Type", "application/json")
	resp.Header = h
}

// scrubAnswer replaces every copy of k's secret in resp's headers and in the
// part of its body already read (an error body, up to errorBodyLimit) with
// the key's ID: a broken upstream may quote the key it was sent.
func scrubAnswer(resp *http.Response, k *key) {
	secret := k.cred.secret()
	if len(secret) < 8 {
		return
	}
	for name, vs := range resp.Header {
		for i, v := range vs {
			if strings.Contains(v, secret) {
				vs = append([]string(nil), vs...)
				vs[i] = strings.ReplaceAll(v, secret, string(k.cred.id))
				resp.Header[name] = vs
			}
		}
	}
	if pb, ok := resp.Body.(*cancelOnClose); ok {
		if p, ok := pb.ReadCloser.(*prefixedBody); ok && bytes.Contains(p.prefix, []byte(secret)) {
			p.prefix = bytes.ReplaceAll(p.prefix, []byte(secret), []byte(k.cred.id))
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
		}
	}
}

// scrubBytes replaces every copy of k's secret in b with the key's ID.
func scrubBytes(b []byte, k *key) []byte {
	if secret := k.cred.secret(); len(secret) >= 8 && bytes.Contains(b, []byte(secret)) {
		return bytes.ReplaceAll(b, []byte(secret), []byte(k.cred.id))
	}
	return b
}

// refusal is the answer to a request the pool found no key for before any
// attempt: in OpenAI's shape, so that SDKs in front of the transport read
// it as they read the API's own, and marked so that they do not retry what
// cannot succeed. A model no upstream serves is a 404 model_not_found; a
// lack of capacity is a 429 that says when a key frees up (Retry-After and
// retry-after-ms); anything else (every key revoked, over quota or
// disabled) a 503 no_key_available. Refusal gives the *NoKeyError back.
func (r *roundTrip) refusal(e *NoKeyError) *http.Response {
	now := r.t.now()
	status, typ, code := http.StatusServiceUnavailable, "server_error", "no_key_available"
	msg := fmt.Sprintf("No key of the pool can serve model %q: %s.", e.Model, e.Reason)
	switch {
	case e.NotFound:
		status, typ, code = http.StatusNotFound, "invalid_request_error", "model_not_found"
		msg = fmt.Sprintf("The model %q does not exist, or no upstream this client may use serves it (%s).", e.Model, e.Reason)
	case e.FreeAt.After(now):
		status, typ, code = http.StatusTooManyRequests, "requests", "rate_limit_exceeded"
		msg = fmt.Sprintf("Every key of the pool that can serve model %q is busy or rate-limited; one frees up in %s.",
			e.Model, e.FreeAt.Sub(now).Round(time.Millisecond))
	}
	body := errorJSON(msg, typ, code)
	resp := &http.Response{
		Status:     fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode: status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          &refusalBody{Reader: bytes.NewReader(body), err: e},
		ContentLength: int64(len(body)),
		Request:       r.req,
	}
	if d := e.FreeAt.Sub(now); status == http.StatusTooManyRequests && d <= time.Minute {
		// No attempt was made: an SDK that comes back after Retry-After
		// (as they do, up to a minute) multiplies no work upstream.
		setRetryAfter(resp.Header, d)
		return resp
	}
	return markFinal(resp, e.FreeAt, now)
}

// refusalBody is the body of a refusal; it carries the pool's reason.
type refusalBody struct {
	*bytes.Reader
	err *NoKeyError
}

func (*refusalBody) Close() error { return nil }

// Refusal reports whether resp is the transport's own answer to a request
// no key could take, and returns why: the *NoKeyError the pool gave, with
// its model, reason, FreeAt and NotFound. A caller that must tell "no key"
// from the API's own answers uses it; SDKs read the answer as it is.
func Refusal(resp *http.Response) (*NoKeyError, bool) {
	if resp == nil {
		return nil, false
	}
	b, ok := resp.Body.(*refusalBody)
	if !ok {
		return nil, false
	}
	return b.err, true
}
