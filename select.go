package keypool

import (
	"context"
	"slices"
	"strings"
	"time"
)

// bucket is one upstream's budgets for one model: rate limits are per model,
// so each model has its own heaps of budgets, one budget per scope. A
// request takes the best budget (most headroom) and, inside its scope, the
// best key (healthy, least loaded, least recently used). Guarded by Pool.mu.
type bucket struct {
	up          *upstream
	name        string // its key in upstream.buckets
	model       string
	path        bool // a URL path stands in for the model: no model list applies
	family      string
	image       bool // an image family: never served by trial keys
	stream      bool // streams of a model some scope may not stream: those scopes stay out
	trialsFirst bool
	budgets     []*budget // by scope index; nil for a free index
	ready       readyHeap[*budget]
	cooling     coolHeap[*budget]
	inflight    int
	lastUsed    uint64
	waiters     []*waiter // requests waiting for one of its budgets
	// byModel counts, on the shared bucket, the requests in flight per scope
	// and model: a model's own bucket, once made, counts them against the
	// scope's headroom (sharedInflight).
	byModel map[scopeModel]int64
}

// sharedBucket names an upstream's bucket for every model that no key has
// shown it serves: a new name costs no budget per scope, and only scopes
// whose models are not known take part.
const sharedBucket = "\x00shared"

// newBucket makes a bucket with a budget for every scope of u. Requires p.mu.
func (p *Pool) newBucket(u *upstream, name, model string, stream bool) *bucket {
	family := ModelFamily(model)
	b := &bucket{
		up:          u,
		name:        name,
		model:       model,
		stream:      stream,
		path:        strings.HasPrefix(model, "/"),
		family:      family,
		image:       imageFamilies[family] || strings.HasPrefix(model, "/v1/images/"),
		trialsFirst: p.cfg.trialsFirst && family != "embeddings" && !isEmbeddingsModel(model),
		budgets:     make([]*budget, len(u.slots)),
	}
	for _, s := range u.slots {
		if s != nil {
			b.budgets[s.index] = newBudget(s, b)
		}
	}
	return b
}

// addBudget gives a new scope its budget in b.
func (b *bucket) addBudget(s *scope) {
	for len(b.budgets) <= s.index {
		b.budgets = append(b.budgets, nil)
	}
	b.budgets[s.index] = newBudget(s, b)
}

// unplace takes bud out of b's heaps for good: its scope or its bucket is
// gone. A lease that still holds it releases it without effect.
func (b *bucket) unplace(bud *budget) {
	switch bud.where {
	case heapReady:
		b.ready.remove(bud)
	case heapCooling:
		b.cooling.remove(bud)
	}
	bud.where = heapGone
}

// heapGone marks a budget whose scope or bucket is gone.
const heapGone uint8 = 255

func isEmbeddingsModel(model string) bool {
	return strings.Contains(model, "embedding")
}

// bucketFor returns the bucket of r's model on u: its own when some key has
// shown it serves the model (an answer, or a checked model list), else the
// upstream's shared one; a new bucket is made when there is room. Requires
// p.mu.
func (p *Pool) bucketFor(u *upstream, r *pick, now time.Time) *bucket {
	name := r.bucketName()
	stream := r.stream && p.noStream[name]
	if stream {
		if r.streamBucket == "" {
			r.streamBucket = name + "\x00stream"
		}
		name = r.streamBucket
	}
	if b := u.buckets[name]; b != nil {
		return b
	}
	model := r.bucketName()
	if !u.served[model] && (strings.HasPrefix(model, "/") || !u.served[ModelFamily(model)]) {
		return u.shared
	}
	return p.makeBucket(u, name, model, stream, now)
}

// makeBucket adds the bucket called name, or returns the shared one when u
// holds its maximum of buckets and none is idle. Requires p.mu.
func (p *Pool) makeBucket(u *upstream, name, model string, stream bool, now time.Time) *bucket {
	if b := u.buckets[name]; b != nil {
		return b
	}
	if len(u.buckets) >= p.cfg.maxBuckets && !p.evictBucket(u) {
		return u.shared
	}
	b := p.newBucket(u, name, model, stream)
	u.buckets[name] = b
	for _, bud := range b.budgets {
		if bud != nil {
			p.place(bud, now)
		}
	}
	return b
}

// evictBucket drops the least recently used bucket with nothing in flight, so
// that the buckets stay bounded. A bucket holding rests goes last:
// forgetting one would send a scope a request it was told to wait with.
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
	for _, bud := range victim.budgets {
		if bud != nil {
			victim.unplace(bud)
		}
	}
	delete(u.buckets, victim.name)
	p.wake(victim)
	return true
}

// evictFirst reports whether idle bucket a should go before idle bucket b:
// buckets without rests first, then the least recently used.
func evictFirst(a, b *bucket) bool {
	if aCool, bCool := len(a.cooling) > 0, len(b.cooling) > 0; aCool != bCool {
		return !aCool
	}
	return a.lastUsed < b.lastUsed
}

// usable reports whether bud may take requests, its rest aside: its scope
// has a ready key and may serve the bucket's model. Requires p.mu.
func (p *Pool) usable(bud *budget) bool {
	s, b := bud.s, bud.b
	if len(s.ready) == 0 {
		return false
	}
	if b == b.up.shared {
		return s.families == nil // scopes with a model list serve known models only
	}
	return s.canServe(b)
}

// budgetScore orders ready budgets, lowest first: those with headroom, then
// trial scopes (where the bucket spends trials first), then the healthiest
// best key, then most headroom, then least recently used.
func (p *Pool) budgetScore(bud *budget, now time.Time) uint64 {
	const headBits, seqBits = 20, 40
	h := p.headroomStored(bud)
	var s uint64
	if h <= 0 {
		s |= fullBit
		h = 0
	}
	if !(bud.b.trialsFirst && bud.s.trial) {
		s |= 1 << 62
	}
	if len(bud.s.ready) > 0 {
		s |= uint64(bud.s.ready[0].v.health.class(now)) << (headBits + seqBits)
	}
	h = min(h, 1<<headBits-1)
	s |= uint64(1<<headBits-1-h) << seqBits
	return s | bud.seq&(1<<seqBits-1)
}

const fullBit = 1 << 63

// headroomStored is headroom by the budget's last answer, without the
// refill since: scores must not change with time alone.
func (p *Pool) headroomStored(bud *budget) int64 {
	if p.sharing(bud) {
		// By what the answers left, as without a store, so that traffic
		// spreads the same way; take looks at the grants.
		return p.localHeadroom(bud, bud.remReq)
	}
	return p.headroomOf(bud, bud.remReq)
}

// place puts bud in the heap its state calls for at now. Requires p.mu.
func (p *Pool) place(bud *budget, now time.Time) {
	if bud.where == heapGone {
		return
	}
	want := heapNone
	if p.usable(bud) {
		want = heapReady
		if bud.until.After(now) {
			want = heapCooling
		}
	}
	b := bud.b
	switch {
	case bud.where == want && want == heapReady:
		b.ready.fix(bud, p.budgetScore(bud, now))
		return
	case bud.where == want && want == heapCooling:
		bud.wakeAt = p.offset(bud.until)
		b.cooling.fix(bud)
		return
	case bud.where == heapReady:
		b.ready.remove(bud)
	case bud.where == heapCooling:
		b.cooling.remove(bud)
	}
	bud.where = want
	switch want {
	case heapReady:
		b.ready.push(bud, p.budgetScore(bud, now))
	case heapCooling:
		bud.wakeAt = p.offset(bud.until)
		b.cooling.push(bud)
	}
}

// reviveBudgets moves budgets whose rest has ended back to the ready heap,
// with what their bucket refilled meanwhile. Requires p.mu.
func (p *Pool) reviveBudgets(b *bucket, now time.Time) {
	t := p.offset(now)
	for {
		bud, wake, ok := b.cooling.next()
		if !ok || wake > t {
			return
		}
		bud.refill(now)
		if bud.remReq == 0 {
			bud.remReq = 1 // the rest was set to end when a slot frees up
		}
		p.place(bud, now)
		if bud.where == heapCooling {
			return // cannot happen while wakeAt is kept in step
		}
	}
}

// lease is one attempt's hold on a key and the budget it spends; model is
// the request's bucket name, counted per model on a shared bucket.
type lease struct {
	k     *key
	bud   *budget
	model string
}

// pick is one attempt's request for a key.
type pick struct {
	model  string   // matched against Allow and Deny
	bucket string   // the rate-limit bucket: the model, or a path's route
	tried  []*key   // keys already tried for this request
	avoid  uint64   // upstreams that failed this request: tried last
	stream bool     // a streaming request: scopes that may not stream the model are passed over
	only   []string // if not nil, the names of the only upstreams this request may use
	order  []int    // if not nil, the order to try the upstreams in (indexes of Pool.ups)
	random bool     // try the upstreams in an order shuffled for this request (OrderRandom)
	// unreadable marks a request whose model could not be read: upstreams
	// with Allow or Deny lists are passed over, as the lists cannot apply.
	unreadable bool
	// transient are the tried keys that failed with a server error: when
	// nothing else is left they may be tried again, after a backoff.
	transient []*key
	retrying  bool // take may pick transient keys again

	streamBucket string    // the bucket of streams of a model some scope may not stream; built once
	looked       []*bucket // the buckets the last take looked at, for a wait
	lookedBuf    [4]*bucket
	orderBuf     [8]int // order's storage, when there are few upstreams
}

func (r *pick) bucketName() string {
	if r.bucket != "" {
		return r.bucket
	}
	return r.model
}

// excluded reports whether r may not use k: tried already, unless it failed
// only transiently and r is retrying.
func (r *pick) excluded(k *key) bool {
	if !slices.Contains(r.tried, k) {
		return false
	}
	return !r.retrying || !slices.Contains(r.transient, k)
}

// maxTried bounds the tried keys a pick steps over in one heap.
const maxTried = 16

// missingVotes is how many scopes must answer model_not_found for a model
// no key has shown it serves before the upstream holds it missing.
const missingVotes = 2

// refusal is why take found no key.
type refusal struct {
	busy     bool      // a key will free a slot when an answer returns
	freeAt   time.Time // the earliest end of a rest that keeps a key from it
	notFound bool      // no upstream the request may use serves the model
	reason   string
}

// take chooses a key for r at now and counts it in flight. When none can
// take it, it says why and when one frees up. Requires p.mu.
func (p *Pool) take(r *pick, now time.Time) (lease, refusal) {
	var ref refusal
	p.budgetsBack(now)
	if r.random && len(r.order) != len(p.ups) {
		// Shuffled under the lock: Update may change the upstreams
		// between two picks of one request.
		r.order = shuffled(r.orderBuf[:0], len(p.ups))
	}
	allowed, missing, noList, keyless := false, false, false, true
	r.looked = r.lookedBuf[:0]
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
			if len(u.keys) == 0 {
				continue // Update removed every key of u
			}
			keyless = false
			if u.missing.has(r.bucketName(), now) {
				missing = true
				continue
			}
			p.reviveKeys(u, now)
			b := p.bucketFor(u, r, now)
			if b == u.shared && u.unlisted == 0 {
				noList = true // every scope's models are known, and none has this one
				continue
			}
			r.looked = append(r.looked, b)
			p.reviveBudgets(b, now)
			if l, ok := p.best(b, r, now, false); ok {
				if p.headroom(l.bud, now) > 0 {
					p.acquire(l, now)
					return l, refusal{}
				}
				if p.waitsForGrant(l.bud, now) {
					// Its grants are spent, and more are asked for (a
					// grant wakes r): the best budget with grants left.
					if l, ok := p.best(b, r, now, true); ok && p.headroom(l.bud, now) > 0 {
						p.acquire(l, now)
						return l, refusal{}
					}
				}
				ref.busy = true
			}
			if _, wake, ok := b.cooling.next(); ok {
				ref.freeAt = earliest(ref.freeAt, p.at(wake))
			}
			if _, wake, ok := u.cooling.next(); ok {
				ref.freeAt = earliest(ref.freeAt, p.at(wake))
			}
		}
	}
	switch {
	case !allowed && r.only != nil:
		ref.reason, ref.notFound = "no upstream this client may use serves this model", true
	case !allowed:
		ref.reason, ref.notFound = "no upstream serves this model", true
	case keyless:
		ref.reason = "no key is configured for the upstreams that serve this model"
	case len(r.looked) == 0 && (missing || noList):
		ref.reason, ref.notFound = "no key of any upstream has this model", true
	case ref.busy:
		ref.reason = "every usable key is busy"
	case !ref.freeAt.IsZero():
		ref.reason = "every usable key is cooling"
	default:
		ref.reason = "every key is revoked, over quota, disabled, lacks the model or was tried"
	}
	return lease{}, ref
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// best returns the best budget of b whose scope has a key r may use, and
// that key. A request has tried fewer than maxTried keys, and at most
// missingVotes scopes lack a model of the shared bucket before its upstream
// holds the model missing, so stepping over that many budgets always
// reaches the best usable one. With granted, it also steps over shared
// budgets whose grants are spent (asking for more), as far as it may.
// Requires p.mu.
func (p *Pool) best(b *bucket, r *pick, now time.Time, granted bool) (lease, bool) {
	var stash [maxTried + missingVotes]*budget
	n := 0
	var found lease
	ok := false
	for len(b.ready) > 0 && n < len(stash) {
		bud := b.ready[0].v
		if (b != b.up.shared || bud.s.servesModel(r.model, r.stream)) && !(granted && p.waitsForGrant(bud, now)) {
			if k := p.bestKey(bud.s, r, now); k != nil {
				found, ok = lease{k: k, bud: bud, model: r.bucketName()}, true
				break
			}
		}
		b.ready.remove(bud)
		stash[n] = bud
		n++
	}
	for _, bud := range stash[:n] {
		b.ready.push(bud, p.budgetScore(bud, now))
	}
	return found, ok
}

// bestKey returns the best ready key of s that r may use, nil if none.
// Requires p.mu.
func (p *Pool) bestKey(s *scope, r *pick, now time.Time) *key {
	if len(s.ready) == 0 {
		return nil
	}
	if k := s.ready[0].v; !r.excluded(k) {
		return k // the usual case: no heap work
	}
	var stash [maxTried]*key
	n := 0
	var found *key
	for len(s.ready) > 0 && n < len(stash) {
		k := s.ready[0].v
		if !r.excluded(k) {
			found = k
			break
		}
		s.ready.remove(k)
		stash[n] = k
		n++
	}
	for _, k := range stash[:n] {
		s.ready.push(k, keyScore(k, now))
	}
	return found
}

// takeResting takes the key of an upstream r may use whose rest for
// failures ends first, when its budget has room. Requires p.mu.
func (p *Pool) takeResting(r *pick, now time.Time) (lease, bool) {
	for _, u := range p.ups {
		k, _, ok := u.cooling.next()
		if !ok || r.excluded(k) {
			continue
		}
		if l, ok := p.takeThis(k, r, now); ok {
			return l, true
		}
	}
	return lease{}, false
}

// takeTransient takes a key that failed this request transiently, resting
// for its failures or not, when its budget has room. Requires p.mu.
func (p *Pool) takeTransient(r *pick, now time.Time) (lease, bool) {
	for _, k := range r.transient {
		if l, ok := p.takeThis(k, r, now); ok {
			return l, true
		}
	}
	return lease{}, false
}

// takeThis takes k for r when k may serve it and its budget has room, its
// own rest aside. Requires p.mu.
func (p *Pool) takeThis(k *key, r *pick, now time.Time) (lease, bool) {
	u := k.up
	if !p.selectable(k) || !u.allows(r.model) || r.only != nil && !slices.Contains(r.only, u.Name) ||
		r.unreadable && u.hasLists() || u.missing.has(r.bucketName(), now) {
		return lease{}, false
	}
	b := p.bucketFor(u, r, now)
	bud := b.budgets[k.s.index]
	if bud == nil || bud.s != k.s || bud.until.After(now) || p.headroom(bud, now) <= 0 {
		return lease{}, false
	}
	if b == u.shared && (k.s.families != nil || !k.s.servesModel(r.model, r.stream)) || b != u.shared && !k.s.canServe(b) {
		return lease{}, false
	}
	l := lease{k: k, bud: bud, model: r.bucketName()}
	p.acquire(l, now)
	return l, true
}

// acquire counts a pick of l. Requires p.mu.
func (p *Pool) acquire(l lease, now time.Time) {
	p.seq++
	k, bud := l.k, l.bud
	bud.seq, k.seq = p.seq, p.seq
	bud.inflight++
	if p.sharing(bud) {
		p.spendGrant(bud, now)
	}
	k.inflight++
	bud.b.inflight++
	if b := bud.b; b == b.up.shared {
		if b.byModel == nil {
			b.byModel = map[scopeModel]int64{}
		}
		b.byModel[scopeModel{bud.s, l.model}]++
	}
	bud.b.lastUsed = p.seq
	k.lastUsed = now
	p.place(bud, now)
	p.placeKey(k, now)
}

// release ends an attempt's hold on l and wakes the requests waiting for its
// bucket. Requires p.mu.
func (p *Pool) release(l lease, now time.Time) {
	k, bud := l.k, l.bud.live()
	if bud.inflight > 0 {
		bud.inflight--
		bud.b.inflight--
	}
	if b := bud.b; b == b.up.shared {
		sm := scopeModel{bud.s, l.model}
		if n := b.byModel[sm]; n > 1 {
			b.byModel[sm] = n - 1
		} else {
			delete(b.byModel, sm)
		}
	}
	if k.inflight > 0 {
		k.inflight--
	}
	p.place(bud, now)
	p.placeKey(k, now)
	p.wake(bud.b)
}

// waiter is one request waiting for a key: the buckets it looked at close
// ch when one of their budgets may have room again.
type waiter struct {
	ch   chan struct{}
	done bool // woken, or gone: not to be closed again
}

// wait registers a waiter on the buckets r looked at. Requires p.mu.
func (p *Pool) wait(r *pick) *waiter {
	w := &waiter{ch: make(chan struct{})}
	for _, b := range r.looked {
		if len(b.waiters) >= 32 && len(b.waiters)&(len(b.waiters)-1) == 0 {
			// Now and then, forget waiters that left without a wake.
			b.waiters = slices.DeleteFunc(b.waiters, func(w *waiter) bool { return w.done })
		}
		b.waiters = append(b.waiters, w)
	}
	return w
}

// wake tells the requests waiting for b to look again. Requires p.mu.
func (p *Pool) wake(b *bucket) {
	for _, w := range b.waiters {
		if !w.done {
			w.done = true
			close(w.ch)
		}
	}
	clear(b.waiters)
	b.waiters = b.waiters[:0]
}

// wakeUpstream wakes every waiter of u: a key changed in a way that may
// free it for any model. Requires p.mu.
func (p *Pool) wakeUpstream(u *upstream) {
	p.eachBucket(u, p.wake)
}

// acquireWait takes a key for r. When none is free but one will be before
// deadline (a busy key answers, a rest ends), it waits, bounded by ctx;
// otherwise it fails at once with a *NoKeyError.
func (p *Pool) acquireWait(ctx context.Context, r *pick, deadline time.Time, now func() time.Time) (lease, error) {
	for {
		t := now()
		p.mu.Lock()
		l, ref := p.take(r, t)
		if l.k == nil && !ref.notFound && !ref.busy {
			// A rest for failures steers traffic to other keys; with none
			// free, a key resting for its failures is better than none (a
			// lone flaky key still serves).
			if rl, ok := p.takeResting(r, t); ok {
				l = rl
			}
		}
		if l.k == nil && !ref.notFound && len(r.transient) > 0 {
			// Nothing else is left: the keys that failed only transiently
			// may be tried again (the transport has waited a backoff),
			// even those resting for their failures: a rest steers traffic
			// to other keys, and there is none.
			r.retrying = true
			if l, ref = p.take(r, t); l.k == nil {
				if tl, ok := p.takeTransient(r, t); ok {
					l = tl
				}
			}
		}
		var w *waiter
		if l.k == nil && !ref.notFound && t.Before(deadline) && (ref.busy || !ref.freeAt.IsZero() && !ref.freeAt.After(deadline)) {
			w = p.wait(r)
		}
		p.mu.Unlock()
		if l.k != nil {
			return l, nil
		}
		if w == nil {
			freeAt := ref.freeAt
			if ref.busy && freeAt.IsZero() {
				freeAt = t.Add(time.Second) // a slot frees when an answer returns
			}
			return lease{}, &NoKeyError{Model: clip(r.model, 128), Reason: ref.reason, FreeAt: freeAt, NotFound: ref.notFound}
		}
		limit := deadline
		if !ref.freeAt.IsZero() && ref.freeAt.Before(limit) {
			limit = ref.freeAt
		}
		timer := time.NewTimer(limit.Sub(t))
		select {
		case <-w.ch:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		p.mu.Lock()
		w.done = true
		p.mu.Unlock()
		if ctx.Err() != nil {
			return lease{}, context.Cause(ctx)
		}
	}
}
