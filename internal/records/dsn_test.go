package records

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/secret"
)

func TestRedactAddr(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"./db.sqlite", "./db.sqlite"},
		{":memory:", ":memory:"},
		{"file:keypool.db?mode=rwc&_pragma=busy_timeout(5000)", "file:keypool.db?mode=rwc&_pragma=busy_timeout(5000)"},
		{"/srv/me@work/db.sqlite", "/srv/me@work/db.sqlite"},
		{"postgres://kp:s3cret@db:5432/kp?sslmode=disable", "postgres://kp:[redacted]@db:5432/kp?sslmode=disable"},
		{"postgres://kp@db/kp?password=s3cret&application_name=me@example.com", "postgres://kp@db/kp?password=[redacted]&application_name=me@example.com"},
		{"postgres://kp@db/kp?pass%77ord=s3cret", "postgres://kp@db/kp?pass%77ord=[redacted]"},
		{"postgresql://u:a:b@c@h/db?sslpassword=k3y", "postgresql://u:[redacted]@h/db?sslpassword=[redacted]"},
		{"postgres://u:12#34@h/db", "postgres://u:12#[redacted]"},
		{"host=db user=kp password=s3cret dbname=kp", "host=db user=kp password=[redacted] dbname=kp"},
		{`host=db password='it\'s here' sslpassword = k3y`, `host=db password=[redacted] sslpassword = [redacted]`},
		{"mysql://kp:s3cret@db/kp", "mysql://kp:[redacted]@db/kp"},
		// Broken: from where the structure breaks, nothing is shown.
		{"postgres://u:s3cret@[bad/db?password=s3cret", "postgres://[redacted]@[bad/db?[redacted]"},
		{"postgres://u:s3c/ret@h1:5432,h2:5433/db", "postgres://[redacted]@h1:5432,h2:5433/db"},
		{"postgres://u:s3c?ret@h/db", "postgres://[redacted]@h/db"},
		{"host=db password=s3c ret port=5432", "host=db password=[redacted] [redacted]"},
		{"host=db user=kp s3cret port=5432", "host=db user=kp [redacted]"},
		{"host=db password='s3cret port=5432", "host=db password=[redacted]"},
		{"user:s3cret@db/kp", "[redacted]@db/kp"},
		// A URL not at the start, or not as pgx reads one, shows nothing
		// of its user info.
		{"host=db password='a://b' dbname=kp", "host=db password=[redacted] dbname=kp"},
		{"DATABASE_URL=postgres://u:hunter2@db/keypool", "DATABASE_URL=[redacted]"},
		{" postgres://u:hunter2@db/keypool?sslmode=require", " postgres://[redacted]@db/keypool?[redacted]"},
		{`"postgres://u:hunter2@db/keypool?sslmode=require"`, "[redacted]"},
		{"jdbc:postgresql://db/keypool?user=u&password=hunter2", "[redacted]"},
	} {
		if got := RedactAddr(tt.in); got != tt.want {
			t.Errorf("RedactAddr(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestMaskDSN: what RedactAddr hides it hands to the scrubber as written,
// so that a driver's message that quotes the DSN loses it too.
func TestMaskDSN(t *testing.T) {
	for _, tt := range []struct {
		dsn  string
		want []string
	}{
		{"postgres://u:p%40ss@h/db", []string{"p%40ss"}},
		{"postgresql://u:a:b@c@h/db?sslpassword=k", []string{"a:b@c", "k"}},
		{"postgres://u@h/db?password=q", []string{"q"}},
		{"host=h password=plain user=u", []string{"plain"}},
		{`host=h password='it\'s here' sslpassword=k2`, []string{`'it\'s here'`, `it\'s here`, "k2"}},
		{"host=h password=a b", []string{"b"}},
		{"host=h pw1234 port=5", []string{"pw1234 port=5", "pw1234", "port", "5"}},
		{"host=h user=u", nil},
	} {
		shown, hidden := maskDSN(tt.dsn)
		for _, w := range tt.want {
			if !slices.Contains(hidden, w) {
				t.Errorf("maskDSN(%q) hid %q, missing %q", tt.dsn, hidden, w)
			}
		}
		if got := secret.NewScrubber(hidden...).Scrub(tt.dsn); strings.Contains(got, "plain") || strings.Contains(got, "here") {
			t.Errorf("scrubbed %q to %q (shown %q)", tt.dsn, got, shown)
		}
	}
}

// FuzzRedactAddr puts a fuzzed password where DSNs hold one, written as
// each form wants it (escaped, quoted), and checks that RedactAddr never
// shows it. Written raw, a password may make another valid DSN (an "&" in
// a query value starts a parameter), so then RedactAddr must only not fail.
func FuzzRedactAddr(f *testing.F) {
	for _, pw := range []string{"s3cret", "p@ss/w?rd#1", `it's here\`, "a b c d", "x'y z", "%zz%41", "::@@//", "&0000000"} {
		f.Add(pw)
	}
	kvQuote := strings.NewReplacer(`\`, `\\`, "'", `\'`)
	f.Fuzz(func(t *testing.T, pw string) {
		for _, dsn := range []string{"postgres://kp:" + pw + "@db.example/kp?x=" + pw, "host=h password=" + pw + " x=" + pw} {
			RedactAddr(dsn)
		}
		for _, tt := range []struct{ dsn, written string }{
			{"postgres://" + url.UserPassword("kp", pw).String() + "@db.example:5432/kp?sslmode=disable", url.UserPassword("", pw).String()[1:]},
			{"postgres://kp@db.example/kp?password=" + url.QueryEscape(pw) + "&application_name=keypool", url.QueryEscape(pw)},
			{"host=db.example user=kp password='" + kvQuote.Replace(pw) + "' dbname=kp", kvQuote.Replace(pw)},
		} {
			shown := RedactAddr(tt.dsn)
			for _, s := range []string{pw, tt.written} {
				// A short password, or one the DSN's own text holds,
				// cannot be told from that text.
				if len(s) < 6 || strings.Contains(strings.Replace(tt.dsn, tt.written, "", 1)+secret.Redacted, s) {
					continue
				}
				if strings.Contains(shown, s) {
					t.Fatalf("RedactAddr(%q) = %q shows the password", tt.dsn, shown)
				}
			}
		}
	})
}
