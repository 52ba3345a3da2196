package keypool

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// KeyID names a key in logs, metrics, records and admin views. It is "kp_"
// followed by 16 hex digits of a SHA-256 over the key's secret and organization
// and project, so it is stable across restarts and reveals nothing of the secret.
// A pool refuses two different keys with the same ID.
type KeyID string

// Key is one API credential: a secret plus an optional organization and project.
// The secret is held behind a pointer and never formatted: %v, %+v, %#v, %s,
// %q, json.Marshal, slog and error strings all show the key's ID instead, even
// when a Key sits in an unexported field of a struct that is printed.
//
// The zero Key has no secret; build keys with NewKey, ParseKeys or ReadKeys.
// A Key is a small value, safe to copy and to use from many goroutines.
type Key struct {
	s       *secret
	org     string
	project string
	source  string
	id      KeyID
}

// secret boxes the key material so that fmt, reflecting into a Key held in an
// unexported field, sees only a pointer. It must not be a struct, array, slice
// or map: for those fmt prints what the pointer points to under %s and %q.
type secret string

// NewKey returns a key for secret, which is used as given (no trimming).
func NewKey(secretText string) Key {
	sec := secret(secretText)
	k := Key{s: &sec}
	k.id = makeKeyID(secretText, "", "")
	return k
}

// WithOrganization returns a copy of k that sends org as OpenAI-Organization
// (never for service-account keys). The copy has an ID of its own.
func (k Key) WithOrganization(org string) Key {
	k.org = org
	k.id = makeKeyID(k.secret(), k.org, k.project)
	return k
}

// WithProject returns a copy of k that sends project as OpenAI-Project (never
// for service-account keys). The copy has an ID of its own.
func (k Key) WithProject(project string) Key {
	k.project = project
	k.id = makeKeyID(k.secret(), k.org, k.project)
	return k
}

// MaxSourceLen bounds a key's source label, in bytes: a longer label keeps
// its end, where the file name and line are.
const MaxSourceLen = 128

// WithSource returns a copy of k labelled with where it came from, such as
// "keys.txt:12", "OPENAI_KEY[3]" or "config.yaml:8", so that an operator can
// find the key behind an ID. The label is public (snapshots, admin views,
// logs show it), so it is made safe here: a label that holds the key's
// secret is dropped (the copy has no source), characters that are not
// printable become '?', and a label over MaxSourceLen bytes keeps its last
// bytes after "…". The source is not part of the ID; organization clones
// keep it.
func (k Key) WithSource(label string) Key {
	k.source = cleanSource(label, k.secret())
	return k
}

// cleanSource is label made safe to show for a key with secretText; see
// WithSource.
func cleanSource(label, secretText string) string {
	if secretText != "" && strings.Contains(label, secretText) {
		return ""
	}
	label = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, label)
	if len(label) > MaxSourceLen {
		const ellipsis = "…"
		cut := len(label) - (MaxSourceLen - len(ellipsis))
		for cut < len(label) && !utf8.RuneStart(label[cut]) {
			cut++
		}
		label = ellipsis + label[cut:]
	}
	if secretText != "" && strings.Contains(label, secretText) { // a secret with '?' in it, spelled by the mapping
		return ""
	}
	return label
}

func makeKeyID(secretText, org, project string) KeyID {
	h := sha256.New()
	io.WriteString(h, "keypool/v1\x00")
	io.WriteString(h, secretText)
	io.WriteString(h, "\x00")
	io.WriteString(h, org)
	io.WriteString(h, "\x00")
	io.WriteString(h, project)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return KeyID("kp_" + hex.EncodeToString(sum[:8]))
}

// valid reports whether id has the form of a key's ID: "kp_" and 16
// lowercase hex digits.
func (id KeyID) valid() bool {
	if len(id) != len("kp_")+16 || id[:3] != "kp_" {
		return false
	}
	for _, c := range []byte(id[3:]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ID returns the key's public name.
func (k Key) ID() KeyID { return k.id }

// Organization returns the organization the key is sent with ("" for none).
func (k Key) Organization() string { return k.org }

// Project returns the project the key is sent with ("" for none).
func (k Key) Project() string { return k.project }

// Source returns where the key came from, as WithSource set it ("" when not
// known). It never holds the secret.
func (k Key) Source() string { return k.source }

// IsZero reports whether k holds no secret.
func (k Key) IsZero() bool { return k.s == nil || *k.s == "" }

// ServiceAccount reports whether k is a service-account key (sk-svcacct-…),
// which must never be sent an OpenAI-Organization or OpenAI-Project header.
func (k Key) ServiceAccount() bool { return strings.HasPrefix(k.secret(), "sk-svcacct-") }

// secret returns the key material; only the transport's Authorization header
// and the ID hash ever see it.
func (k Key) secret() string {
	if k.s == nil {
		return ""
	}
	return string(*k.s)
}

// String returns the key's ID.
func (k Key) String() string { return string(k.id) }

// GoString returns the key's ID in Go syntax, never the secret.
func (k Key) GoString() string { return fmt.Sprintf("keypool.Key(%q)", string(k.id)) }

// Format prints the key's ID for every verb, so no verb or flag shows the secret.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, k.GoString())
		return
	}
	io.WriteString(f, string(k.id))
}

// MarshalJSON encodes the key as its ID, organization, project and source,
// never the secret.
func (k Key) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ID           KeyID  `json:"id"`
		Organization string `json:"organization,omitempty"`
		Project      string `json:"project,omitempty"`
		Source       string `json:"source,omitempty"`
	}{k.id, k.org, k.project, k.source})
}

// MarshalText encodes the key as its ID, for map keys and text encoders.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.id), nil }

// LogValue makes slog print the key's ID.
func (k Key) LogValue() slog.Value { return slog.StringValue(string(k.id)) }

// ParseKeys splits a comma-separated list of secrets (the OPENAI_KEY
// convention), trimming space around each and dropping empty entries and
// duplicates. An entry with space inside is an error that names its position,
// never its text. The keys have no source: only the caller knows where the
// list came from (see WithSource).
func ParseKeys(list string) ([]Key, error) {
	var keys []Key
	seen := map[string]bool{}
	for i, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" || seen[s] {
			continue
		}
		if strings.IndexFunc(s, isSpace) >= 0 {
			return nil, fmt.Errorf("keypool: key %d has white space inside", i+1)
		}
		seen[s] = true
		keys = append(keys, NewKey(s))
	}
	return keys, nil
}

// maxKeyLine bounds one line of a keys file; API keys are under 200 bytes.
const maxKeyLine = 64 << 10

// ReadKeys reads keys one per line: blank lines and lines starting with # are
// skipped, a # after the key starts a comment, duplicates are dropped. A line
// with two words, a quoted key, a NAME=VALUE line (OPENAI_KEY=sk-…, as in a
// .env file) or too long a line is an error that names the line number. A
// UTF-8 byte order mark at the start is not part of the first key.
//
// Each key's source is its line: "NAME:LINE" when r has a Name method (an
// *os.File names the path it was opened with), else "line LINE".
func ReadKeys(r io.Reader) ([]Key, error) {
	source := func(line int) string { return "line " + strconv.Itoa(line) }
	if named, ok := r.(interface{ Name() string }); ok {
		name := named.Name()
		source = func(line int) string { return name + ":" + strconv.Itoa(line) }
	}
	var keys []Key
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxKeyLine)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if line == 1 {
			text = strings.TrimPrefix(text, "\ufeff") // a byte order mark, as some editors write
		}
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = strings.TrimSpace(text)
		if text == "" || seen[text] {
			continue
		}
		if strings.IndexFunc(text, isSpace) >= 0 || strings.Contains(text, ",") {
			return nil, fmt.Errorf("keypool: keys line %d: one key per line expected", line)
		}
		if why := notAKey(text); why != "" {
			return nil, fmt.Errorf("keypool: keys line %d: %s", line, why)
		}
		seen[text] = true
		keys = append(keys, NewKey(text).WithSource(source(line)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("keypool: keys line %d: %w", line+1, err)
	}
	return keys, nil
}

// notAKey says why text, one word of a keys file, cannot be a key ("" when
// it may be one): a quoted key, or a line copied from a shell or .env file
// (OPENAI_KEY=sk-…). Either would be sent as another key, which the
// upstream refuses as revoked, and would show an ID that matches nothing.
// The reason never quotes text.
func notAKey(text string) string {
	if strings.ContainsAny(text, "\"'`") {
		return "quotes are not part of a key; write the key bare"
	}
	// NAME=VALUE with an environment variable's name. Base64 keys end in
	// '=' padding, never '=' then more.
	name, value, ok := strings.Cut(text, "=")
	if ok && name != "" && value != "" && value[0] != '=' && strings.IndexFunc(name, notEnvNameRune) < 0 && !('0' <= name[0] && name[0] <= '9') {
		return "a NAME=VALUE assignment, not a key; write the key alone"
	}
	return ""
}

// notEnvNameRune reports whether r cannot be in an environment variable's
// name as shells write them in capitals: A-Z, 0-9 and _.
func notEnvNameRune(r rune) bool { return !('A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_') }

func isSpace(r rune) bool { return unicode.IsSpace(r) }
