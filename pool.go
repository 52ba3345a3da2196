package keypool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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

// NoKeyError says that no key can take a request now. FreeAt, when not zero,
// is when the first key that could take it frees up.
type NoKeyError struct {
	Model  string
	Reason string
	FreeAt time.Time
}

// ErrNoKey matches every *NoKeyError with errors.Is.
var ErrNoKey = errors.New("keypool: no key available")

func (e *NoKeyError) Error() string {
	s := fmt.Sprintf("keypool: no key available for model %q: %s", e.Model, e.Reason)
	if !e.FreeAt.IsZero() {
		s += "; the first key frees up at " + e.FreeAt.UTC().Format(time.RFC3339Nano)
	}
	return s
}

// clip cuts a client-supplied string for messages and logs, so a megabyte
// of model name cannot become a megabyte of log.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Is reports whether target is ErrNoKey.
func (e *NoKeyError) Is(target error) bool { return target == ErrNoKey }

// Pool holds the keys of every upstream, what has been learned about them, and
// chooses a key for each attempt. It is safe for simultaneous use by multiple
// goroutines; all its state sits behind one mutex, and a pick costs O(log n)
// in the number of keys with no allocation.
//
// Most callers never touch a Pool directly: New builds one inside the
// Transport. Use Transport.Pool for snapshots and operator actions.
type Pool struct {
	mu        sync.Mutex
	ups       []*upstream
	keys      []*key // in config order, for snapshots
	byID      map[KeyID]*key
	seq       uint64               // pick counter: least recently used first
	wake      chan struct{}        // closed when a busy key frees a slot; nil when nobody waits
	events    []StateEvent         // state changes to send once mu is released
	epoch     time.Time            // cooldowns are kept as offsets from it: one time base
	modelSets map[string]*modelSet // model lists, shared by the keys that have the same one
	noStream  map[string]bool      // models some key may not stream: their streams have a bucket of their own
	cfg       poolConfig
	observer  Observer
}

type poolConfig struct {
	trialsFirst  bool
	checkedOnly  bool // unchecked keys wait for their first check
	probeLimit   int64
	maxBuckets   int
	failures     int
	failCooldown time.Duration
	maxCooldown  time.Duration
	family       func(model string) string
}

type upstream struct {
	Upstream
	index   int
	base    *url.URL
	keys    []*key
	buckets map[string]*bucket
	// scopeLacks holds, per scope (an organization and project its keys'
	// answers name), the models its keys answered model_not_found for.
	scopeLacks map[string]*lackSet
}

// key is the pool's record of one credential. Guarded by Pool.mu.
type key struct {
	cred       Key
	up         *upstream
	index      int   // in up.keys
	state      State // lifecycle: never StateCooling, which is derived from cooldowns
	reason     string
	since      time.Time
	trial      bool
	models     map[string]bool // ids from /v1/models; nil: unknown, any model is tried
	families   map[string]bool // families of models; a key serves every model of a family it has
	lacks      *lackSet        // models answered model_not_found or refused (bounded); nil: none
	scope      string          // the organization (and project) its answers name; "" until one does
	noStream   map[string]bool // models it may not stream (unverified organization)
	clone      bool            // an organization clone found by the checker
	org        string          // the organization it is sent with, or its default one
	checked    time.Time       // last check
	orgsKnown  bool            // organizations listed (or found unlistable)
	probe      RateLimits      // what the checker's probe answer said
	coolUntil  time.Time       // key-wide cooldown (repeated failures)
	failures   int             // consecutive server errors
	inflight   int
	lastUsed   time.Time
	usage      map[string]*FamilyUsage
	usageOrder []string
	authz      []string // the Authorization header value; never changes
}

// bucket is one upstream's keys for one model: rate limits are per model, so
// each model has its own heaps.
type bucket struct {
	name        string // its key in upstream.buckets
	model       string
	path        bool // a URL path stands in for the model: no model list applies
	family      string
	image       bool // an image family: never served by trial keys
	stream      bool // streams of a model some key may not stream: those keys stay out
	trialsFirst bool
	entries     []*entry // by key index; nil when the key cannot serve the model
	ready       readyHeap
	cooling     coolHeap
	inflight    int
	lastUsed    uint64
}

// entry is one key's standing for one model. Guarded by Pool.mu.
type entry struct {
	k        *key
	b        *bucket
	answered bool  // an answer arrived, so unknown limits mean "none stated"
	limitReq int64 // Unknown until stated
	remReq   int64 // at obsAt
	perSlot  time.Duration
	obsAt    time.Time
	limitTok int64
	remTok   int64
	inflight int64
	seq      uint64    // last pick
	until    time.Time // cooldown for this model
	wakeAt   int64     // when it leaves the cooling heap, as nanoseconds since Pool.epoch
	where    uint8     // heapNone, heapReady, heapCooling
	idx      int32     // position in its heap
}

const (
	heapNone uint8 = iota
	heapReady
	heapCooling
)

func newPool(ups []Upstream, cfg poolConfig, obs Observer, now time.Time) (*Pool, error) {
	if len(ups) == 0 {
		return nil, errors.New("keypool: no upstream configured")
	}
	p := &Pool{byID: map[KeyID]*key{}, cfg: cfg, observer: obs, epoch: now, modelSets: map[string]*modelSet{}, noStream: map[string]bool{}}
	for i, u := range ups {
		if u.BaseURL == "" {
			return nil, fmt.Errorf("keypool: upstream %d: empty base URL", i+1)
		}
		base, err := url.Parse(strings.TrimRight(u.BaseURL, "/"))
		if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
			return nil, fmt.Errorf("keypool: upstream %d: base URL must be http(s)://host[/path]", i+1)
		}
		if base.User != nil {
			return nil, fmt.Errorf("keypool: upstream %d: base URL must not hold credentials", i+1)
		}
		if u.Name == "" {
			u.Name = base.Host
		}
		u.Name = uniqueName(u.Name, p.ups)
		if u.Timeout <= 0 {
			u.Timeout = DefaultTimeout
		}
		if u.StreamTimeout <= 0 {
			u.StreamTimeout = DefaultStreamTimeout
		}
		switch {
		case u.IdleTimeout == 0:
			u.IdleTimeout = DefaultIdleTimeout
		case u.IdleTimeout < 0:
			u.IdleTimeout = 0 // no limit
		}
		for _, pat := range slices.Concat(u.Allow, u.Deny) {
			if pat == "" {
				return nil, fmt.Errorf("keypool: upstream %s: empty model pattern", u.Name)
			}
		}
		up := &upstream{Upstream: u, index: i, base: base, buckets: map[string]*bucket{}, scopeLacks: map[string]*lackSet{}}
		up.Keys = nil // the pool's records hold them
		switch {
		case u.Auth > AuthCaller:
			return nil, fmt.Errorf("keypool: upstream %s: unknown Auth %d", u.Name, u.Auth)
		case u.Auth != AuthKeys && len(u.Keys) > 0:
			return nil, fmt.Errorf("keypool: upstream %s: Auth %s takes no Keys", u.Name, u.Auth)
		case u.Auth != AuthKeys:
			p.addKeyLocked(up, Key{id: standInID(u.Auth, u.Name)}, now)
		}
		for _, c := range u.Keys {
			if c.IsZero() {
				return nil, fmt.Errorf("keypool: upstream %s: empty key", u.Name)
			}
			id := c.ID()
			if old, dup := p.byID[id]; dup {
				if old.cred.secret() == c.secret() && old.cred.org == c.org && old.cred.project == c.project {
					if old.up == up {
						continue // the same key listed twice
					}
					return nil, fmt.Errorf("keypool: key %s is listed in upstreams %s and %s", id, old.up.Name, u.Name)
				}
				return nil, fmt.Errorf("keypool: key ID collision on %s: refusing two different keys with one ID", id)
			}
			p.addKeyLocked(up, c, now)
		}
		p.ups = append(p.ups, up)
	}
	if len(p.keys) == 0 {
		return nil, errors.New("keypool: no key configured")
	}
	return p, nil
}

// uniqueName returns name, or name#2, #3 … when an earlier upstream has it:
// names tell upstreams apart in events, metrics and WithUpstreamsOnly, and
// several upstreams often share one host.
func uniqueName(name string, ups []*upstream) string {
	taken := func(n string) bool {
		return slices.ContainsFunc(ups, func(u *upstream) bool { return u.Name == n })
	}
	if !taken(name) {
		return name
	}
	for i := 2; ; i++ {
		if n := fmt.Sprintf("%s#%d", name, i); !taken(n) {
			return n
		}
	}
}

// hasLists reports whether the upstream restricts models.
func (u *upstream) hasLists() bool { return len(u.Allow) > 0 || len(u.Deny) > 0 }

// anyWithoutLists reports whether some upstream of only (every upstream when
// only is nil) has no Allow or Deny list. Upstreams never change, so no
// lock is needed.
func (p *Pool) anyWithoutLists(only []string) bool {
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

// addKeyLocked adds a key to upstream up, with an entry in every bucket it
// has. Requires p.mu (or a pool not yet shared).
func (p *Pool) addKeyLocked(up *upstream, c Key, now time.Time) *key {
	k := &key{cred: c, up: up, index: len(up.keys), since: now, org: c.org}
	if up.Auth == AuthKeys {
		k.authz = []string{"Bearer " + c.secret()}
	} else {
		// A stand-in: nothing to check, so it is ready from the start.
		k.state, k.reason = StateReady, "no key of its own ("+up.Auth.String()+")"
	}
	up.keys = append(up.keys, k)
	p.keys = append(p.keys, k)
	p.byID[c.id] = k
	for _, b := range up.buckets {
		e := newEntry(k, b)
		b.entries = append(b.entries, e)
		p.place(e, now)
	}
	return k
}

func newEntry(k *key, b *bucket) *entry {
	return &entry{k: k, b: b, limitReq: Unknown, remReq: Unknown, limitTok: Unknown, remTok: Unknown, idx: -1}
}

// learnScope takes the organization (and project) an answer names as k's
// scope. Requires p.mu.
func (k *key) learnScope(h http.Header) {
	org := headerValue(h, "Openai-Organization")
	if org == "" {
		return
	}
	proj := headerValue(h, "Openai-Project")
	if proj == "" && k.scope == org {
		return // the usual case: no allocation
	}
	scope := org
	if proj != "" {
		scope += "/" + proj
	}
	k.scope = clip(scope, maxScopeName)
}

// standIn reports whether k stands in for an upstream without keys.
func (k *key) standIn() bool { return k.up.Auth != AuthKeys }

// canServe reports whether k may be tried for b's model: not refused for it,
// in a family its model list has (when known), and no image model for a
// trial key.
func (k *key) canServe(b *bucket) bool {
	if k.lacks.has(b.model) || k.trial && b.image || k.scope != "" && k.up.scopeLacks[k.scope].has(b.model) {
		return false
	}
	if b.path {
		return true
	}
	return k.families == nil || k.families[b.family] || k.models[b.model]
}

// usable reports whether k may take requests for b's model now (cooldowns
// aside). Requires p.mu.
func (p *Pool) usable(k *key, b *bucket) bool {
	if !k.state.selectable() || p.cfg.checkedOnly && k.checked.IsZero() && !k.standIn() {
		return false
	}
	if b.stream && k.noStream[b.model] {
		return false
	}
	return k.canServe(b)
}

// bucketFor returns the upstream's bucket for model, creating it. It returns
// nil when the upstream holds its maximum of buckets and none is idle.
// Requires p.mu.
func (p *Pool) bucketFor(u *upstream, model string, now time.Time) *bucket {
	return p.bucketNamed(u, model, model, false, now)
}

// bucketNamed returns the bucket called name for model (a stream bucket's
// name differs from its model), creating it. Requires p.mu.
func (p *Pool) bucketNamed(u *upstream, name, model string, stream bool, now time.Time) *bucket {
	if b := u.buckets[name]; b != nil {
		return b
	}
	if len(u.buckets) >= p.cfg.maxBuckets && !p.evictBucket(u) {
		return nil
	}
	family := ModelFamily(model)
	b := &bucket{
		name:        name,
		model:       model,
		stream:      stream,
		path:        strings.HasPrefix(model, "/"),
		family:      family,
		image:       imageFamilies[family] || strings.HasPrefix(model, "/v1/images/"),
		trialsFirst: p.cfg.trialsFirst && family != "embeddings" && !isEmbeddingsModel(model),
		entries:     make([]*entry, len(u.keys)),
	}
	for i, k := range u.keys {
		e := newEntry(k, b)
		b.entries[i] = e
		p.place(e, now)
	}
	u.buckets[name] = b
	return b
}

// evictBucket drops the least recently used bucket with nothing in flight, so
// that clients naming ever new models cannot grow the pool without bound. A
// bucket holding cooldowns goes last: forgetting one would send a key a
// request it was told to wait with.
func (p *Pool) evictBucket(u *upstream) bool {
	var victim *bucket
	for _, b := range u.buckets {
		if b.inflight == 0 && (victim == nil || evictFirst(b, victim)) {
			victim = b
		}
	}
	if victim == nil {
		return false
	}
	delete(u.buckets, victim.name)
	return true
}

// evictFirst reports whether idle bucket a should go before idle bucket b:
// buckets without cooldowns first, then the least recently used.
func evictFirst(a, b *bucket) bool {
	if aCool, bCool := len(a.cooling) > 0, len(b.cooling) > 0; aCool != bCool {
		return !aCool
	}
	return a.lastUsed < b.lastUsed
}

func isEmbeddingsModel(model string) bool {
	return strings.Contains(model, "embedding")
}

// headroom is how many more requests e may take now: the remaining requests
// of its last answer minus those in flight. Before the first answer a key
// takes probeLimit requests at once, so no key is flooded before it has said
// what its limits are; an upstream that states no limits is not limited.
func (p *Pool) headroom(e *entry) int64 {
	if e.k.up.Auth == AuthCaller {
		return 1<<20 - e.inflight // every caller brings a key of its own
	}
	rem := e.remReq
	if rem < 0 {
		if e.answered {
			rem = 1 << 20
		} else {
			rem = p.cfg.probeLimit
		}
	}
	return rem - e.inflight
}

// score orders ready entries, lowest first: those with headroom, then trial
// keys (where the bucket spends trials first), then most headroom, then least
// recently used.
func (p *Pool) score(e *entry) uint64 {
	const headBits, seqBits = 22, 40
	h := p.headroom(e)
	var s uint64
	if h <= 0 {
		s |= 1 << 63
		h = 0
	}
	if !(e.b.trialsFirst && e.k.trial) {
		s |= 1 << 62
	}
	if h > 1<<headBits-1 {
		h = 1<<headBits - 1
	}
	s |= uint64(1<<headBits-1-h) << seqBits
	s |= e.seq & (1<<seqBits - 1)
	return s
}

const fullBit = 1 << 63

// place puts e in the heap its state calls for at now. Requires p.mu.
func (p *Pool) place(e *entry, now time.Time) {
	want := heapNone
	wake := e.until
	if e.k.coolUntil.After(wake) {
		wake = e.k.coolUntil
	}
	if p.usable(e.k, e.b) {
		want = heapReady
		if wake.After(now) {
			want = heapCooling
		}
	}
	b := e.b
	switch {
	case e.where == want && want == heapReady:
		b.ready.fix(e, p.score(e))
		return
	case e.where == want && want == heapCooling:
		e.wakeAt = p.offset(wake)
		b.cooling.fix(int(e.idx))
		return
	case e.where == heapReady:
		b.ready.remove(e)
	case e.where == heapCooling:
		b.cooling.remove(int(e.idx))
	}
	e.where = want
	switch want {
	case heapReady:
		b.ready.push(e, p.score(e))
	case heapCooling:
		e.wakeAt = p.offset(wake)
		b.cooling.push(e)
	}
}

// placeKey re-places every entry of k after a change of k. Requires p.mu.
func (p *Pool) placeKey(k *key, now time.Time) {
	for _, b := range k.up.buckets {
		if e := b.entries[k.index]; e != nil {
			p.place(e, now)
		}
	}
}

// offset turns a time into the pool's time base. Differences of times taken
// from one clock use its monotonic reading, so a wall-clock step or a suspend
// cannot strand a cooling key or make waiters spin.
func (p *Pool) offset(t time.Time) int64 { return int64(t.Sub(p.epoch)) }

// revive moves entries whose cooldown has ended back to the ready heap, with
// the requests their bucket has refilled meanwhile. Requires p.mu.
func (p *Pool) revive(b *bucket, now time.Time) {
	t := p.offset(now)
	for len(b.cooling) > 0 && b.cooling[0].wakeAt <= t {
		e := b.cooling[0]
		e.refill(now)
		if e.remReq == 0 {
			e.remReq = 1 // the cooldown was set to end when a slot frees up
		}
		p.place(e, now)
		if e.where == heapCooling && e.idx == 0 {
			break // still cooling (cannot happen while wakeAt is kept in step)
		}
	}
}

// refill brings e's remaining requests up to now at the rate its last answer
// implied (OpenAI's buckets refill continuously).
func (e *entry) refill(now time.Time) {
	if e.remReq < 0 || e.perSlot <= 0 || e.limitReq < 0 {
		return
	}
	slots := int64(now.Sub(e.obsAt) / e.perSlot)
	if slots <= 0 {
		return
	}
	e.remReq = min(e.limitReq, e.remReq+slots)
	e.obsAt = e.obsAt.Add(time.Duration(slots) * e.perSlot)
}

// estimate returns e's remaining requests at now without changing e.
func (e *entry) estimate(now time.Time) int64 {
	c := *e
	c.refill(now)
	return c.remReq
}

// pick is one attempt's request for a key.
type pick struct {
	model  string   // matched against Allow and Deny
	bucket string   // the rate-limit bucket: the model, or a path's route
	tried  []*key   // keys already tried for this request
	avoid  uint64   // upstreams that failed this request: tried last
	stream bool     // a streaming request: keys that may not stream the model are passed over
	only   []string // if not nil, the names of the only upstreams this request may use
	order  []int    // if not nil, the order to try the upstreams in (indexes of Pool.ups)
	// unreadable marks a request whose model could not be read: upstreams
	// with Allow or Deny lists are passed over, as the lists cannot apply.
	unreadable bool

	streamBucket string // the bucket of streams of a model some key may not stream; built once
}

func (r *pick) bucketName() string {
	if r.bucket != "" {
		return r.bucket
	}
	return r.model
}

func (r *pick) triedKey(k *key) bool {
	for _, t := range r.tried {
		if t == k {
			return true
		}
	}
	return false
}

// maxTried bounds the tried keys a pick steps over in one heap.
const maxTried = 16

// take chooses a key for r at now and counts it in flight. When none can take
// it, busy reports a key that will free a slot when an answer returns, freeAt
// the earliest end of a cooldown, and reason why nothing was found.
// Requires p.mu.
func (p *Pool) take(r *pick, now time.Time) (e *entry, busy bool, freeAt time.Time, reason string) {
	allowed, noRoom := false, false
	for pass := 0; pass < 2; pass++ {
		for i := range p.ups {
			u := p.ups[i]
			if r.order != nil {
				u = p.ups[r.order[i]]
			}
			avoided := u.index < 64 && r.avoid&(1<<u.index) != 0
			if avoided != (pass == 1) || !u.allows(r.model) || r.only != nil && !slices.Contains(r.only, u.Name) ||
				r.unreadable && u.hasLists() {
				continue
			}
			allowed = true
			b := p.bucketFor(u, r.bucketName(), now)
			if r.stream && p.noStream[r.bucketName()] {
				if r.streamBucket == "" {
					r.streamBucket = r.bucketName() + "\x00stream"
				}
				b = p.bucketNamed(u, r.streamBucket, r.bucketName(), true, now)
			}
			if b == nil {
				noRoom = true
				continue
			}
			p.revive(b, now)
			if c := p.best(b, r, now); c != nil {
				if p.score(c)&fullBit == 0 {
					p.acquire(c, now)
					return c, false, time.Time{}, ""
				}
				busy = true
			}
			if len(b.cooling) > 0 {
				t := p.epoch.Add(time.Duration(b.cooling[0].wakeAt))
				if freeAt.IsZero() || t.Before(freeAt) {
					freeAt = t
				}
			}
		}
	}
	switch {
	case !allowed && r.only != nil:
		reason = "no upstream this client may use serves this model"
	case !allowed:
		reason = "no upstream serves this model"
	case busy:
		reason = "every usable key is busy"
	case !freeAt.IsZero():
		reason = "every usable key is cooling"
	case noRoom:
		reason = "too many distinct models in flight"
	default:
		reason = "every key is revoked, over quota, disabled, lacks the model or was tried"
	}
	return nil, busy, freeAt, reason
}

// best returns the best ready entry of b not yet tried by r. A request has
// tried fewer than maxTried keys, so stepping over that many at the top of
// the heap always reaches the best untried one. Requires p.mu.
func (p *Pool) best(b *bucket, r *pick, now time.Time) *entry {
	var stash [maxTried]*entry
	n := 0
	var found *entry
	for len(b.ready) > 0 && n < len(stash) {
		e := b.ready[0].e
		if !e.k.canServe(b) {
			// Its scope learned it lacks the model after it was placed:
			// out of the heaps, once.
			p.place(e, now)
			continue
		}
		if !r.triedKey(e.k) {
			found = e
			break
		}
		b.ready.remove(e)
		stash[n] = e
		n++
	}
	for _, e := range stash[:n] {
		b.ready.push(e, p.score(e))
	}
	return found
}

// acquire counts a pick of e. Requires p.mu.
func (p *Pool) acquire(e *entry, now time.Time) {
	p.seq++
	e.seq = p.seq
	e.inflight++
	e.k.inflight++
	e.b.inflight++
	e.b.lastUsed = p.seq
	e.k.lastUsed = now
	p.place(e, now)
}

// release ends an attempt's hold on e and wakes waiters. Requires p.mu.
func (p *Pool) release(e *entry, now time.Time) {
	if e.inflight > 0 {
		e.inflight--
		e.b.inflight--
	}
	if e.k.inflight > 0 {
		e.k.inflight--
	}
	p.place(e, now)
	p.wakeWaiters()
}

// wakeWaiters tells waiting requests to look again. Requires p.mu.
func (p *Pool) wakeWaiters() {
	if p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
}

// acquireWait takes a key for r. When none is free but one will be before
// deadline (a busy key answers, a cooldown ends), it waits, bounded by ctx;
// otherwise it fails at once with a *NoKeyError.
func (p *Pool) acquireWait(ctx context.Context, r *pick, deadline time.Time, now func() time.Time) (*entry, error) {
	for {
		t := now()
		p.mu.Lock()
		e, busy, freeAt, reason := p.take(r, t)
		var ch chan struct{}
		if e == nil {
			// Any change may free a key: a slot released, an answer that
			// states room, an operator's Enable.
			if p.wake == nil {
				p.wake = make(chan struct{})
			}
			ch = p.wake
		}
		p.mu.Unlock()
		if e != nil {
			return e, nil
		}
		if !t.Before(deadline) || !busy && (freeAt.IsZero() || freeAt.After(deadline)) {
			return nil, &NoKeyError{Model: clip(r.model, 128), Reason: reason, FreeAt: freeAt}
		}
		limit := deadline
		if !freeAt.IsZero() && freeAt.Before(limit) {
			limit = freeAt
		}
		timer := time.NewTimer(limit.Sub(t))
		select {
		case <-ch:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, context.Cause(ctx)
		}
		timer.Stop()
	}
}

// flushEvents sends the state changes gathered under p.mu. It must be called
// with p.mu released.
func (p *Pool) flushEvents(evs []StateEvent) {
	if p.observer == nil {
		return
	}
	for _, ev := range evs {
		p.observer.StateChange(ev)
	}
}

// takeEvents returns the gathered state changes; nil (no allocation) when
// there are none. Requires p.mu.
func (p *Pool) takeEvents() []StateEvent {
	if len(p.events) == 0 {
		return nil
	}
	evs := slices.Clone(p.events)
	p.events = p.events[:0]
	return evs
}

// derivedState is what a snapshot shows: a selectable key with an active
// cooldown is cooling.
func (p *Pool) derivedState(k *key, now time.Time) (State, time.Time) {
	until := k.coolUntil
	for _, b := range k.up.buckets {
		if e := b.entries[k.index]; e != nil && e.until.After(until) {
			until = e.until
		}
	}
	if !until.After(now) {
		until = time.Time{}
	}
	if k.state.selectable() && k.coolUntil.After(now) {
		return StateCooling, until
	}
	if k.state.selectable() && !until.IsZero() {
		// Cooling for some model: show it, the key still serves the others.
		return StateCooling, until
	}
	return k.state, until
}

// setState moves k to a lifecycle state and records the event. Requires p.mu.
func (p *Pool) setState(k *key, to State, reason string, now time.Time) {
	from, _ := p.derivedState(k, now)
	if k.state == to && k.reason == reason {
		return
	}
	k.state, k.reason, k.since = to, reason, now
	if to.selectable() {
		k.coolUntil = time.Time{}
		k.failures = 0
	}
	p.placeKey(k, now)
	p.events = append(p.events, StateEvent{Key: k.cred.id, Upstream: k.up.Name, From: from, To: to, Reason: reason, At: now})
}

// coolKey makes the whole key unusable until t. A key already cooling (for
// any model) sends no new event: attempts show each 429. Requires p.mu.
func (p *Pool) coolKey(k *key, t time.Time, reason string, now time.Time) {
	if !t.After(k.coolUntil) {
		return
	}
	from, _ := p.derivedState(k, now)
	k.coolUntil = t
	p.placeKey(k, now)
	if k.state.selectable() && from != StateCooling {
		p.events = append(p.events, StateEvent{Key: k.cred.id, Upstream: k.up.Name, From: from, To: StateCooling, Reason: reason, Until: t, At: now})
	}
}

// coolEntry makes the key unusable for one model until t. Requires p.mu.
func (p *Pool) coolEntry(e *entry, t time.Time, reason string, now time.Time) {
	if !t.After(e.until) {
		return
	}
	from, _ := p.derivedState(e.k, now)
	e.until = t
	p.place(e, now)
	if e.k.state.selectable() && from != StateCooling {
		p.events = append(p.events, StateEvent{Key: e.k.cred.id, Upstream: e.k.up.Name, From: from, To: StateCooling,
			Reason: reason, Model: e.b.model, Until: t, At: now})
	}
}

// loseModel records that k cannot serve model. Requires p.mu.
func (p *Pool) loseModel(k *key, model string, now time.Time) {
	if k.scope != "" {
		// Keys of one organization see the same models: the rest of the
		// scope leaves the bucket's heaps as best meets them.
		set := k.up.scopeLacks[k.scope]
		if set == nil {
			if len(k.up.scopeLacks) >= maxScopes {
				clear(k.up.scopeLacks)
			}
			set = newLackSet(maxScopeLacks)
			k.up.scopeLacks[k.scope] = set
		}
		set.add(model)
	} else {
		if k.lacks == nil {
			k.lacks = newLackSet(maxKeyLacks)
		}
		k.lacks.add(model)
	}
	if b := k.up.buckets[model]; b != nil {
		p.place(b.entries[k.index], now) // out of every heap; in-flight attempts still release it
	}
}

// learn records an answer's rate limits on e. Requires p.mu.
func (p *Pool) learn(e *entry, l *RateLimits, now time.Time) {
	e.answered = true
	if l.LimitRequests >= 0 {
		e.limitReq = l.LimitRequests
		// Limits are per model: a paid key's low limit for one model is no
		// sign of a trial. Traffic may clear the flag; only an unchecked key
		// takes it from traffic (the checker's probe decides otherwise).
		if trial := l.Trial(); trial != e.k.trial && (!trial || e.k.checked.IsZero()) && !e.k.standIn() {
			e.k.trial = trial
			defer p.placeKey(e.k, now)
		}
	}
	if r := l.RemainingRequests; r >= 0 {
		// An answer that arrives late can show more than is left; the
		// estimate from the previous answer bounds it.
		if e.remReq >= 0 && e.perSlot > 0 && e.limitReq >= 0 {
			r = min(r, e.estimate(now))
		}
		e.remReq, e.obsAt = r, now
		if l.ResetRequests > 0 && e.limitReq > l.RemainingRequests {
			e.perSlot = l.ResetRequests / time.Duration(e.limitReq-l.RemainingRequests)
		}
		if r == 0 {
			d := e.perSlot
			if d <= 0 {
				d = max(l.ResetRequests, time.Second)
			}
			p.coolEntry(e, now.Add(d), "requests exhausted", now)
		}
	}
	if l.LimitTokens >= 0 {
		e.limitTok = l.LimitTokens
	}
	if l.RemainingTokens >= 0 {
		e.remTok = l.RemainingTokens
		if l.RemainingTokens == 0 && l.ResetTokens > 0 {
			p.coolEntry(e, now.Add(tokenWait(l.ResetTokens)), "tokens exhausted", now)
		}
	}
}

// tokenWait is how long a key whose token bucket is spent rests: the reset
// header says when the bucket is full, but a request needs only part of it.
func tokenWait(reset time.Duration) time.Duration {
	return min(reset, max(reset/10, time.Second))
}

// observe applies one attempt's outcome to its key and, if release is set,
// ends the attempt's hold. Requires p.mu.
func (p *Pool) observe(e *entry, a *Answer, out Outcome, now time.Time) {
	k := e.k
	switch k.up.Auth {
	case AuthCaller:
		return // the answer is about the caller's key, not the pool's
	case AuthNone:
		// Always present: a refusal of the missing key rests the upstream
		// like a failure, as a key cannot be revoked that was never sent.
		if out == OutcomeRevoked || out == OutcomeOverQuota {
			out = OutcomeServerError
		}
	}
	if !a.Cancelled && a.Status != 0 && !e.answered {
		e.answered = true
		p.place(e, now)
	}
	if a.Status != 0 && !a.Cancelled {
		k.learnScope(a.Header)
	}
	if a.Limits.Known() && !a.Cancelled {
		p.learn(e, &a.Limits, now)
		p.place(e, now) // headroom changed: re-score
		p.wakeWaiters()
	}
	switch out {
	case OutcomeSuccess:
		k.failures = 0
		if k.state == StateUnchecked {
			p.setState(k, StateReady, "answered", now)
		}
	case OutcomeRevoked:
		p.setState(k, StateRevoked, answerReason(a), now)
	case OutcomeOverQuota:
		p.setState(k, StateOverQuota, answerReason(a), now)
	case OutcomeRateLimited:
		p.coolEntry(e, now.Add(p.rateLimitWait(e, a)), answerReason(a), now)
	case OutcomeModelNotFound:
		p.loseModel(k, e.b.model, now)
	case OutcomeNotPermitted:
		if a.Error != nil && a.Error.Param == "stream" {
			if k.noStream == nil {
				k.noStream = map[string]bool{}
			}
			k.noStream[e.b.model] = true
			p.noStream[e.b.model] = true
			p.placeKey(k, now)
		} else {
			p.loseModel(k, e.b.model, now)
		}
	case OutcomeServerError:
		k.failures++
		wait := a.Limits.RetryAfter
		if k.failures >= p.cfg.failures {
			shift := min(k.failures-p.cfg.failures, 16)
			wait = max(wait, min(p.cfg.failCooldown<<shift, p.cfg.maxCooldown))
		}
		if wait > 0 {
			p.coolKey(k, now.Add(wait), answerReason(a), now)
		}
	}
}

// rateLimitWait is how long a key rests after a 429 for one model: as the
// answer says (Retry-After), else until its bucket frees a slot.
func (p *Pool) rateLimitWait(e *entry, a *Answer) time.Duration {
	l := &a.Limits
	d := l.RetryAfter
	if d < 0 && a.Error != nil && a.Error.Type == "tokens" && l.ResetTokens >= 0 {
		d = tokenWait(l.ResetTokens)
	}
	if d < 0 && e.perSlot > 0 {
		d = e.perSlot
	}
	if d < 0 && l.ResetRequests > 0 {
		d = l.ResetRequests
	}
	if d <= 0 {
		d = time.Second
	}
	return min(d, p.cfg.maxCooldown*60)
}

func answerReason(a *Answer) string {
	switch {
	case a.Error != nil:
		return fmt.Sprintf("%d %s/%s", a.Status, orDash(a.Error.Type), orDash(a.Error.Code))
	case a.Err != nil:
		return "transport: " + a.Err.Error()
	}
	return fmt.Sprintf("status %d", a.Status)
}

// addUsage counts one served request of model on k. Requires p.mu.
func (p *Pool) addUsage(k *key, model string, u Usage) {
	fam := p.cfg.family(model)
	if k.usage == nil {
		k.usage = map[string]*FamilyUsage{}
	}
	f := k.usage[fam]
	if f == nil {
		f = &FamilyUsage{Family: fam}
		k.usage[fam] = f
		k.usageOrder = append(k.usageOrder, fam)
	}
	f.Requests++
	f.InputTokens += u.InputTokens
	f.OutputTokens += u.OutputTokens
	f.CachedTokens += u.CachedTokens
	f.ReasoningTokens += u.ReasoningTokens
}

// snapshotChunk bounds how long one snapshot holds the lock.
const snapshotChunk = 512

// Snapshot returns what the pool knows of every key at now, in config order.
// It is safe to call while traffic flows: it takes the lock for a few hundred
// keys at a time.
func (p *Pool) Snapshot(now time.Time) []KeyInfo {
	p.mu.Lock()
	n := len(p.keys)
	p.mu.Unlock()
	out := make([]KeyInfo, 0, n)
	for start := 0; start < n; start += snapshotChunk {
		p.mu.Lock()
		for _, k := range p.keys[start:min(start+snapshotChunk, len(p.keys))] {
			out = append(out, p.info(k, now))
		}
		p.mu.Unlock()
	}
	return out
}

// Key returns the snapshot of one key, and false if the pool has no such key.
func (p *Pool) Key(id KeyID, now time.Time) (KeyInfo, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.byID[id]
	if k == nil {
		return KeyInfo{}, false
	}
	return p.info(k, now), true
}

// info builds one key's snapshot. Requires p.mu.
func (p *Pool) info(k *key, now time.Time) KeyInfo {
	st, until := p.derivedState(k, now)
	ki := KeyInfo{
		ID: k.cred.id, Upstream: k.up.Name, Auth: k.up.Auth, Organization: k.org, Clone: k.clone,
		State: st, Reason: k.reason, Since: k.since, CoolingUntil: until, Trial: k.trial,
		InFlight: k.inflight, LastUsed: k.lastUsed, LastChecked: k.checked,
		LimitRequests: k.probe.LimitRequests, LimitTokens: k.probe.LimitTokens,
	}
	if k.checked.IsZero() {
		ki.LimitRequests, ki.LimitTokens = Unknown, Unknown
	}
	if k.noStream != nil {
		ki.NoStream = sortedKeys(k.noStream)
	}
	if k.models != nil {
		ki.Models = sortedKeys(k.models)
	}
	ki.Lacks = k.lacks.names()
	for model, b := range k.up.buckets {
		e := b.entries[k.index]
		if e == nil || !e.answered && e.inflight == 0 && e.until.IsZero() {
			continue
		}
		ml := ModelLimits{Model: model, LimitRequests: e.limitReq, RemainingRequests: e.estimate(now),
			LimitTokens: e.limitTok, RemainingTokens: e.remTok, InFlight: int(e.inflight)}
		if e.until.After(now) {
			ml.CoolingUntil = e.until
		}
		ki.Limits = append(ki.Limits, ml)
	}
	slices.SortFunc(ki.Limits, func(a, b ModelLimits) int { return strings.Compare(a.Model, b.Model) })
	for _, fam := range k.usageOrder {
		ki.Usage = append(ki.Usage, *k.usage[fam])
	}
	return ki
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k, ok := range m {
		if ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Disable takes a key out of selection until Enable, at now.
func (p *Pool) Disable(id KeyID, reason string, now time.Time) error {
	return p.operate(id, func(k *key) { p.setState(k, StateDisabled, "disabled: "+reason, now) })
}

// Enable returns a disabled, revoked or over-quota key to selection, unchecked,
// so that its next answer says what it is now.
func (p *Pool) Enable(id KeyID, now time.Time) error {
	return p.operate(id, func(k *key) {
		if !k.state.selectable() {
			p.setState(k, StateUnchecked, "enabled", now)
		}
	})
}

func (p *Pool) operate(id KeyID, f func(k *key)) error {
	p.mu.Lock()
	k := p.byID[id]
	if k == nil {
		p.mu.Unlock()
		return fmt.Errorf("keypool: no key %s", id)
	}
	f(k)
	evs := p.takeEvents()
	p.wakeWaiters()
	p.mu.Unlock()
	p.flushEvents(evs)
	return nil
}
