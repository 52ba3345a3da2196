package secret

import (
	"cmp"
	"errors"
	"net/url"
	"slices"
	"strings"
)

// MinScrub is the length, in bytes, of the shortest secret a Scrubber
// replaces: a shorter one would garble every message (a token "ab" would
// take every "ab" out of a text) and guards nothing.
const MinScrub = 4

// Scrubber replaces known secrets in a text with Redacted: in error strings,
// in what an upstream, a driver or a webhook answered, in a config file's
// messages. Whoever knows the secrets builds one with NewScrubber; the
// secrets themselves are what is hidden, not text that looks like one.
//
// A nil *Scrubber replaces nothing. A Scrubber is safe for simultaneous
// use by multiple goroutines.
type Scrubber struct {
	r *strings.Replacer // nil: no secret to replace
}

// NewScrubber returns a Scrubber of secrets. Empty secrets and those shorter
// than MinScrub are left out; a secret inside a longer one goes with the
// longer one.
func NewScrubber(secrets ...string) *Scrubber {
	var keep []string
	for _, s := range secrets {
		if len(s) >= MinScrub {
			keep = append(keep, s)
		}
	}
	// strings.Replacer tries its old strings in argument order at each
	// position: longest first, so that a URL goes as a whole before a part.
	slices.SortFunc(keep, func(a, b string) int { return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b)) })
	keep = slices.Compact(keep)
	if len(keep) == 0 {
		return &Scrubber{}
	}
	pairs := make([]string, 0, 2*len(keep))
	for _, s := range keep {
		pairs = append(pairs, s, Redacted)
	}
	return &Scrubber{r: strings.NewReplacer(pairs...)}
}

// Scrub returns text with every secret replaced by Redacted.
func (s *Scrubber) Scrub(text string) string {
	if s == nil || s.r == nil {
		return text
	}
	return s.r.Replace(text)
}

// Error returns err with its text scrubbed. The error it returns keeps
// errors.Is (context.Canceled, sql.ErrConnDone…) but cannot be unwrapped:
// the original error, and whatever secrets its chain holds, cannot be had
// back from it. A Scrubber without secrets returns err as it is, as it does
// a nil err.
func (s *Scrubber) Error(err error) error {
	if err == nil || s == nil || s.r == nil {
		return err
	}
	return &scrubbedError{msg: s.r.Replace(err.Error()), err: err}
}

// scrubbedError is an error whose text went through a Scrubber. It has no
// Unwrap, so neither errors.As nor errors.Unwrap reach the original.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string        { return e.msg }
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.err, target) }

// RedactURL returns u as text with its password, if it has one, as
// Redacted: url.URL.Redacted with keypool's placeholder instead of "xxxxx".
func RedactURL(u *url.URL) string {
	if _, ok := u.User.Password(); !ok {
		return u.String()
	}
	c := *u
	c.User = url.User(u.User.Username())
	s := c.String()
	// The first "@" ends the user info: the user name's own are escaped.
	at := strings.Index(s, "@")
	return s[:at] + ":" + Redacted + s[at:]
}
