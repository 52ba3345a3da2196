package records

import (
	"net/url"
	"strings"

	"github.com/keypool/keypool/internal/secret"
)

// RedactAddr returns addr, a store's address, fit to show: every part of a
// DSN that is, or could be, a password is "[redacted]". A URL
// (postgres://user:password@host/db?password=…) and PostgreSQL's key=value
// pairs are read by their structure, as pgx reads them; where addr breaks
// that structure, the rest of it is hidden. A plain file path comes back as
// it is.
func RedactAddr(addr string) string {
	shown, _ := maskDSN(addr)
	return shown
}

// spaces are the characters pgx skips between key=value pairs.
const spaces = " \t\n\r\v\f"

// maskDSN returns dsn as RedactAddr shows it, and what it hid, as written,
// for a Scrubber: a driver's message may quote the DSN.
func maskDSN(dsn string) (shown string, hidden []string) {
	switch {
	case strings.HasPrefix(dsn, "file:") && !strings.Contains(dsn, "@"):
		// SQLite's URI of a file (file:keypool.db?mode=rwc): no password.
		return dsn, nil
	case hasScheme(strings.TrimLeft(dsn, spaces)):
		return maskURL(dsn)
	case strings.Contains(dsn, "="):
		return maskKeyValue(dsn)
	}
	// Neither form, so not a DSN pgx reads; but user:password@host is
	// someone's URL without its scheme.
	if at := strings.LastIndex(dsn, "@"); at > 0 && strings.Contains(dsn[:at], ":") {
		return secret.Redacted + dsn[at:], []string{dsn[:at]}
	}
	return dsn, nil
}

// hasScheme reports whether dsn starts as a URL does, with a scheme and
// "://" (pgx reads a DSN as a URL only then): "://" elsewhere, as in a
// key=value DSN's password='a://b', does not make one.
func hasScheme(dsn string) bool {
	scheme, _, ok := strings.Cut(dsn, "://")
	if !ok || scheme == "" || !isLetter(scheme[0]) {
		return false
	}
	for i := range len(scheme) {
		if c := scheme[i]; !isLetter(c) && !('0' <= c && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// maskURL masks the password of a URL's user info and the values of its
// query's password parameters. It cuts the URL as url.Parse does, but
// hides everything up to the authority's last "@" (pgx ends user info at
// the first one).
func maskURL(dsn string) (string, []string) {
	if _, err := url.Parse(dsn); err != nil {
		return maskBrokenURL(dsn)
	}
	var b strings.Builder
	var hidden []string
	rest, fragment, hasFragment := strings.Cut(dsn, "#")
	rest, query, hasQuery := strings.Cut(rest, "?")
	scheme, rest, _ := strings.Cut(rest, "://")
	b.WriteString(scheme + "://")
	authority, path := rest, ""
	if i := strings.Index(rest, "/"); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		user, password, hasPassword := strings.Cut(authority[:at], ":")
		b.WriteString(user)
		if hasPassword {
			hidden = append(hidden, password)
			b.WriteString(":" + secret.Redacted)
		}
		authority = authority[at:]
	}
	b.WriteString(authority + path)
	if hasQuery {
		b.WriteString("?")
		for i, pair := range strings.Split(query, "&") {
			if i > 0 {
				b.WriteString("&")
			}
			key, value, _ := strings.Cut(pair, "=")
			if name, err := url.QueryUnescape(key); err != nil || passwordKey(name) {
				hidden = append(hidden, value)
				value = secret.Redacted
			}
			b.WriteString(key + "=" + value)
		}
	}
	if hasFragment {
		// Not part of a DSN: a "#" in an unescaped password starts one.
		hidden = append(hidden, fragment)
		b.WriteString("#" + secret.Redacted)
	}
	return b.String(), hidden
}

// maskBrokenURL masks a URL that does not parse, where no part can be
// told for sure: everything up to the last "@" is hidden (user info with a
// stray "/", "?" or "#" in its password), and so is everything from the
// first "?" or "#" after it.
func maskBrokenURL(dsn string) (string, []string) {
	scheme, rest, _ := strings.Cut(dsn, "://")
	var b strings.Builder
	var hidden []string
	b.WriteString(scheme + "://")
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		hidden = append(hidden, pieces(rest[:at])...)
		b.WriteString(secret.Redacted)
		rest = rest[at:]
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		hidden = append(hidden, pieces(rest[i+1:])...)
		rest = rest[:i+1] + secret.Redacted
	}
	b.WriteString(rest)
	return b.String(), hidden
}

// maskKeyValue masks the values of password keys in PostgreSQL's key=value
// pairs, read as pgx reads them; from where the pairs break (a word without
// "=", a quote that is not closed), it hides the rest.
func maskKeyValue(dsn string) (string, []string) {
	var b strings.Builder
	var hidden []string
	s := dsn
	for {
		t := strings.TrimLeft(s, spaces)
		b.WriteString(s[:len(s)-len(t)])
		s = t
		if s == "" {
			return b.String(), hidden
		}
		eq := strings.IndexByte(s, '=')
		key := ""
		if eq >= 0 {
			key = strings.Trim(s[:eq], spaces)
		}
		if eq < 0 || !isKeyword(key) {
			break
		}
		b.WriteString(s[:eq+1])
		s = s[eq+1:]
		t = strings.TrimLeft(s, spaces)
		b.WriteString(s[:len(s)-len(t)])
		s = t
		end, ok := valueEnd(s)
		if !ok {
			break
		}
		value := s[:end]
		s = s[end:]
		// A URL as a value (DATABASE_URL=postgres://u:p@h/db, pasted
		// from an env file) may hold a password of its own.
		if passwordKey(key) || strings.Contains(value, "://") || strings.Contains(value, "@") {
			hidden = append(hidden, value, strings.Trim(value, "'"))
			value = secret.Redacted
		}
		b.WriteString(value)
	}
	b.WriteString(secret.Redacted)
	return b.String(), append(hidden, pieces(s)...)
}

// isKeyword reports whether key is a word a key=value DSN's keys are
// made of (letters, digits and _, not first a digit): anything else, such
// as a quote or a URL's "postgres://…?sslmode", means the DSN is not one
// of pairs, and is hidden from there.
func isKeyword(key string) bool {
	for i := range len(key) {
		if c := key[i]; !isLetter(c) && c != '_' && !(i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return key != ""
}

// pieces returns s, hidden because the DSN broke there, and its words: the
// parser's error may quote one ("missing "=" after …").
func pieces(s string) []string {
	return append([]string{s}, strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(spaces+`='":@/?&#`, r) })...)
}

// valueEnd returns the length of the value s starts with: quoted ('…',
// with \ escapes) or up to the next space; ok is false for a quote that is
// not closed.
func valueEnd(s string) (end int, ok bool) {
	if strings.HasPrefix(s, "'") {
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '\'':
				return i + 1, true
			}
		}
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case strings.IndexByte(spaces, s[i]) >= 0:
			return i, true
		}
	}
	return len(s), true
}

// passwordKey reports whether a DSN's key names a password (password,
// sslpassword).
func passwordKey(key string) bool { return strings.Contains(strings.ToLower(key), "password") }
