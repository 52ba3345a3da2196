package keypool

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Upstream is one API base URL and its keys. Upstreams are tried in the order
// given: a request goes to a later upstream only when no key of an earlier one
// can take it.
type Upstream struct {
	// Name shows the upstream in events, metrics and snapshots; "" means the
	// base URL's host.
	Name string
	// BaseURL is the API root, such as "https://api.openai.com/v1". A request
	// for /v1/chat/completions goes to BaseURL + "/chat/completions".
	BaseURL string
	// Keys are the upstream's credentials.
	Keys []Key
	// Allow, if not empty, lists the only models this upstream serves; Deny
	// lists models it never serves. Entries are exact names or globs where *
	// matches any run of characters. Allow is checked first, then Deny. A
	// request with no JSON model is matched by its URL path
	// ("/v1/audio/transcriptions").
	Allow, Deny []string
	// Timeout limits the time to response headers of one attempt; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// StreamTimeout limits the time to the headers and first event of one
	// streaming attempt; 0 means DefaultStreamTimeout.
	StreamTimeout time.Duration
	// IdleTimeout cuts off an answer whose upstream sends nothing for this
	// long once it has started (between two reads of its body); the key
	// counts a failure. 0 means DefaultIdleTimeout; negative, no limit.
	IdleTimeout time.Duration
	// Auth says what credentials the upstream's requests carry: AuthKeys
	// (the zero value) sends each attempt with one of Keys; AuthNone and
	// AuthCaller take no Keys.
	Auth UpstreamAuth
	// Type is the protocol the upstream speaks (see UpstreamType); the
	// zero value is OpenAI's.
	Type UpstreamType
	// Deployments maps a model to its Azure deployment (TypeAzure only);
	// a model it does not name is its own deployment's name.
	Deployments map[string]string
	// APIVersion is the api-version of Azure's requests (TypeAzure only);
	// "" means DefaultAzureAPIVersion.
	APIVersion string
}

// UpstreamAuth says what credentials an upstream's requests carry.
type UpstreamAuth uint8

const (
	// AuthKeys sends each attempt with one of the upstream's Keys, which
	// the pool learns about, rests and checks. The default.
	AuthKeys UpstreamAuth = iota
	// AuthNone sends requests without credentials, to an endpoint that needs
	// no key (a local model server). The pool holds one stand-in key for
	// the upstream: it is chosen like any key, learns rate limits and rests
	// after repeated failures, but is never revoked, over quota or checked.
	AuthNone
	// AuthCaller passes the caller's own Authorization header on, so that
	// clients bring their own key (openai-api-route's "sk: asis"). The
	// upstream's stand-in key learns nothing, never rests, is never checked
	// and has no limit on requests in flight: each caller's key is its own.
	AuthCaller
)

var authNames = [...]string{AuthKeys: "keys", AuthNone: "none", AuthCaller: "caller"}

// String returns "keys", "none" or "caller".
func (a UpstreamAuth) String() string {
	if int(a) < len(authNames) {
		return authNames[a]
	}
	return "auth(" + strconv.Itoa(int(a)) + ")"
}

// MarshalText encodes the auth as its name.
func (a UpstreamAuth) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// standInID names the stand-in key of an upstream without keys of its own:
// a hash like a key's, over a text no secret can be.
func standInID(auth UpstreamAuth, upstream string) KeyID {
	return makeKeyID("\x00stand-in\x00"+auth.String(), upstream, "")
}

// Defaults of an Upstream's zero fields.
const (
	DefaultTimeout       = 10 * time.Minute // the OpenAI SDKs' own default
	DefaultStreamTimeout = 30 * time.Second
	DefaultIdleTimeout   = 2 * time.Minute
)

// upstream is the pool's record of one Upstream. Guarded by Pool.mu, but for
// the fields set at construction (Upstream, index, base), which never change:
// Transport.Update makes a new record for an upstream whose settings change.
type upstream struct {
	Upstream
	index int
	base  *url.URL
	keys  []*key
	// scopes holds the scopes with a name (an organization and project); a
	// key whose scope is not known yet has one of its own, not in the map.
	// slots holds every live scope by index (nil for a free index): the
	// budgets of a bucket are indexed alike.
	scopes    map[string]*scope
	slots     []*scope
	freeSlots []int
	unlisted  int // live scopes whose models no check has listed
	// buckets holds one bucket per model that some key has shown it serves
	// (an answer, or a checked model list); shared takes every other
	// model, so that a model name never seen costs nothing per key.
	buckets map[string]*bucket
	shared  *bucket
	// served lists models and families known to exist upstream: listed by a
	// check or served once. A request for one of them gets a bucket of its
	// own; any other name shares the upstream's.
	served map[string]bool
	// missing holds models that its keys answered model_not_found for
	// while no key had shown it serves them: requests for them get 404 at
	// once until the entry expires.
	missing *missingSet
	// cooling holds the upstream's keys that rest after failures, by the
	// time they wake.
	cooling coolHeap[*key]
}

// uniqueName returns name, or name#2, #3 … when an earlier upstream has it:
// names tell upstreams apart in events, metrics and ContextWithUpstreams, and
// several upstreams often share one host.
func uniqueName(name string, taken []string) string {
	has := func(n string) bool { return slices.Contains(taken, n) }
	if !has(name) {
		return name
	}
	for i := 2; ; i++ {
		if n := fmt.Sprintf("%s#%d", name, i); !has(n) {
			return n
		}
	}
}

// hasLists reports whether the upstream restricts models.
func (u *upstream) hasLists() bool { return len(u.Allow) > 0 || len(u.Deny) > 0 }

// anyWithoutLists reports whether some upstream of only (every upstream when
// only is nil) has no Allow or Deny list.
func (p *Pool) anyWithoutLists(only []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.ups {
		if !u.hasLists() && (only == nil || slices.Contains(only, u.Name)) {
			return true
		}
	}
	return false
}

// allows applies the upstream's Allow and Deny lists to model.
func (u *upstream) allows(model string) bool {
	if len(u.Allow) > 0 && !matchAny(u.Allow, model) {
		return false
	}
	return !matchAny(u.Deny, model)
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

// globMatch reports whether s matches pattern, where * matches any run of
// characters (slashes included) and everything else matches itself.
func globMatch(pattern, s string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == s
	}
	if !strings.HasPrefix(s, pattern[:star]) {
		return false
	}
	s = s[star:]
	pattern = pattern[star+1:]
	for {
		next := strings.IndexByte(pattern, '*')
		if next < 0 {
			return strings.HasSuffix(s, pattern) && len(s) >= len(pattern)
		}
		part := pattern[:next]
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
		pattern = pattern[next+1:]
	}
}
