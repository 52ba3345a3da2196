package config

import (
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
)

// Secret is a client token or the admin token from a config file. It prints
// as "[redacted]" under every fmt verb, in JSON, YAML and slog, so a Config
// can be printed or logged whole without giving a token away. string(s) is
// the token itself; compare a presented token with Equal.
type Secret string

const redacted = "[redacted]"

// Format prints "[redacted]" whatever the verb.
func (s Secret) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// MarshalText encodes the secret as "[redacted]".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue makes slog print "[redacted]".
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// Equal reports whether token is s, in time that does not depend on where
// they differ.
func (s Secret) Equal(token string) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(token)) == 1
}
