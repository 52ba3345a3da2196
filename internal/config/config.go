// Package config reads keypool's config file, a superset of
// openai-api-route's config.yaml: an unchanged openai-api-route file loads as
// it is, so its users can point keypool at the file they have.
//
// The file, with every field (all optional but upstreams' endpoint and keys):
//
//	authorization: "tok1,tok2"  # client tokens, comma-separated (or a list)
//	lb_policy: order            # or random: shuffle the upstreams per request
//	cors: true                  # CORS headers for browsers (never without client tokens)
//	timeout: 120                # seconds, or a Go duration such as "2m"
//	stream_timeout: 10
//	retry_time: 6m              # no new attempt after this; default: the sum of the 4 longest timeouts
//	idle_timeout: 2m            # an answer silent this long once started is cut off (off: never)
//	body_idle_timeout: 30s      # a client silent this long while sending its body gets a 408
//	body_memory: 256MiB         # request bodies held at once for failover; beyond, 503
//	max_connections: 4096       # open client connections
//	dbtype: sqlite              # request records: sqlite (the default), postgres or none
//	dbaddr: ./db.sqlite         # the SQLite file, or PostgreSQL's DSN
//	records: {bodies: false, body_limit: 64KiB, queue: 10000, batch: 256, keep: 0}
//	notify:                     # see Notify
//	  feishu: {webhook: "https://open.feishu.cn/open-apis/bot/v2/hook/…"}
//	listen: 127.0.0.1:8080      # openai-api-route's "address" works too
//	admin_token: "…"
//	keys_file: keys.txt         # keys for the official API, in a file without upstreams
//	checker:
//	  rate: 5                   # key checks per second
//	  concurrency: 4
//	  recheck: 1h               # 0 or off: never
//	  wait_for_check: false     # true: keys take no request before their first check
//	upstreams:                  # tried in this order
//	  - sk: "sk-a,sk-b"         # one key, or several comma-separated; asis: the client's own
//	                            # key goes on; no sk, keys or keys_file: no key at all
//	    keys: ["sk-c", "sk-d"]  # a list of keys
//	    keys_file: more.txt     # one key per line, # comments; relative to the config's directory
//	    endpoint: https://api.openai.com/v1   # the default
//	    name: main
//	    timeout: 30
//	    stream_timeout: 10
//	    idle_timeout: 5m
//	    allow: ["gpt-4*"]       # model names or globs; URL paths for requests without a model
//	    deny: ["o1*"]
//	    authorization: "tok1"   # the only client tokens that may use this upstream
//	    inherit_authorization: false  # true: the top-level tokens may use it too
//	    noauth: false           # true: anyone may use this upstream
//	    type: openai            # openai, azure or replicate (Replicate's chat models, in OpenAI's shape)
//	    deployments: {gpt-4o: my-gpt4o}  # azure: model → deployment (default: the model's name)
//	    api_version: 2024-10-21 # azure: the api-version of its requests
//
// Every scalar value may refer to environment variables as $NAME or ${NAME}
// ($$ is a literal $); one that is not set is an error, in the sections a
// command reads (LoadSections: keypool records reads only the database
// settings, keypool check only the upstreams). A missing variable in
// a secret field (sk, keys, authorization, admin_token) is named only when
// written as ${NAME}, since a bare $ there may be part of the secret.
//
// Errors name the file and line ("config.yaml:12: unknown field "endpiont" in
// upstream 2"), and never contain a secret: not a key, a token, nor any value
// the file holds in a secret field.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// DefaultEndpoint is the upstream of a config that gives keys (a top-level
// keys_file) but no upstreams.
const DefaultEndpoint = "https://api.openai.com/v1"

// DefaultReplicateEndpoint is the endpoint of a replicate upstream that
// names none, as openai-api-route's do.
const DefaultReplicateEndpoint = "https://api.replicate.com/v1"

// Config is a parsed config file. Load or Parse fill it and check every field,
// so a Config they return is valid; Upstreams turns its upstreams into the
// library's type, and internal/app the rest into running parts. Zero fields
// mean "not given": the server or the library picks its default.
//
// Printing a Config shows no secret: keys print as their IDs and tokens as
// "[redacted]".
type Config struct {
	// Listen is the address the proxy listens on: listen, or
	// openai-api-route's address.
	Listen string
	// Authorization lists the client tokens (authorization), trimmed, without
	// empty entries or duplicates.
	Authorization []secret.String
	// AdminToken guards the admin API (admin_token).
	AdminToken secret.String
	// Timeout and StreamTimeout are the defaults of every upstream that sets
	// none of its own; 0 means the library's (keypool.DefaultTimeout and
	// keypool.DefaultStreamTimeout).
	Timeout, StreamTimeout time.Duration
	// RetryTime is how long after its start a request may still begin a
	// new attempt (retry_time); 0 means time for a failover across the
	// upstreams: the sum of the four longest upstream timeouts (a request's
	// attempts), at least keypool.DefaultRetryTime.
	RetryTime time.Duration
	// IdleTimeout cuts off an upstream answer that sends nothing for this
	// long once started (idle_timeout), for every upstream that sets none;
	// 0 means keypool.DefaultIdleTimeout, Off no limit.
	IdleTimeout time.Duration
	// BodyIdleTimeout is how long a client may pause while it sends its
	// request body (body_idle_timeout); 0 means the server's default
	// (30s), Off no limit.
	BodyIdleTimeout time.Duration
	// BodyMemory bounds the request bodies held in memory at once for
	// failover (body_memory); 0 means the server's default (256 MiB).
	BodyMemory int64
	// MaxConnections bounds the open client connections (max_connections);
	// 0 means the server's default (4096).
	MaxConnections int
	// DBType is "sqlite", "postgres", "none" or "" (not given); DBAddr is the
	// SQLite file or the PostgreSQL DSN (a secret: a DSN may hold a
	// password). Request records use them.
	DBType string
	DBAddr secret.String
	// Store is the Redis that replicas share key states through (store:
	// redis://[:PASSWORD@]HOST:PORT/DB, or rediss://); zero: none, and the
	// records database keeps them. A secret: the URL may hold a password.
	Store secret.String
	// Records and Notify are the records and notify sections.
	Records Records
	Notify  Notify
	// MaxBody bounds a client's request body in bytes (max_body: a number,
	// or a size such as 64MiB); 0 means the proxy's default, 32 MiB.
	MaxBody int64
	// KeysFile is the top-level keys_file, resolved against the config's
	// directory. It is allowed only without upstreams, and then makes
	// Upstream one entry at DefaultEndpoint with this file.
	KeysFile string
	// Checker holds the key checker's settings (checker).
	Checker Checker
	// Upstream lists the upstreams in failover order (upstreams). Upstreams
	// converts them, in the same order.
	Upstream []Upstream
	// LBPolicy is "order" or "random" (lb_policy; "" means order): the
	// order in which a request tries the upstreams.
	LBPolicy string
	// NoCORS turns off the CORS headers the proxy sends browsers (cors:
	// false).
	NoCORS bool
	// LogLevel is "debug", "info", "warn", "error" or "" (log_level; ""
	// means info), and LogFormat "text", "json" or "" (log_format; ""
	// means text): what serve logs and how. serve's --log-level and
	// --log-format win over them.
	LogLevel, LogFormat string
	// AccessLog logs one line per proxied request (access_log: true);
	// serve's --access-log turns it on too.
	AccessLog bool
	// Warnings are "file:line: message" notes on what the file says that
	// keypool does not act on (openai-api-route's hostname, keep_header).
	// They never hold a secret.
	Warnings []string

	name string // the file's name in messages
}

// Checker is the checker section: how keys are checked. Zero fields mean the
// library's defaults.
type Checker struct {
	// Rate is the number of key checks per second.
	Rate float64
	// Concurrency bounds the checks in flight.
	Concurrency int
	// Recheck is the time between rechecks of every key; NoRecheck is set
	// when the file says 0 or off.
	Recheck   time.Duration
	NoRecheck bool
	// WaitForCheck keeps keys from taking requests before their first check.
	WaitForCheck bool
}

// Upstream is one entry of upstreams.
type Upstream struct {
	// Name shows the upstream in logs and metrics; "" means the endpoint's host.
	Name string
	// Type is "openai" (the default; "" is read as "openai"), "azure" or
	// "replicate".
	Type string
	// Deployments maps a model to its Azure deployment (type azure only);
	// a model it does not name is its own deployment's name.
	Deployments map[string]string
	// APIVersion is the api-version of an Azure upstream's requests; ""
	// means keypool.DefaultAzureAPIVersion.
	APIVersion string
	// Endpoint is the API root, such as "https://api.openai.com/v1"; a
	// replicate upstream's default is DefaultReplicateEndpoint.
	Endpoint string
	// Keys are the keys of sk and keys, without duplicates, each with its
	// source (the file's line: "config.yaml:8"). Keys print as their IDs.
	Keys []keypool.Key
	// Auth is keypool.AuthKeys for an upstream with keys,
	// keypool.AuthCaller for "sk: asis" (each client's own Authorization
	// goes upstream), and keypool.AuthNone for one without any key (its
	// requests carry no Authorization).
	Auth keypool.UpstreamAuth
	// KeysFile is a file of more keys, resolved against the config's
	// directory; Upstreams reads it.
	KeysFile string
	// Timeout, StreamTimeout and IdleTimeout override the config's; 0
	// means not given, Off (idle only) no limit.
	Timeout, StreamTimeout, IdleTimeout time.Duration
	// Allow and Deny are the model names or globs this upstream serves, or
	// never serves.
	Allow, Deny []string
	// Authorization lists the client tokens that may use this upstream,
	// and only those (openai-api-route's rule); empty means the top-level
	// tokens may.
	Authorization []secret.String
	// InheritAuthorization lets the top-level tokens use this upstream
	// besides its own (inherit_authorization), a keypool extension.
	InheritAuthorization bool
	// NoAuth opens this upstream to clients without a token.
	NoAuth bool
	// Line is the line of the entry in the file.
	Line int

	label        string // "upstream 2", or "keys_file" for the implicit one
	keysFileLine int
}

// Error is a problem at a line of a config file. Its text is
// "file:line: message" (just "file: message" when Line is 0) and never holds
// a secret. Load and Parse report several problems at once, joined with
// errors.Join; errors.As finds the first.
type Error struct {
	File string
	Line int
	Msg  string
	Err  error // the underlying error, if any (a keys file that cannot be read)
}

func (e *Error) Error() string {
	s := e.File
	if e.Line > 0 {
		s += ":" + strconv.Itoa(e.Line)
	}
	s += ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Load reads and parses the config file at path. Relative keys_file paths are
// taken from path's directory.
func Load(path string) (*Config, error) {
	return LoadSections(path, AllSections)
}

// Upstreams converts the upstreams to the library's type, in order, reading
// every keys_file. An upstream's own timeouts win over the config's. It
// fails, naming the line, when a keys file cannot be read or holds no key,
// or when one key is listed under two upstreams (the pool refuses that). A
// config without upstreams gives none and no error.
func (c *Config) Upstreams() ([]keypool.Upstream, error) {
	ups, _, err := c.upstreams(false)
	return ups, err
}

// UpstreamsForReload is Upstreams for a config reloaded while serving: an
// upstream whose keys file holds no key (every key taken out) is taken
// without keys, so that its requests are refused until a later reload
// brings keys back, and empty names those upstreams (their labels, as in
// "upstream 2"). A keys file that cannot be read is still an error.
func (c *Config) UpstreamsForReload() (ups []keypool.Upstream, empty []string, err error) {
	return c.upstreams(true)
}

// upstreams is Upstreams, allowing keys files without keys when
// allowEmpty is set, and naming those upstreams.
func (c *Config) upstreams(allowEmpty bool) ([]keypool.Upstream, []string, error) {
	var errs []error
	var empty []string
	out := make([]keypool.Upstream, 0, len(c.Upstream))
	owner := map[keypool.KeyID]string{}
	for i, u := range c.Upstream {
		if u.label == "" { // built by hand, not parsed
			u.label = "upstream " + strconv.Itoa(i+1)
		}
		keys := u.Keys
		if u.Auth != keypool.AuthKeys {
			out = append(out, c.upstream(u, nil))
			continue
		}
		if u.KeysFile != "" {
			more, err := ReadKeysFile(u.KeysFile)
			if err != nil {
				errs = append(errs, &Error{File: c.name, Line: u.keysFileLine, Msg: u.label + ": keys_file", Err: err})
				continue
			}
			keys = dedupe(append(keys[:len(keys):len(keys)], more...))
		}
		if len(keys) == 0 && allowEmpty {
			empty = append(empty, u.label)
		} else if len(keys) == 0 {
			errs = append(errs, &Error{File: c.name, Line: u.keysFileLine, Msg: u.label + ": keys_file holds no key"})
			continue
		}
		for _, k := range keys {
			if other, dup := owner[k.ID()]; dup && other != u.label {
				errs = append(errs, &Error{File: c.name, Line: u.Line,
					Msg: fmt.Sprintf("%s: key %s is listed in %s too; a key may serve one upstream only", u.label, k.ID(), other)})
				continue
			}
			owner[k.ID()] = u.label
		}
		out = append(out, c.upstream(u, keys))
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return out, empty, nil
}

// upstream converts one upstream with its keys; its own timeouts win over
// the config's.
func (c *Config) upstream(u Upstream, keys []keypool.Key) keypool.Upstream {
	up := keypool.Upstream{
		Name:          u.Name,
		BaseURL:       u.Endpoint,
		Keys:          keys,
		Auth:          u.Auth,
		Allow:         append([]string(nil), u.Allow...),
		Deny:          append([]string(nil), u.Deny...),
		Timeout:       u.Timeout,
		StreamTimeout: u.StreamTimeout,
		IdleTimeout:   cmp.Or(u.IdleTimeout, c.IdleTimeout),
		APIVersion:    u.APIVersion,
	}
	if len(u.Deployments) > 0 {
		up.Deployments = maps.Clone(u.Deployments)
	}
	// The parser took only names UpstreamType reads.
	up.Type.UnmarshalText([]byte(u.Type))
	if up.Timeout == 0 {
		up.Timeout = c.Timeout
	}
	if up.StreamTimeout == 0 {
		up.StreamTimeout = c.StreamTimeout
	}
	return up
}

// dedupe drops later keys with the ID of an earlier one.
func dedupe(keys []keypool.Key) []keypool.Key {
	seen := make(map[keypool.KeyID]bool, len(keys))
	out := keys[:0:0]
	for _, k := range keys {
		if !seen[k.ID()] {
			seen[k.ID()] = true
			out = append(out, k)
		}
	}
	return out
}
