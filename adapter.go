package keypool

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// UpstreamType is the protocol an upstream speaks. Every type is pooled,
// chosen, failed over, rested and metered alike: an adapter turns the
// attempt's request, built as for OpenAI, into the service's, and its
// answer back into OpenAI's shape, before the pool reads it.
type UpstreamType uint8

const (
	// TypeOpenAI is OpenAI's API and the many services compatible with it.
	// The default.
	TypeOpenAI UpstreamType = iota
	// TypeAzure is Azure OpenAI: BaseURL is the resource
	// (https://NAME.openai.azure.com), or its /openai/v1 for Azure's
	// newer API; the key goes in api-key, and a model maps to a
	// deployment (Upstream.Deployments).
	TypeAzure
	// TypeReplicate is Replicate's predictions API: chat completions of
	// the models it hosts, in OpenAI's shape. BaseURL is its API root
	// (https://api.replicate.com/v1); models are "owner/name" or
	// "owner/name:version"; routes other than POST /v1/chat/completions
	// get a 404 in OpenAI's shape without a request.
	TypeReplicate
)

var typeNames = [...]string{TypeOpenAI: "openai", TypeAzure: "azure", TypeReplicate: "replicate"}

// String returns "openai", "azure" or "replicate".
func (t UpstreamType) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// MarshalText encodes the type as its name.
func (t UpstreamType) MarshalText() ([]byte, error) {
	if int(t) >= len(typeNames) {
		return nil, fmt.Errorf("keypool: unknown upstream type %d", t)
	}
	return []byte(typeNames[t]), nil
}

// UnmarshalText reads a type's name; "" is TypeOpenAI.
func (t *UpstreamType) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*t = TypeOpenAI
		return nil
	}
	for i, name := range typeNames {
		if string(b) == name {
			*t = UpstreamType(i)
			return nil
		}
	}
	return fmt.Errorf("keypool: unknown upstream type %q (openai, azure or replicate)", clip(string(b), 32))
}

// adapter speaks one upstream type's protocol for an attempt.
type adapter interface {
	// send sends out, the attempt's request as it would go to OpenAI
	// (URL = BaseURL + the client's path after /v1, the key's headers
	// set), to the service through base, and returns the answer in
	// OpenAI's shape: status, headers (rate limits under OpenAI's names,
	// Retry-After), and a body of OpenAI's JSON or, for a stream,
	// text/event-stream of OpenAI's events ending in "data: [DONE]". A
	// route the service has no counterpart for is answered by the
	// adapter itself, 404 in OpenAI's error shape, without a request. An
	// error is a failure of the attempt, as base's error would be.
	send(base http.RoundTripper, out *http.Request, x *adaptInfo) (*http.Response, error)
}

// adaptInfo is what an adapter knows of the attempt beyond its request.
type adaptInfo struct {
	up     *Upstream
	body   []byte // the client's body, whole; nil when there is none or it was too large to keep
	model  string // as read from the body; "" when none
	stream bool
	secret func() string // the key's secret, for services that do not take "Bearer"
}

// adapterOf returns the adapter of an upstream type; nil for OpenAI's,
// whose requests go to base as they are. Each type's file adds its case.
func adapterOf(t UpstreamType) adapter {
	switch t {
	case TypeAzure:
		return azureAdapter{}
	case TypeReplicate:
		return replicateAdapter{}
	}
	return nil
}

// DefaultAzureAPIVersion is the api-version of Azure OpenAI requests when
// Upstream.APIVersion is "".
const DefaultAzureAPIVersion = "2024-10-21"

// adapterAnswer is an adapter's own answer to out, a JSON body made
// without a request (OpenAI's error shape, or a converted answer).
func adapterAnswer(out *http.Request, status int, body []byte) *http.Response {
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       out,
	}
}
