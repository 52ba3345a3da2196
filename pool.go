package keypool

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Pool holds the keys of every upstream, what has been learned about them, and
// chooses a key for each attempt. It is safe for simultaneous use by multiple
// goroutines; all its state sits behind one mutex, and a pick costs O(log n)
// in the number of keys with no allocation.
//
// Capacity belongs to scopes, not keys: OpenAI limits an organization (and a
// project) per model, and every key of one organization spends one budget.
// A key learns its scope from the answers it gets (the openai-organization
// and openai-project headers) and from the checker; until then it is a scope
// of its own. Each scope has, per model, a budget: the rate limits its
// answers stated, the requests in flight, and a rest when it is spent.
//
// Every change to key or budget state goes through a few transitions,
// applied here under the lock: an answer (answered, finished), a check
// (checked, orgsFound), and an operator's action (Disable, Enable). The
// transport and the checker call them; neither takes the lock itself. With
// a StateStore (WithStateStore), each changed key's state is saved once the
// lock is released.
//
// Most callers never touch a Pool directly: New builds one inside the
// Transport. Use Transport.Pool for snapshots and operator actions.
type Pool struct {
	mu      sync.Mutex
	ups     []*upstream
	keys    []*key // in config order, for snapshots
	byID    map[KeyID]*key
	seq     uint64        // pick counter: least recently used first
	events  []StateEvent  // state changes to send once mu is released
	saves   []pendingSave // keys whose KeyState changed, to save once mu is released
	store   StateStore    // nil: none
	budgets BudgetStore   // the store, when it shares budgets too (budgetshare.go)
	// budgetsDown: a Spend failed; budgets are spent alone until budgetsRetry.
	budgetsDown  bool
	budgetsRetry time.Time
	cloneOrgs    map[KeyID][]string   // the organizations a key was cloned into (rare: kept off the key)
	updated      map[*key]time.Time   // with a store: when the latest state saved or applied of each key was made (see stamp)
	grown        chan struct{}        // with a StateSubscriber: a state heard added keys (clones) that a running Checker has yet to schedule
	born         uint32               // keys ever added: each key's born is its number (see checkedKeys)
	added        chan struct{}        // Update added keys (in fresh) that a running Checker has yet to check
	fresh        []*key               // keys Update added since a Checker last took them
	epoch        time.Time            // cooldowns are kept as offsets from it: one time base
	modelSets    map[string]*modelSet // model lists, shared by the scopes that have the same one
	noStream     map[string]bool      // models some scope may not stream: their streams have a bucket of their own
	counts       Counts               // kept as keys are added and change state (see tally)
	cfg          poolConfig
	observer     Observer
}

type poolConfig struct {
	now          func() time.Time // the pool's clock, for operator actions; nil means time.Now
	trialsFirst  bool
	checkedOnly  bool // unchecked keys wait for their first check
	probeLimit   int64
	maxBuckets   int
	failures     int
	failCooldown time.Duration
	maxCooldown  time.Duration
	maxRest      time.Duration // the longest any answer may rest a budget or key
}

// firstPick is where the pick counter starts: above any key's place in the
// config (the seq of what was never picked).
const firstPick = 1 << 32

// defaultMaxRest caps how long any answer can rest a key or budget: a daily
// limit may need a day, and a garbage header must not stall a key for ever.
const defaultMaxRest = 24 * time.Hour

// NoKeyError says that no key can take a request now. FreeAt, when not zero,
// is when the first key that could take it frees up. NotFound marks a model
// that no upstream the request may use serves: allow and deny lists refuse
// it, or every key that was asked answered model_not_found (errors.Is
// matches ErrModelNotFound).
type NoKeyError struct {
	Model    string
	Reason   string
	FreeAt   time.Time
	NotFound bool
}

// ErrNoKey matches every *NoKeyError with errors.Is.
var ErrNoKey = errors.New("keypool: no key available")

// ErrModelNotFound matches a *NoKeyError for a model no upstream serves,
// with errors.Is: the caller's mistake, not a lack of capacity.
var ErrModelNotFound = errors.New("keypool: model not found")

// ErrUnknownKey matches, with errors.Is, the error of an operator's action
// (Pool.Disable, Pool.Enable) on a key the pool does not hold.
var ErrUnknownKey = errors.New("keypool: unknown key")

// unknownKeyError names the key an action asked for when the ID has the
// form of one; anything else may be a secret pasted by mistake, and is not
// repeated.
type unknownKeyError struct{ id KeyID }

func (e *unknownKeyError) Error() string {
	if !e.id.valid() {
		return ErrUnknownKey.Error() + " (not a key ID)"
	}
	return ErrUnknownKey.Error() + " " + string(e.id)
}

func (e *unknownKeyError) Is(target error) bool { return target == ErrUnknownKey }

func (e *NoKeyError) Error() string {
	s := fmt.Sprintf("keypool: no key available for model %q: %s", e.Model, e.Reason)
	if !e.FreeAt.IsZero() {
		s += "; the first key frees up at " + e.FreeAt.UTC().Format(time.RFC3339Nano)
	}
	return s
}

// Is reports whether target is ErrNoKey, or ErrModelNotFound for a model
// no upstream serves.
func (e *NoKeyError) Is(target error) bool {
	return target == ErrNoKey || target == ErrModelNotFound && e.NotFound
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

func newPool(ups []Upstream, cfg poolConfig, obs Observer, now time.Time) (*Pool, error) {
	plans, err := planUpstreams(ups)
	if err != nil {
		return nil, err
	}
	if cfg.maxRest <= 0 {
		cfg.maxRest = defaultMaxRest
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	// Picks count from firstPick: budgets and keys never picked rank below
	// every picked one, in config order, so a fresh pool tries its keys in
	// the order they were given.
	p := &Pool{byID: map[KeyID]*key{}, cfg: cfg, observer: obs, epoch: now, modelSets: map[string]*modelSet{}, noStream: map[string]bool{},
		seq: firstPick, added: make(chan struct{}, 1)}
	for i := range plans {
		up := p.newUpstream(&plans[i], i, now)
		for _, c := range plans[i].keys {
			p.addKeyLocked(up, c, now)
		}
		p.ups = append(p.ups, up)
	}
	if len(p.keys) == 0 {
		return nil, errors.New("keypool: no key configured")
	}
	return p, nil
}

// upstreamPlan is one Upstream as a pool takes it: checked, its zero
// fields set to what they mean, its name unique, and its keys without
// duplicates (kept in keys; Upstream.Keys is nil).
type upstreamPlan struct {
	Upstream
	base *url.URL
	keys []Key
}

// planUpstreams checks ups and makes them ready to build (New) or to swap
// in (Transport.Update), touching no pool: a bad set is refused whole.
func planUpstreams(ups []Upstream) ([]upstreamPlan, error) {
	if len(ups) == 0 {
		return nil, errors.New("keypool: no upstream configured")
	}
	plans := make([]upstreamPlan, 0, len(ups))
	names := make([]string, 0, len(ups))
	type owner struct {
		up  string
		key Key
	}
	owners := map[KeyID]owner{}
	for i, u := range ups {
		if u.BaseURL == "" {
			return nil, fmt.Errorf("keypool: upstream %d: empty base URL", i+1)
		}
		if int(u.Type) >= len(typeNames) {
			return nil, fmt.Errorf("keypool: upstream %d: unknown type %d", i+1, u.Type)
		}
		if err := checkAzureFields(&u); err != nil {
			return nil, fmt.Errorf("keypool: upstream %d: %w", i+1, err)
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
		u.Name = uniqueName(u.Name, names)
		names = append(names, u.Name)
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
		switch {
		case u.Auth > AuthCaller:
			return nil, fmt.Errorf("keypool: upstream %s: unknown Auth %d", u.Name, u.Auth)
		case u.Auth != AuthKeys && len(u.Keys) > 0:
			return nil, fmt.Errorf("keypool: upstream %s: Auth %s takes no Keys", u.Name, u.Auth)
		}
		pl := upstreamPlan{base: base}
		for _, c := range u.Keys {
			if c.IsZero() {
				return nil, fmt.Errorf("keypool: upstream %s: empty key", u.Name)
			}
			id := c.ID()
			if old, dup := owners[id]; dup {
				if old.key.secret() == c.secret() && old.key.org == c.org && old.key.project == c.project {
					if old.up == u.Name {
						continue // the same key listed twice
					}
					return nil, fmt.Errorf("keypool: key %s is listed in upstreams %s and %s", id, old.up, u.Name)
				}
				return nil, fmt.Errorf("keypool: key ID collision on %s: refusing two different keys with one ID", id)
			}
			owners[id] = owner{u.Name, c}
			pl.keys = append(pl.keys, c)
		}
		u.Keys = nil                              // the pool's records hold them
		u.Deployments = maps.Clone(u.Deployments) // the caller's map may change after
		pl.Upstream = u
		plans = append(plans, pl)
	}
	return plans, nil
}

// newUpstream makes the record of a planned upstream, with index (its bit
// in a request's avoided upstreams), and the stand-in key of an upstream
// without keys of its own. Requires p.mu (or a pool not yet shared).
func (p *Pool) newUpstream(pl *upstreamPlan, index int, now time.Time) *upstream {
	up := &upstream{Upstream: pl.Upstream, index: index, base: pl.base, buckets: map[string]*bucket{},
		scopes: map[string]*scope{}, served: map[string]bool{}, missing: newMissingSet()}
	up.shared = p.newBucket(up, sharedBucket, "", false)
	if up.Auth != AuthKeys {
		p.addKeyLocked(up, Key{id: standInID(up.Auth, up.Name)}, now)
	}
	return up
}

// addKeyLocked adds a key to upstream up, in a scope: the one its configured
// organization and project name, else one of its own. Requires p.mu (or a
// pool not yet shared).
func (p *Pool) addKeyLocked(up *upstream, c Key, now time.Time) *key {
	p.born++
	k := &key{cred: c, up: up, index: len(up.keys), since: now, org: c.org, seq: uint64(len(p.keys)), born: p.born}
	k.idx, k.sidx = -1, -1
	if up.Auth == AuthKeys {
		k.authz = bearer(c)
	} else {
		// A stand-in: nothing to check, so it is ready from the start.
		k.state, k.reason = StateReady, "no key of its own ("+up.Auth.String()+")"
	}
	up.keys = append(up.keys, k)
	p.keys = append(p.keys, k)
	p.tally(k, 1)
	p.byID[c.id] = k
	name := ""
	if c.org != "" && !c.ServiceAccount() {
		// Until an answer names the organization's slug, keys configured
		// with one organization ID share a scope under it.
		name = configuredScope(c.org, c.project)
	}
	p.join(k, name, now)
	return k
}

// offset turns a time into the pool's time base. Differences of times taken
// from one clock use its monotonic reading, so a wall-clock step or a suspend
// cannot strand a cooling key or make waiters spin.
func (p *Pool) offset(t time.Time) int64 { return int64(t.Sub(p.epoch)) }

// at turns an offset back into a time.
func (p *Pool) at(off int64) time.Time { return p.epoch.Add(time.Duration(off)) }

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

// unlock releases p.mu, then sends the state changes gathered under it and
// hands the keys' changed states to the store.
func (p *Pool) unlock() {
	evs := p.takeEvents()
	var saves []KeyState
	if len(p.saves) > 0 {
		saves = p.takeSaves()
	}
	p.mu.Unlock()
	p.flushEvents(evs)
	for _, st := range saves {
		p.store.Save(st)
	}
}
