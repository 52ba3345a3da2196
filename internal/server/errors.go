package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/keypool/keypool"
)

// apiError is the body of an OpenAI error answer:
// {"error":{"message":…,"type":…,"param":null,"code":…}}.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    any     `json:"code"` // a string, or nil for null
}

// errInvalidToken is OpenAI's answer to a bad key, without the key: a token
// is never echoed.
var errInvalidToken = apiError{
	Message: "Incorrect API key provided. The proxy expects \"Authorization: Bearer <token>\" with one of its client tokens.",
	Type:    "invalid_request_error",
	Code:    "invalid_api_key",
}

// errNoUpstream refuses a valid client token that may use no upstream for
// this request: every upstream has tokens of its own.
var errNoUpstream = apiError{
	Message: "This client token may not use any upstream of the proxy.",
	Type:    "invalid_request_error",
	Code:    "upstream_not_permitted",
}

// retryAfterMax is how far ahead a key may free up for the proxy to answer
// 429 with Retry-After; later than that, waiting is not worth it and the
// answer is 503. The SDKs honour Retry-After up to 60 s.
const retryAfterMax = time.Minute

func (s *rules) tooLarge() apiError {
	return apiError{
		Message: fmt.Sprintf("Request body too large: the proxy accepts at most %d bytes.", s.maxBody),
		Type:    "invalid_request_error", Code: "request_too_large",
	}
}

func ptr(s string) *string { return &s }

// writeError writes e as an OpenAI error answer with status.
func writeError(w http.ResponseWriter, status int, e apiError) {
	body, err := json.Marshal(struct {
		Error apiError `json:"error"`
	}{e})
	if err != nil { // apiError holds strings only
		panic(err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// proxyError answers a request the transport returned no response for. Its
// errors never hold a key or a token: the transport's name keys by ID, and
// the client's token was removed before the request reached it.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ctx := r.Context()
	log := func(level slog.Level, msg string, status int) {
		s.log.LogAttrs(ctx, level, msg, slog.String("method", logPath(r.Method)), slog.String("path", logPath(r.URL.Path)),
			slog.Int("status", status), slog.String("err", err.Error()))
	}
	var (
		noKey     *keypool.NoKeyError
		exhausted *keypool.ExhaustedError
		tooBig    *http.MaxBytesError
	)
	switch {
	case errors.Is(err, errBodyIdle):
		s.count("body_idle")
		setError(w, "body_idle")
		log(slog.LevelInfo, "client stopped sending its body", http.StatusRequestTimeout)
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout, apiError{
			Message: fmt.Sprintf("The request body stopped arriving: the proxy waits at most %s between its bytes.", s.cur.Load().bodyIdle),
			Type:    "invalid_request_error", Code: "request_timeout",
		})
		dropBody(w)
	case errors.Is(err, errBodyMemory):
		s.count("body_memory")
		setError(w, "busy")
		log(slog.LevelWarn, "request bodies in memory at their limit", http.StatusServiceUnavailable)
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, apiError{
			Message: "The proxy holds as many request bodies as it may; try again in a moment.",
			Type:    "server_error", Code: "server_busy",
		})
		dropBody(w)
	case errors.As(err, &tooBig):
		s.count("too_large")
		setError(w, "too_large")
		log(slog.LevelInfo, "request body too large", http.StatusRequestEntityTooLarge)
		writeError(w, http.StatusRequestEntityTooLarge, s.cur.Load().tooLarge())
	case ctx.Err() != nil:
		// The client went away (or the server is shutting down): nobody
		// reads an answer, and it is not the upstream's fault.
		setError(w, "cancelled")
		log(slog.LevelDebug, "client went away", 499)
		w.WriteHeader(http.StatusBadGateway)
	case errors.Is(err, keypool.ErrBodyTooLarge):
		s.count("too_large")
		setError(w, "too_large")
		log(slog.LevelInfo, "request body too large once decoded", http.StatusRequestEntityTooLarge)
		writeError(w, http.StatusRequestEntityTooLarge, s.cur.Load().tooLarge())
	case errors.Is(err, keypool.ErrBadModel):
		s.count("bad_model")
		setError(w, "bad_model")
		log(slog.LevelInfo, "model name refused", http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, apiError{
			Message: "Invalid model: a model name is 1 to 256 bytes of UTF-8 without control characters.",
			Type:    "invalid_request_error", Param: ptr("model"), Code: "invalid_model",
		})
	case errors.Is(err, keypool.ErrUnreadableModel):
		s.count("bad_model")
		setError(w, "bad_model")
		log(slog.LevelInfo, "model unreadable", http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, apiError{
			Message: "The request's model cannot be read: send a JSON object with a \"model\" string (uncompressed, or gzip or deflate).",
			Type:    "invalid_request_error", Param: ptr("model"), Code: "invalid_request_body",
		})
	case errors.Is(err, keypool.ErrBadPath):
		s.count("bad_path")
		setError(w, "bad_path")
		log(slog.LevelInfo, "path refused", http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, apiError{
			Message: "Invalid URL: the path may not have . or .. segments.",
			Type:    "invalid_request_error", Code: "invalid_url",
		})
	case errors.As(err, &noKey):
		setError(w, "no_key")
		setModel(w, noKey.Model)
		log(slog.LevelWarn, "no key available", s.noKey(w, noKey))
	case errors.As(err, &exhausted):
		setError(w, "upstream_unavailable")
		log(slog.LevelWarn, "upstream unavailable", http.StatusBadGateway)
		w.Header().Set("X-Should-Retry", "false")
		writeError(w, http.StatusBadGateway, apiError{
			Message: fmt.Sprintf("The upstream could not be reached: %d attempts failed.", exhausted.Attempts),
			Type:    "server_error", Code: "upstream_unavailable",
		})
	default:
		setError(w, "proxy_error")
		log(slog.LevelError, "proxy error", http.StatusBadGateway)
		writeError(w, http.StatusBadGateway, apiError{
			Message: "The proxy could not forward the request.",
			Type:    "server_error", Code: "proxy_error",
		})
	}
}

// noKey answers a request no key could take: 429 with Retry-After when a key
// frees up within retryAfterMax, else 503 with the pool's reason.
func (s *Server) noKey(w http.ResponseWriter, e *keypool.NoKeyError) int {
	if !e.FreeAt.IsZero() {
		if d := e.FreeAt.Sub(s.now()); d <= retryAfterMax {
			secs := max(1, int(math.Ceil(d.Seconds())))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeError(w, http.StatusTooManyRequests, apiError{
				Message: fmt.Sprintf("Every key of the proxy is busy or rate-limited for model %q; one frees up in %d s.", e.Model, secs),
				Type:    "requests", Code: "rate_limit_exceeded",
			})
			return http.StatusTooManyRequests
		}
	}
	w.Header().Set("X-Should-Retry", "false")
	writeError(w, http.StatusServiceUnavailable, apiError{
		Message: fmt.Sprintf("No key of the proxy can serve model %q: %s.", e.Model, e.Reason),
		Type:    "server_error", Code: "no_key_available",
	})
	return http.StatusServiceUnavailable
}
