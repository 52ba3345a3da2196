package config

import (
	"net/url"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/keypool/keypool/internal/secret"
)

// storeURL is the Redis of store: a secret (its password), trimmed; a bad
// one is reported without its value.
type storeURL secret.String

func (u *storeURL) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, true)
	if s = strings.TrimSpace(s); err != nil || s == "" {
		return err
	}
	if why := checkStoreURL(s); why != "" {
		return problemf(n, " %s", why)
	}
	*u = storeURL(secretOf(s))
	return nil
}

// ParseStoreURL checks s, the Redis URL of --store, as the config's store
// is checked, and returns it as a secret. Its error never holds s.
func ParseStoreURL(s string) (secret.String, error) {
	s = strings.TrimSpace(s)
	if why := checkStoreURL(s); why != "" {
		return secret.String{}, &StoreURLError{why}
	}
	return secretOf(s), nil
}

// A StoreURLError is a store URL that is not a Redis URL keypool takes. It
// says what is wrong without quoting the URL, which may hold a password.
type StoreURLError struct{ Why string }

func (e *StoreURLError) Error() string { return "config: store " + e.Why }

// checkStoreURL says what is wrong with s as a store URL, or "" when
// nothing is: redis:// or rediss://, a host, an optional port, and an
// optional database number as the path.
func checkStoreURL(s string) string {
	const want = "must be a Redis URL, redis://[:PASSWORD@]HOST:PORT/DB or rediss://…"
	u, err := url.Parse(s)
	if err != nil {
		return want + "; it does not parse"
	}
	switch {
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return want + "; its scheme is not redis or rediss"
	case u.Hostname() == "":
		return want + "; it has no host"
	case u.Opaque != "" || u.RawQuery != "" || u.Fragment != "":
		return want + "; keypool takes no options in it"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return want + "; its port is not a number from 1 to 65535"
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return want + "; its path is not a database number"
		}
	}
	return ""
}
