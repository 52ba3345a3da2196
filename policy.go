package keypool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Outcome is what one upstream answer means for the key that got it and for
// the request. The zero Outcome is OutcomeSuccess.
type Outcome uint8

const (
	OutcomeSuccess       Outcome = iota // 2xx: done; headers and usage recorded
	OutcomeRevoked                      // 401 invalid_api_key, access_terminated, clone's mismatched_organization: key revoked, next key
	OutcomeOverQuota                    // insufficient_quota, billing_not_active: key over quota, next key
	OutcomeRateLimited                  // 429 requests/tokens: key cools for the model until reset, next key
	OutcomeTooLarge                     // 429 tokens, request larger than the limit: returned as is, no key can help
	OutcomeModelNotFound                // 403/404 model_not_found: key loses the model, next key
	OutcomeKeyRejected                  // another 401: this key cannot do this; key unchanged, next key
	OutcomeServerError                  // 5xx, network error, time to headers exceeded: next key/upstream after backoff
	OutcomeClientError                  // other 4xx: the request is wrong, returned as is
	OutcomeCancelled                    // the caller went away: nobody's fault, stop
	OutcomeNotPermitted                 // the key may not do this (unverified organization): it learns so, next key
)

var outcomeNames = [...]string{
	OutcomeSuccess:       "success",
	OutcomeRevoked:       "revoked",
	OutcomeOverQuota:     "over_quota",
	OutcomeRateLimited:   "rate_limited",
	OutcomeTooLarge:      "too_large",
	OutcomeModelNotFound: "model_not_found",
	OutcomeKeyRejected:   "key_rejected",
	OutcomeServerError:   "server_error",
	OutcomeClientError:   "client_error",
	OutcomeCancelled:     "cancelled",
	OutcomeNotPermitted:  "not_permitted",
}

// String returns the outcome's snake_case name, as metrics and records show it.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText encodes the outcome as its name.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Retryable reports whether the request may go on to another key or upstream.
func (o Outcome) Retryable() bool {
	switch o {
	case OutcomeRevoked, OutcomeOverQuota, OutcomeRateLimited, OutcomeModelNotFound,
		OutcomeKeyRejected, OutcomeServerError, OutcomeNotPermitted:
		return true
	}
	return false
}

// Answer is what a Policy classifies: one attempt's upstream response or
// transport error.
type Answer struct {
	// Status is the HTTP status, 0 when no response arrived.
	Status int
	// Header is the response header (nil when no response arrived).
	Header http.Header
	// Error is the decoded OpenAI error of a non-2xx answer, or of a 200
	// stream whose first event was an error; nil when there is none.
	Error *APIError
	// Err is the transport error when no response arrived (network error,
	// time to headers exceeded); nil otherwise.
	Err error
	// Cancelled reports that the caller's context ended, so the answer says
	// nothing about the key.
	Cancelled bool
	// Clone reports that the key was sent with an organization header (an
	// organization clone), so a mismatched_organization answer is its own.
	Clone bool
	// Limits is what the answer's headers said (see ParseRateLimits).
	Limits RateLimits
}

// Policy decides what an upstream answer means: for the transport, whether a
// request fails over and what the key learns; for the Checker, what a probe
// found. Replace or wrap DefaultPolicy() with WithPolicy; Classify is called
// concurrently and must not keep a.
type Policy interface {
	Classify(a *Answer) Outcome
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(a *Answer) Outcome

// Classify calls f(a).
func (f PolicyFunc) Classify(a *Answer) Outcome { return f(a) }

// DefaultPolicy returns the policy New uses unless WithPolicy says otherwise.
// It classifies answers by status, error type and error code, never by
// message text, per the table in the package documentation. Wrap it to
// change one rule:
//
//	keypool.PolicyFunc(func(a *keypool.Answer) keypool.Outcome {
//		if a.Status == http.StatusTeapot {
//			return keypool.OutcomeServerError
//		}
//		return keypool.DefaultPolicy().Classify(a)
//	})
func DefaultPolicy() Policy { return PolicyFunc(classify) }

func classify(a *Answer) Outcome {
	if a.Cancelled {
		return OutcomeCancelled
	}
	if a.Err != nil || a.Status == 0 {
		return OutcomeServerError
	}
	var typ, code, param string
	if a.Error != nil {
		typ, code, param = a.Error.Type, a.Error.Code, a.Error.Param
	}
	switch {
	case a.Status >= 200 && a.Status < 300:
		if a.Error != nil { // a 200 stream whose first event is an error
			return streamErrorOutcome(typ)
		}
		return OutcomeSuccess
	case a.Status == http.StatusUnauthorized:
		switch code {
		case "invalid_api_key", "access_terminated", "account_deactivated":
			return OutcomeRevoked
		case "mismatched_organization":
			if a.Clone {
				return OutcomeRevoked
			}
		}
		return OutcomeKeyRejected
	case a.Status == http.StatusTooManyRequests:
		switch {
		case typ == "access_terminated" || code == "access_terminated":
			return OutcomeRevoked
		case typ == "insufficient_quota" || code == "insufficient_quota" ||
			typ == "billing_not_active" || code == "billing_not_active":
			return OutcomeOverQuota
		case typ == "tokens" && requestTooLarge(a.Limits):
			return OutcomeTooLarge
		}
		return OutcomeRateLimited
	case (a.Status == http.StatusForbidden || a.Status == http.StatusNotFound) && code == "model_not_found":
		return OutcomeModelNotFound
	case unverified(a.Status, typ, code, param):
		return OutcomeNotPermitted
	case a.Status == http.StatusRequestTimeout || a.Status >= 500:
		return OutcomeServerError
	}
	return OutcomeClientError
}

// unverified recognises the answers an unverified organization gets: a 400
// refusing "stream" as an unsupported value (streaming gpt-5-class and o3
// models), and a 403 for a model that needs verification (gpt-image-1),
// coded organization_must_be_verified or, as seen in the wild, with no code.
// Another key, in a verified organization, can serve the request.
func unverified(status int, typ, code, param string) bool {
	switch status {
	case http.StatusBadRequest:
		return param == "stream" && code == "unsupported_value"
	case http.StatusForbidden:
		return code == "organization_must_be_verified" || typ == "invalid_request_error" && code == ""
	}
	return false
}

// requestTooLarge tells a "Request too large" tokens 429 from a spent token
// bucket without reading the message: a request refused while the bucket still
// holds its whole limit was refused for its own size, and no key of the same
// tier can take it. (A project's bucket, when stated, must be full too.)
func requestTooLarge(l RateLimits) bool {
	orgFull := l.LimitTokens > 0 && l.RemainingTokens >= l.LimitTokens
	// A spent project bucket refuses requests while the org bucket is full.
	projectFull := l.RemainingProjectTokens < 0 || l.LimitProjectTokens > 0 && l.RemainingProjectTokens >= l.LimitProjectTokens
	return orgFull && projectFull
}

// streamErrorOutcome classifies the error event that opened a 200 stream.
func streamErrorOutcome(typ string) Outcome {
	switch typ {
	case "invalid_request_error":
		return OutcomeClientError
	case "tokens", "requests", "rate_limit_exceeded":
		return OutcomeRateLimited
	}
	return OutcomeServerError
}

// APIError is an OpenAI error body: {"error":{"message","type","param","code"}}.
// Its Error string names the status, type and code only: upstream messages can
// quote part of a key, so they are kept in Message and never printed.
type APIError struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param"`
	// Code is the error code; a gateway's integer code (502) is kept as its
	// decimal text, null as "".
	Code string `json:"code"`
}

// Error returns "keypool: upstream <status> <type>/<code>".
func (e *APIError) Error() string {
	return fmt.Sprintf("keypool: upstream %d %s/%s", e.Status, orDash(e.Type), orDash(e.Code))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ParseAPIError decodes an OpenAI error body loosely: code and param may be a
// string, a number or null; an error event of the Responses API
// ({"type":"error","code":…,"message":…}) is accepted too. It returns nil when
// body holds no error object (an HTML gateway page, say).
func ParseAPIError(status int, body []byte) *APIError {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil
	}
	var wire struct {
		Error *struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Param   json.RawMessage `json:"param"`
			Code    json.RawMessage `json:"code"`
		} `json:"error"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &wire) != nil {
		return nil
	}
	switch {
	case wire.Error != nil:
		return &APIError{Status: status, Message: wire.Error.Message, Type: wire.Error.Type,
			Param: looseString(wire.Error.Param), Code: looseString(wire.Error.Code)}
	case wire.Type == "error":
		code := looseString(wire.Code)
		return &APIError{Status: status, Message: wire.Message, Type: code, Code: code}
	}
	return nil
}

// looseString turns a JSON string, number or null into text.
func looseString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if raw[0] == '"' {
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	if raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' {
		return string(raw)
	}
	return ""
}
