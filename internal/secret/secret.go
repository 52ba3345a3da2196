// Package secret holds keypool's one secret type and its one scrubber, so
// that a client token, an admin token, a DSN password or a webhook URL never
// reaches a log line, an error string, a stored record or %v output, and
// every secret that is hidden looks the same: "[redacted]".
//
// The upstream API keys are the root package's keypool.Key, which shows
// its ID (kp_…) instead; the root package imports only the standard library.
package secret

import (
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// Redacted is what a secret shows instead of itself.
const Redacted = "[redacted]"

// String is a secret text: a token, a password, a URL that holds a token.
// It prints as Redacted under every fmt verb and flag, in JSON, YAML (which
// uses MarshalText) and slog, also when it sits in an unexported field of
// a struct that is printed: the text is held behind a pointer that fmt
// shows as an address. The zero String is empty and prints as "".
//
// Reveal returns the text, for the one place that must send or use it;
// compare a presented token with Equal. A String is not comparable with ==
// (two Strings with the same text are different values); use Equal or
// Reveal. It is safe to copy and to use from many goroutines.
type String struct {
	_ [0]func() // no ==: it would compare the pointers, not the texts
	p *text
}

// text is the pointer's target. It must not be a struct, array, slice or
// map: for those, fmt prints what the pointer points to (under a bad verb
// it prints the pointer at depth 0).
type text string

// New returns s as a secret.
func New(s string) String {
	if s == "" {
		return String{}
	}
	t := text(s)
	return String{p: &t}
}

// Reveal returns the secret text. Call it only where the text is sent or
// used (an Authorization header, a DSN handed to the driver, a hash), never
// to print it.
func (s String) Reveal() string {
	if s.p == nil {
		return ""
	}
	return string(*s.p)
}

// IsZero reports whether s is empty.
func (s String) IsZero() bool { return s.p == nil || *s.p == "" }

// Equal reports whether token is s, in time that does not depend on where
// they differ.
func (s String) Equal(token string) bool {
	return subtle.ConstantTimeCompare([]byte(s.Reveal()), []byte(token)) == 1
}

// String returns Redacted, or "" when s is empty.
func (s String) String() string {
	if s.IsZero() {
		return ""
	}
	return Redacted
}

// GoString returns s in Go syntax, redacted: secret.String("[redacted]").
func (s String) GoString() string { return "secret.String(" + strconv.Quote(s.String()) + ")" }

// Format prints s as String does (quoted for %q, GoString for %#v), whatever
// the verb and flags.
func (s String) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		io.WriteString(f, s.GoString())
	case verb == 'q':
		io.WriteString(f, strconv.Quote(s.String()))
	default:
		io.WriteString(f, s.String())
	}
}

// LogValue makes slog log s as String does.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText encodes s as String does; encoding/json and yaml.v3 use it.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText sets s to text, so that encoding/json and yaml.v3 can
// decode a secret. It is not the inverse of MarshalText: what was encoded
// is Redacted, never the secret.
func (s *String) UnmarshalText(text []byte) error {
	*s = New(string(text))
	return nil
}
