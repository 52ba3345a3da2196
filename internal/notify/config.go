package notify

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
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
// A Config holds secrets; its String, GoString and Format methods (and those
// of Matrix, Feishu and Webhook) show none of them, so a Config may be
// printed or logged.
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
	Token string
}

// Feishu posts messages to a Feishu (Lark) custom bot. Both fields are
// secrets: the webhook URL holds the bot's token.
type Feishu struct {
	// Webhook is the bot's URL
	// ("https://open.feishu.cn/open-apis/bot/v2/hook/…").
	Webhook string
	// Secret, if set, signs each message (the bot's "signature
	// verification" setting).
	Secret string
}

// Webhook posts each event as JSON to a URL of your own. The URL and the
// header values are secrets; the header names are not.
type Webhook struct {
	URL     string
	Headers map[string]string // sent with each post, such as Authorization
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
		case m.Token == "":
			return &ConfigError{"matrix token", "is empty"}
		case !validHeaderValue(m.Token):
			return &ConfigError{"matrix token", "holds control characters"}
		}
	}
	if f := c.Feishu; f != nil {
		if _, err := checkURL("feishu webhook", f.Webhook); err != nil {
			return err
		}
	}
	if w := c.Webhook; w != nil {
		if _, err := checkURL("webhook url", w.URL); err != nil {
			return err
		}
		for _, name := range slices.Sorted(mapKeys(w.Headers)) {
			if !ValidHeaderName(name) {
				return &ConfigError{"webhook header " + strconv.Quote(clip(name, 64)), "is not a valid header name"}
			}
			if !validHeaderValue(w.Headers[name]) {
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

// redacted stands for a secret in printed values.
const redacted = "[redacted]"

// showSecret is how a secret prints: whether it is set, never what it is.
func showSecret(s string) string {
	if s == "" {
		return `""`
	}
	return redacted
}

// showSecretURL prints a URL that holds a secret as scheme://host/….
func showSecretURL(raw string) string {
	if raw == "" {
		return `""`
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return redacted
	}
	return u.Scheme + "://" + u.Host + "/…"
}

// showPublicURL prints a URL that is not a secret, minus the parts that may
// be (user info, query, fragment).
func showPublicURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return redacted
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
		return u.String() + " " + redacted
	}
	return u.String()
}

// format writes s, or for %#v gos, whatever the verb and flags: a type
// holding secrets prints one redacted form only.
func format(f fmt.State, verb rune, s, gos string) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, gos)
		return
	}
	io.WriteString(f, s)
}

func (m Matrix) fields(quote func(string) string) []string {
	return []string{"Homeserver:" + quote(showPublicURL(m.Homeserver)), "Room:" + quote(m.Room),
		"Token:" + quote(showSecret(m.Token))}
}

// String shows the homeserver and room, never the token.
func (m Matrix) String() string { return "Matrix{" + strings.Join(m.fields(plain), " ") + "}" }

// GoString is String in Go syntax.
func (m Matrix) GoString() string {
	return "notify.Matrix{" + strings.Join(m.fields(strconv.Quote), ", ") + "}"
}

// Format prints m as String does (GoString for %#v), whatever the verb.
func (m Matrix) Format(f fmt.State, verb rune) { format(f, verb, m.String(), m.GoString()) }

// LogValue logs m as String does.
func (m Matrix) LogValue() slog.Value { return slog.StringValue(m.String()) }

// MarshalJSON encodes m as String does, so that no secret is encoded.
func (m Matrix) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

func (f Feishu) fields(quote func(string) string) []string {
	return []string{"Webhook:" + quote(showSecretURL(f.Webhook)), "Secret:" + quote(showSecret(f.Secret))}
}

// String shows the webhook's scheme and host only, and never the secret.
func (f Feishu) String() string { return "Feishu{" + strings.Join(f.fields(plain), " ") + "}" }

// GoString is String in Go syntax.
func (f Feishu) GoString() string {
	return "notify.Feishu{" + strings.Join(f.fields(strconv.Quote), ", ") + "}"
}

// Format prints f as String does (GoString for %#v), whatever the verb.
func (f Feishu) Format(s fmt.State, verb rune) { format(s, verb, f.String(), f.GoString()) }

// LogValue logs f as String does.
func (f Feishu) LogValue() slog.Value { return slog.StringValue(f.String()) }

// MarshalJSON encodes f as String does, so that no secret is encoded.
func (f Feishu) MarshalJSON() ([]byte, error) { return json.Marshal(f.String()) }

func (w Webhook) fields(quote func(string) string) []string {
	headers := "nil"
	if w.Headers != nil {
		var hs []string
		for _, name := range slices.Sorted(mapKeys(w.Headers)) {
			hs = append(hs, quote(name)+":"+quote(showSecret(w.Headers[name])))
		}
		headers = "[" + strings.Join(hs, " ") + "]"
	}
	return []string{"URL:" + quote(showSecretURL(w.URL)), "Headers:" + headers}
}

// String shows the URL's scheme and host and the header names only.
func (w Webhook) String() string { return "Webhook{" + strings.Join(w.fields(plain), " ") + "}" }

// GoString is String in Go syntax (header values redacted).
func (w Webhook) GoString() string {
	return "notify.Webhook{" + strings.Join(w.fields(strconv.Quote), ", ") + "}"
}

// Format prints w as String does (GoString for %#v), whatever the verb.
func (w Webhook) Format(f fmt.State, verb rune) { format(f, verb, w.String(), w.GoString()) }

// LogValue logs w as String does.
func (w Webhook) LogValue() slog.Value { return slog.StringValue(w.String()) }

// MarshalJSON encodes w as String does, so that no secret is encoded.
func (w Webhook) MarshalJSON() ([]byte, error) { return json.Marshal(w.String()) }

func plain(s string) string { return s }

func (c Config) fields(goSyntax bool) string {
	var m, f, w = "nil", "nil", "nil"
	switch {
	case c.Matrix == nil:
	case goSyntax:
		m = "&" + c.Matrix.GoString()
	default:
		m = c.Matrix.String()
	}
	switch {
	case c.Feishu == nil:
	case goSyntax:
		f = "&" + c.Feishu.GoString()
	default:
		f = c.Feishu.String()
	}
	switch {
	case c.Webhook == nil:
	case goSyntax:
		w = "&" + c.Webhook.GoString()
	default:
		w = c.Webhook.String()
	}
	isSet := func(set bool) string {
		if set {
			return "set"
		}
		return "nil"
	}
	return fmt.Sprintf("Matrix:%s Feishu:%s Webhook:%s Dedup:%v Burst:%d Every:%v "+
		"FailureThreshold:%d FailureWindow:%v Timeout:%v QueueSize:%d DrainTimeout:%v "+
		"Client:%s Logger:%s Now:%s",
		m, f, w, c.Dedup, c.Burst, c.Every, c.FailureThreshold, c.FailureWindow, c.Timeout,
		c.QueueSize, c.DrainTimeout, isSet(c.Client != nil), isSet(c.Logger != nil), isSet(c.Now != nil))
}

// String shows the settings, with the notifiers as their String methods
// show them: no secret.
func (c Config) String() string { return "Config{" + c.fields(false) + "}" }

// GoString is like String, in Go syntax where it can be.
func (c Config) GoString() string { return "notify.Config{" + c.fields(true) + "}" }

// Format prints c as String does (GoString for %#v), whatever the verb.
func (c Config) Format(f fmt.State, verb rune) { format(f, verb, c.String(), c.GoString()) }

// LogValue logs c as String does.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }
