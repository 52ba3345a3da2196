package notify

import (
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/internal/secret"
)

// Defaults of a Config's zero fields.
const (
	DefaultDedup            = 10 * time.Minute
	DefaultBurst            = 10
	DefaultEvery            = time.Minute
	DefaultFailureThreshold = 5
	DefaultFailureWindow    = time.Minute
	DefaultTimeout          = 10 * time.Second
	DefaultQueueSize        = 256
	DefaultDrainTimeout     = 5 * time.Second
)

// Config says where notifications go and how often. At least one of Matrix,
// Feishu and Webhook must be set. Every zero field means its default.
//
// A Config holds secrets, as secret.String values: printed or logged, each
// shows as "[redacted]", so a Config may be printed or logged whole.
type Config struct {
	Matrix  *Matrix  // nil: no Matrix messages
	Feishu  *Feishu  // nil: no Feishu messages
	Webhook *Webhook // nil: no webhook posts

	// Dedup is how long an event with the same (kind, upstream, key) is not
	// sent again; 0 means DefaultDedup.
	Dedup time.Duration
	// Burst and Every rate-limit all messages together: a token bucket of
	// Burst (0: DefaultBurst) refilled one token per Every (0: DefaultEvery).
	// Events beyond it are counted and the next message sent says how many.
	Burst int
	Every time.Duration
	// An upstream is failing when it has FailureThreshold (0:
	// DefaultFailureThreshold) attempts with keypool.OutcomeServerError
	// within FailureWindow (0: DefaultFailureWindow).
	FailureThreshold int
	FailureWindow    time.Duration
	// Timeout bounds each send to each notifier; 0 means DefaultTimeout.
	Timeout time.Duration
	// QueueSize bounds the messages waiting for Run; when it is full, further
	// messages are dropped and counted. 0 means DefaultQueueSize.
	QueueSize int
	// DrainTimeout bounds the time Run keeps delivering queued messages after
	// its context ends; 0 means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Client sends the messages; nil means a client with Timeout. Redirects
	// are not followed (a redirect is a failed send) unless Client has a
	// CheckRedirect of its own.
	Client *http.Client
	// Logger gets a Warn record for each failed send; nil means silent.
	Logger *slog.Logger
	// Now is the clock for deduplication, rate limits and failure windows;
	// nil means time.Now.
	Now func() time.Time
}

// Matrix posts messages to a room through the Matrix client-server API.
// Token is a secret; Homeserver and Room are not.
type Matrix struct {
	// Homeserver is the client-server API's base URL, such as
	// "https://matrix.example.org"; a path prefix is kept.
	Homeserver string
	// Room is the room ID ("!abc:example.org"), not an alias.
	Room string
	// Token is the access token of the account that posts.
	Token secret.String
}

// Feishu posts messages to a Feishu (Lark) custom bot. Both fields are
// secrets: the webhook URL holds the bot's token.
type Feishu struct {
	// Webhook is the bot's URL
	// ("https://open.feishu.cn/open-apis/bot/v2/hook/…").
	Webhook secret.String
	// Secret, if set, signs each message (the bot's "signature
	// verification" setting).
	Secret secret.String
}

// Webhook posts each event as JSON to a URL of your own. The URL and the
// header values are secrets; the header names are not.
type Webhook struct {
	URL     secret.String
	Headers map[string]secret.String // sent with each post, such as Authorization
}

// ConfigError is an invalid Config. It names the field and the problem and
// never holds the field's value.
type ConfigError struct {
	Field   string // such as "feishu webhook"
	Problem string
}

func (e *ConfigError) Error() string { return "notify: " + e.Field + ": " + e.Problem }

// Bounds of the settings that size memory: a failure window keeps the time
// of each of FailureThreshold attempts, and the queue QueueSize messages.
const (
	maxFailureThreshold = 10000
	maxQueueSize        = 1 << 20
)

func (c Config) validate() error {
	if c.Matrix == nil && c.Feishu == nil && c.Webhook == nil {
		return &ConfigError{"config", "no notifier configured (matrix, feishu or webhook)"}
	}
	if m := c.Matrix; m != nil {
		u, err := checkURL("matrix homeserver", m.Homeserver)
		if err != nil {
			return err
		}
		if u.User != nil {
			return &ConfigError{"matrix homeserver", "must not hold user info"}
		}
		if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			return &ConfigError{"matrix homeserver", "must not have a query or fragment"}
		}
		switch {
		case m.Room == "":
			return &ConfigError{"matrix room", "is empty"}
		case !strings.HasPrefix(m.Room, "!"):
			return &ConfigError{"matrix room", "must be a room ID (!…), not an alias"}
		case m.Token.IsZero():
			return &ConfigError{"matrix token", "is empty"}
		case !validHeaderValue(m.Token.Reveal()):
			return &ConfigError{"matrix token", "holds control characters"}
		}
	}
	if f := c.Feishu; f != nil {
		if _, err := checkURL("feishu webhook", f.Webhook.Reveal()); err != nil {
			return err
		}
	}
	if w := c.Webhook; w != nil {
		if _, err := checkURL("webhook url", w.URL.Reveal()); err != nil {
			return err
		}
		for _, name := range slices.Sorted(mapKeys(w.Headers)) {
			if !ValidHeaderName(name) {
				return &ConfigError{"webhook header " + strconv.Quote(clip(name, 64)), "is not a valid header name"}
			}
			if !validHeaderValue(w.Headers[name].Reveal()) {
				return &ConfigError{"webhook header " + name, "value holds control characters"}
			}
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dedup", c.Dedup}, {"every", c.Every}, {"failure window", c.FailureWindow},
		{"timeout", c.Timeout}, {"drain timeout", c.DrainTimeout}} {
		if d.v < 0 {
			return &ConfigError{d.name, "is negative"}
		}
	}
	for _, i := range []struct {
		name string
		v    int
		max  int // beyond it, memory the value asks for is unreasonable
	}{{"burst", c.Burst, 1 << 20}, {"failure threshold", c.FailureThreshold, maxFailureThreshold}, {"queue size", c.QueueSize, maxQueueSize}} {
		switch {
		case i.v < 0:
			return &ConfigError{i.name, "is negative"}
		case i.v > i.max:
			return &ConfigError{i.name, "is over " + strconv.Itoa(i.max)}
		}
	}
	return nil
}

// checkURL parses an http or https URL. Its errors do not quote raw: it may
// be a secret, and url.Parse's errors hold it.
func checkURL(field, raw string) (*url.URL, error) {
	if raw == "" {
		return nil, &ConfigError{field, "is empty"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, &ConfigError{field, "is not a valid URL"}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, &ConfigError{field, "must be an http or https URL"}
	}
	if u.Host == "" {
		return nil, &ConfigError{field, "has no host"}
	}
	return u, nil
}

// ValidHeaderName reports whether s is an HTTP header name: a token of
// RFC 9110.
func ValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f })
}

func mapKeys[M ~map[K]V, K comparable, V any](m M) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
