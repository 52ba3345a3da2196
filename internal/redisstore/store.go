// Package redisstore keeps a pool's key states in Redis, so that replicas
// over the same keys share what each learns (a revoked key found by one is
// skipped by all) and a restarted replica starts from what the others know.
//
// In Redis, under a prefix (DefaultPrefix unless told), a Store keeps two
// hashes, both by key ID: PREFIX+"states" holds each key's keypool.KeyState
// as JSON, and PREFIX+"updated" the time it was made (Updated, in
// nanoseconds, zero-padded so that strings compare as numbers). A small Lua
// script writes a batch: of two states of one key the later Updated wins, at
// equal times the one written last, and every state written is published on
// the channel PREFIX+"states". Neither holds a secret.
//
// Budgets that replicas spend together (keypool.BudgetStore) are hashes
// named PREFIX+"budget:"+the budget's name as the pool gives it (upstream,
// scope and model joined by NUL bytes; no secret): limit, rem, at, slot,
// win and end, times in microseconds since 1970 by Redis's own clock (see
// Spend). Each expires twice its time to refill after its last spend (a
// minute at least, a week at most), so that abandoned budgets vanish.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/keystates"
	"github.com/keypool/keypool/internal/secret"
)

// Defaults of Options.
const (
	DefaultPrefix       = "keypool:"
	DefaultMaxPending   = 100000
	DefaultBatch        = 256
	DefaultLoadTimeout  = 1500 * time.Millisecond
	DefaultDrainTimeout = 30 * time.Second
	DefaultCloseRetry   = 2 * time.Second
)

// Options configures a Store; zero fields take the defaults.
type Options struct {
	// Prefix starts the name of every Redis key the Store uses (default
	// DefaultPrefix). Pools that share keys share a prefix.
	Prefix string
	// MaxPending bounds the key states waiting to be written, the batch
	// being written included (default DefaultMaxPending). One waits per key
	// at most, so it is reached only by more keys than that while Redis is
	// down; a state of one more key is then dropped and counted.
	MaxPending int
	// Batch bounds the key states of one script call (default
	// DefaultBatch).
	Batch int
	// Linger is how long the first change waits for more before they are
	// written together (default 0: not at all; changes made while a batch
	// is written go together into the next). Every millisecond of it is a
	// millisecond later that the other replicas hear of the change.
	Linger time.Duration
	// RetryMin and RetryMax bound the wait between tries while Redis does
	// not answer (defaults 100ms and 5s, doubling), for writes and for the
	// subscription alike.
	RetryMin, RetryMax time.Duration
	// LoadTimeout bounds Load (default DefaultLoadTimeout): a Redis that
	// does not answer must not hold start-up.
	LoadTimeout time.Duration
	// DrainTimeout bounds how long Run, once its context has ended, keeps
	// writing what waits to a Redis that takes writes (default
	// DefaultDrainTimeout); CloseRetry how long it tries one that fails
	// (default DefaultCloseRetry).
	DrainTimeout, CloseRetry time.Duration
	// Logger receives outages (once each), recoveries and data skipped;
	// nil means silent. It never receives the password.
	Logger *slog.Logger
}

// Stats counts what a Store did since it was made.
type Stats struct {
	Pending  int    // key states waiting now, the batch being written included
	Written  uint64 // key states sent to Redis (an older one than Redis holds is sent, and kept out by the script)
	Dropped  uint64 // key states lost: beyond MaxPending, saved after the Store closed, or left when the drain gave up
	Received uint64 // key states heard of (published, or read at a resync) and given to apply
	Skipped  uint64 // entries and messages that did not decode, budgets reset for it among them
	Errors   uint64 // Redis commands that failed
	Outages  uint64 // times Redis went out of reach (the first error after it answered)
	Resyncs  uint64 // whole reads of the states after a (re)subscription
	Refilled uint64 // key states written again because a resync found Redis without them (it restarted empty)

	Spends      uint64 // budget spends Redis answered
	SpendErrors uint64 // budget spends that failed (counted in Errors too unless cut short by a cancelled context)
}

// Store is a keypool.StateSubscriber over Redis. Save never waits for
// Redis: it keeps the latest state per key in memory (bounded by
// MaxPending), and Run writes them in batches and keeps what Redis refused
// until it answers. Run also listens on the channel, and hands every state
// heard of to the function given to Subscribe; after every (re)subscription
// it reads all the states again (a resync), so that nothing published while
// it was away is missed.
//
// Make one with New, which starts nothing; give it to
// keypool.WithStateStore; run Run in a goroutine of its own, and end Run's
// context once the pool no longer changes, so that what waits is written.
// It is safe for simultaneous use by multiple goroutines.
type Store struct {
	client  *redis.Client
	shown   string // the URL, its password redacted
	scrub   *secret.Scrubber
	opt     Options
	log     *slog.Logger
	states  string // the hash of states
	updated string // the hash of Updated times
	channel string
	budgets string           // the prefix of budget keys
	queue   *keystates.Queue // closed once the drain is over: Save drops
	ran     atomic.Bool
	apply   atomic.Pointer[func(keypool.KeyState)]
	// downSince is when the current outage began (Unix nanoseconds; 0:
	// Redis answers): the outage is logged once, and only a command that
	// started after it began can end it.
	downSince atomic.Int64

	received, skipped, errs, outages, resyncs atomic.Uint64
	spends, spendErrs, refilled               atomic.Uint64
	known                                     *known // the latest state of each key, to write again into an emptied Redis
}

// New returns a Store over the Redis rawURL names: redis://[:PASSWORD@]HOST:PORT/DB,
// or rediss:// for TLS. It starts nothing and connects nowhere. Its error
// never holds the password.
func New(rawURL secret.String, opt Options) (*Store, error) {
	u, err := url.Parse(rawURL.Reveal())
	if err != nil {
		return nil, errors.New("redisstore: the store URL does not parse")
	}
	pw, _ := u.User.Password()
	scrub := secret.NewScrubber(pw, rawURL.Reveal())
	ropt, err := redis.ParseURL(rawURL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("redisstore: %s", scrub.Scrub(err.Error()))
	}
	ropt.DisableIdentity = true // no CLIENT SETINFO: older servers refuse it
	ropt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	ropt.DialTimeout = 2 * time.Second
	// Without it go-redis ignores the deadlines of contexts, and a Redis
	// that takes connections and never answers holds Load (start-up) and
	// the drain (shutdown) for its own ReadTimeout on every try.
	ropt.ContextTimeoutEnabled = true
	ropt.MaxRetries = -1 // Run retries, with its own backoff
	// One dial per try: go-redis's default of five, 100 ms apart, made a
	// Spend to a Redis that refuses connections wait out its deadline, and
	// a request waiting for its grant with it. Run and Spend's callers
	// retry with their own backoff.
	ropt.DialerRetries = 1
	if opt.Prefix == "" {
		opt.Prefix = DefaultPrefix
	}
	if opt.MaxPending <= 0 {
		opt.MaxPending = DefaultMaxPending
	}
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.RetryMin <= 0 {
		opt.RetryMin = 100 * time.Millisecond
	}
	if opt.RetryMax < opt.RetryMin {
		opt.RetryMax = max(5*time.Second, opt.RetryMin)
	}
	if opt.LoadTimeout <= 0 {
		opt.LoadTimeout = DefaultLoadTimeout
	}
	if opt.DrainTimeout <= 0 {
		opt.DrainTimeout = DefaultDrainTimeout
	}
	if opt.CloseRetry <= 0 {
		opt.CloseRetry = DefaultCloseRetry
	}
	s := &Store{client: redis.NewClient(ropt), shown: secret.RedactURL(u), scrub: scrub, opt: opt, log: opt.Logger,
		states: opt.Prefix + "states", updated: opt.Prefix + "updated", channel: opt.Prefix + "states",
		budgets: opt.Prefix + "budget:", queue: keystates.NewQueue(opt.MaxPending), known: newKnown(opt.MaxPending)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// String describes the Store by its URL, the password left out.
func (s *Store) String() string { return s.shown }

// Addr is the Store's URL, the password shown as a placeholder.
func (s *Store) Addr() string { return s.shown }

// Stats returns the Store's counters.
func (s *Store) Stats() Stats {
	return Stats{Pending: s.queue.Pending(), Written: s.queue.Written(), Dropped: s.queue.Dropped(),
		Received: s.received.Load(), Skipped: s.skipped.Load(), Errors: s.errs.Load(),
		Outages: s.outages.Load(), Resyncs: s.resyncs.Load(), Refilled: s.refilled.Load(), Spends: s.spends.Load(), SpendErrors: s.spendErrs.Load()}
}

// Subscribe sets the function Run gives every state it hears of. Call it
// before Run (keypool.New does, after Load); without it Run only writes.
func (s *Store) Subscribe(apply func(keypool.KeyState)) {
	if apply != nil {
		s.apply.Store(&apply)
	}
}

// Save queues st to be written, replacing a waiting state of its key unless
// that one is newer. It never blocks: beyond MaxPending keys, or once the
// Store closed, st is dropped and counted. A state without an ID or an
// Updated time is dropped too: the script could not order it.
func (s *Store) Save(st keypool.KeyState) {
	if st.ID == "" || st.Updated.IsZero() {
		s.queue.Drop()
		return
	}
	s.known.note(st)
	s.queue.Put(st)
}

// failed counts err, a failed Redis command, and logs it when it begins an
// outage: once per outage, not per error. A command cut short by the end of
// ctx is not Redis's failure.
func (s *Store) failed(ctx context.Context, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	s.errs.Add(1)
	if s.downSince.CompareAndSwap(0, max(time.Now().UnixNano(), 1)) {
		s.outages.Add(1)
		s.log.Warn("redisstore: redis out of reach; key states wait in memory and are retried, replicas do not hear of each other until it answers",
			slog.String("store", s.shown), slog.String("op", what), slog.String("error", s.scrub.Scrub(err.Error())))
	}
}

// answered ends an outage, if there is one, with a log line, for a command
// that Redis answered, started at start. One that started before the
// outage began (it was in flight when Redis died) says nothing of it.
func (s *Store) answered(start time.Time) {
	if since := s.downSince.Load(); since != 0 && start.UnixNano() >= since && s.downSince.CompareAndSwap(since, 0) {
		s.log.Info("redisstore: redis answers again", slog.String("store", s.shown), slog.Int("pending", s.Stats().Pending))
	}
}

// Close closes the connections to Redis. Run calls it when it returns; call
// it only for a Store that never ran.
func (s *Store) Close() error { return s.client.Close() }

// QuietClientLog stops go-redis's own logging, which goes to stderr for
// every failed dial, so that an outage is logged once, by the Store. It
// sets go-redis's package-wide logger: the composition root calls it, once,
// before any Store runs.
func QuietClientLog() { redis.SetLogger(quiet{}) }

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
