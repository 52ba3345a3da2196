package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// A Notifier turns keypool events into messages for humans. It is a
// keypool.Observer: its Attempt and StateChange methods only update a map
// under a lock and queue a message without blocking, so they cost a request
// nothing. Run delivers the queued messages; most programs call Seed once,
// start Run in a goroutine of its own, and pass the Notifier to
// keypool.WithObserver.
//
// An event is queued unless one with the same (kind, upstream, key) was
// queued within Config.Dedup, or the rate limit (Config.Burst, Config.Every)
// holds it back; either is counted in Stats, as are messages dropped because
// the queue was full. upstream_down and upstream_recovered are sent on
// transitions; after one of them went out, the other is never held back as a
// duplicate, so a human always learns an upstream's latest state unless the
// rate limit holds it back.
//
// A Notifier is safe for simultaneous use by multiple goroutines. A nil
// *Notifier ignores events.
type Notifier struct {
	senders   []sender
	client    *http.Client
	log       *slog.Logger
	now       func() time.Time
	dedup     time.Duration
	threshold int
	window    time.Duration
	timeout   time.Duration
	drain     time.Duration
	queue     chan message
	running   atomic.Bool

	deduplicated, rateLimited, dropped atomic.Int64
	sent, failed                       map[string]*atomic.Int64 // by sender name; fixed at New

	mu        sync.Mutex // guards the fields below; never held during I/O
	limiter   *rate.Limiter
	upstreams map[string]*upstream
	lastSent  map[dedupKey]time.Time
	sweepAt   int    // len(lastSent) at which expired entries are swept
	held      int    // events the rate limit held back since the last queued one
	seq       uint64 // numbers the queued messages
}

// message is an Event on its way, numbered so that a service can tell a
// retry from a new message (Matrix's transaction ID).
type message struct {
	Event
	seq uint64
}

type dedupKey struct {
	kind, upstream string
	key            keypool.KeyID
}

// Stats counts what a Notifier did since New.
type Stats struct {
	// Sent and Failed count messages by notifier name (NameMatrix,
	// NameFeishu, NameWebhook); only configured notifiers appear.
	Sent, Failed map[string]int64
	// Deduplicated counts events held back as repeats within Config.Dedup.
	Deduplicated int64
	// RateLimited counts events held back by the rate limit.
	RateLimited int64
	// Dropped counts messages lost because the queue was full.
	Dropped int64
}

// New returns a Notifier for cfg, or a *ConfigError if cfg is not valid.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Notifier{
		client:    cfg.Client,
		log:       cfg.Logger,
		now:       cfg.Now,
		dedup:     or(cfg.Dedup, DefaultDedup),
		threshold: or(cfg.FailureThreshold, DefaultFailureThreshold),
		window:    or(cfg.FailureWindow, DefaultFailureWindow),
		timeout:   or(cfg.Timeout, DefaultTimeout),
		drain:     or(cfg.DrainTimeout, DefaultDrainTimeout),
		queue:     make(chan message, or(cfg.QueueSize, DefaultQueueSize)),
		sent:      map[string]*atomic.Int64{},
		failed:    map[string]*atomic.Int64{},
		limiter:   rate.NewLimiter(rate.Every(or(cfg.Every, DefaultEvery)), or(cfg.Burst, DefaultBurst)),
		upstreams: map[string]*upstream{},
		lastSent:  map[dedupKey]time.Time{},
		sweepAt:   64,
	}
	// No redirects, unless a given client says otherwise: Go's client
	// passes custom headers (the webhook's secrets) on to whatever host a
	// redirect names. A redirect is a failed send.
	if n.client == nil {
		n.client = &http.Client{Timeout: n.timeout}
	} else {
		c := *n.client
		n.client = &c
	}
	if n.client.CheckRedirect == nil {
		n.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	scrub := secret.NewScrubber(secretsOf(cfg)...)
	if m := cfg.Matrix; m != nil {
		n.senders = append(n.senders, &matrixSender{
			base:  strings.TrimRight(m.Homeserver, "/"),
			room:  m.Room,
			token: m.Token,
			txn:   "keypool-" + strconv.FormatInt(n.now().UnixNano(), 10),
			scrub: scrub,
		})
	}
	if f := cfg.Feishu; f != nil {
		n.senders = append(n.senders, &feishuSender{webhook: f.Webhook, secret: f.Secret, scrub: scrub})
	}
	if w := cfg.Webhook; w != nil {
		s := &webhookSender{url: w.URL, scrub: scrub}
		for _, name := range slices.Sorted(mapKeys(w.Headers)) {
			s.headers = append(s.headers, webhookHeader{name, w.Headers[name]})
		}
		n.senders = append(n.senders, s)
	}
	for _, s := range n.senders {
		n.sent[s.name()] = new(atomic.Int64)
		n.failed[s.name()] = new(atomic.Int64)
	}
	return n, nil
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Seed tells n the pool's keys, typically once at start (from the pool's
// snapshot), so that it knows each upstream's keys and their states. An
// upstream none of whose seeded keys is usable is reported down at once.
// Seed sends no key events: those come with state changes.
func (n *Notifier) Seed(keys []keypool.KeyInfo) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now() // under the lock: events are dated in the order they are counted
	var names []string
	for _, k := range keys {
		if !slices.Contains(names, k.Upstream) {
			names = append(names, k.Upstream)
		}
		n.upstream(k.Upstream).keys[k.ID] = k.State
	}
	for _, name := range names {
		n.checkUpstream(now, name, "")
	}
}

// StateChange records a key's new state and queues what a human should
// know of it. It never blocks.
func (n *Notifier) StateChange(e keypool.StateEvent) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now() // under the lock: events are dated in the order they are counted
	u := n.upstream(e.Upstream)
	prev, known := u.keys[e.Key]
	if !known { // a key first seen here, such as an organization clone
		prev = e.From
	}
	u.keys[e.Key] = e.To
	if e.Heard {
		return // the replica that made the change tells of it
	}
	if prev != e.To {
		switch e.To {
		case keypool.StateRevoked:
			n.offer(now, Event{Kind: KindKeyRevoked, Upstream: e.Upstream, Key: e.Key, Reason: e.Reason})
		case keypool.StateOverQuota:
			n.offer(now, Event{Kind: KindKeyOverQuota, Upstream: e.Upstream, Key: e.Key, Reason: e.Reason})
		}
	}
	n.checkUpstream(now, e.Upstream, e.Key)
}

// Checked ignores check results: the state changes they make come to
// StateChange.
func (n *Notifier) Checked(keypool.CheckResult) {}

// Attempt counts failed attempts (keypool.OutcomeServerError) and queues an
// upstream_failing message when an upstream has too many of them within the
// window. It never blocks.
func (n *Notifier) Attempt(e keypool.AttemptEvent) {
	if n == nil || e.Outcome != keypool.OutcomeServerError {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now() // under the lock: events are dated in the order they are counted
	if !n.upstream(e.Upstream).fails.add(now, n.threshold, n.window) {
		return
	}
	last := "no response"
	if e.Status != 0 {
		last = "status " + strconv.Itoa(e.Status)
	}
	n.offer(now, Event{Kind: KindUpstreamFailing, Upstream: e.Upstream,
		Reason: fmt.Sprintf("%d failed attempts within %v, last: %s", n.threshold, n.window, last)})
}

// upstream returns the upstream named name, adding it if it is new. It
// requires n.mu.
func (n *Notifier) upstream(name string) *upstream {
	u := n.upstreams[name]
	if u == nil {
		u = &upstream{keys: map[keypool.KeyID]keypool.State{}}
		n.upstreams[name] = u
	}
	return u
}

// checkUpstream queues upstream_down or upstream_recovered if the upstream
// named name went down or came back; changed is the key whose change may
// have brought it back, if any. It requires n.mu.
func (n *Notifier) checkUpstream(now time.Time, name string, changed keypool.KeyID) {
	u := n.upstream(name)
	switch down := u.allUnusable(); {
	case down && !u.down:
		u.down = true
		r := n.offer(now, Event{Kind: KindUpstreamDown, Upstream: name, Reason: u.summary()})
		u.downTold = r == queued || r == duplicate
		if r == queued {
			delete(n.lastSent, dedupKey{KindUpstreamRecovered, name, ""})
		}
	case !down && u.down:
		u.down = false
		if !u.downTold {
			return
		}
		u.downTold = false
		reason := fmt.Sprintf("%d of %d keys usable", u.counts().Usable, len(u.keys))
		if changed != "" {
			reason = fmt.Sprintf("key %s is %v", changed, u.keys[changed])
		}
		if n.offer(now, Event{Kind: KindUpstreamRecovered, Upstream: name, Reason: reason}) == queued {
			delete(n.lastSent, dedupKey{KindUpstreamDown, name, ""})
		}
	}
}

// offered is what became of an offered event.
type offered uint8

const (
	queued offered = iota
	duplicate
	rateLimited
	dropped
)

// offer deduplicates, rate-limits and queues e, without blocking. It
// requires n.mu.
func (n *Notifier) offer(now time.Time, e Event) offered {
	k := dedupKey{e.Kind, e.Upstream, e.Key}
	if last, ok := n.lastSent[k]; ok && now.Sub(last) < n.dedup {
		n.deduplicated.Add(1)
		return duplicate
	}
	if !n.limiter.AllowN(now, 1) {
		n.rateLimited.Add(1)
		n.held++
		return rateLimited
	}
	e.Reason = clip(e.Reason, 256)
	e.Time = now
	e.Suppressed = n.held
	n.seq++
	select {
	case n.queue <- message{Event: e, seq: n.seq}:
	default:
		n.dropped.Add(1)
		return dropped
	}
	n.held = 0
	n.lastSent[k] = now
	if len(n.lastSent) >= n.sweepAt {
		for k, t := range n.lastSent {
			if now.Sub(t) >= n.dedup {
				delete(n.lastSent, k)
			}
		}
		n.sweepAt = max(64, 2*len(n.lastSent))
	}
	return queued
}

// Run delivers queued messages to every configured notifier until ctx ends,
// then keeps delivering what is queued for at most Config.DrainTimeout
// (sends under way included) and returns nil. Failed sends are logged at
// Warn and counted, never retried. Run must not be called again until it
// returned.
func (n *Notifier) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("notify: Run is already running")
	}
	defer n.running.Store(false)

	// Sends run on base, which outlives ctx by the drain time.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		select {
		case <-base.Done():
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(n.drain)
		defer t.Stop()
		select {
		case <-base.Done():
		case <-t.C:
			cancel()
		}
	}()

	for {
		if ctx.Err() == nil {
			select {
			case m := <-n.queue:
				n.deliver(base, m)
			case <-ctx.Done():
			}
			continue
		}
		select {
		case m := <-n.queue:
			if base.Err() != nil {
				n.log.LogAttrs(base, slog.LevelWarn, "notify: messages left undelivered at shutdown",
					slog.Int("messages", len(n.queue)+1))
				return nil
			}
			n.deliver(base, m)
		default:
			return nil
		}
	}
}

// deliver sends m to every notifier at once and waits for all of them.
func (n *Notifier) deliver(ctx context.Context, m message) {
	now := n.now()
	if len(n.senders) == 1 {
		n.sendOne(ctx, n.senders[0], now, m)
		return
	}
	var wg sync.WaitGroup
	for _, s := range n.senders {
		wg.Go(func() { n.sendOne(ctx, s, now, m) })
	}
	wg.Wait()
}

func (n *Notifier) sendOne(ctx context.Context, s sender, now time.Time, m message) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	err := s.send(ctx, n.client, now, m)
	if err == nil {
		n.sent[s.name()].Add(1)
		return
	}
	n.failed[s.name()].Add(1)
	attrs := []slog.Attr{slog.String("notifier", s.name()), slog.String("kind", m.Kind),
		slog.String("upstream", m.Upstream)}
	if se, ok := err.(*sendError); ok && se.status != 0 {
		attrs = append(attrs, slog.Int("status", se.status))
	}
	attrs = append(attrs, slog.String("error", err.Error()))
	n.log.LogAttrs(ctx, slog.LevelWarn, "notify: send failed", attrs...)
}

// Stats returns the counters.
func (n *Notifier) Stats() Stats {
	if n == nil {
		return Stats{}
	}
	st := Stats{
		Sent:         make(map[string]int64, len(n.sent)),
		Failed:       make(map[string]int64, len(n.failed)),
		Deduplicated: n.deduplicated.Load(),
		RateLimited:  n.rateLimited.Load(),
		Dropped:      n.dropped.Load(),
	}
	for name, c := range n.sent {
		st.Sent[name] = c.Load()
	}
	for name, c := range n.failed {
		st.Failed[name] = c.Load()
	}
	return st
}

// String names the configured notifiers and the settings, never a secret.
func (n *Notifier) String() string {
	if n == nil {
		return "notify.Notifier(nil)"
	}
	names := make([]string, len(n.senders))
	for i, s := range n.senders {
		names[i] = s.name()
	}
	return fmt.Sprintf("notify.Notifier{notifiers:%v dedup:%v threshold:%d window:%v timeout:%v}",
		names, n.dedup, n.threshold, n.window, n.timeout)
}

// Format prints n as String does, whatever the verb.
func (n *Notifier) Format(f fmt.State, _ rune) { io.WriteString(f, n.String()) }

// LogValue logs n as String does.
func (n *Notifier) LogValue() slog.Value { return slog.StringValue(n.String()) }
