package keypool

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Option configures New. Options that get bad input make New return an error.
type Option interface {
	apply(*config) error
}

type optionFunc func(*config) error

func (f optionFunc) apply(c *config) error { return f(c) }

type config struct {
	upstreams   []Upstream
	base        http.RoundTripper
	policy      Policy
	observers   observers
	logger      *slog.Logger
	maxAttempts int
	maxWait     time.Duration
	retryTime   time.Duration
	backoffBase time.Duration
	backoffCap  time.Duration
	maxBody     int64
	order       UpstreamOrder
	store       StateStore
	pool        poolConfig
}

func defaultConfig() config {
	return config{
		policy:      DefaultPolicy(),
		maxAttempts: 4,
		maxWait:     20 * time.Second,
		retryTime:   DefaultRetryTime,
		backoffBase: 200 * time.Millisecond,
		backoffCap:  5 * time.Second,
		maxBody:     32 << 20,
		pool: poolConfig{
			now:          time.Now,
			trialsFirst:  true,
			probeLimit:   4,
			maxBuckets:   64,
			failures:     2,
			failCooldown: 2 * time.Second,
			maxCooldown:  time.Minute,
		},
	}
}

// WithUpstream adds an upstream at baseURL (such as
// "https://api.openai.com/v1") with a comma-separated list of keys, the
// OPENAI_KEY convention. Upstreams are tried in the order they are added.
func WithUpstream(baseURL, keys string) Option {
	return optionFunc(func(c *config) error {
		ks, err := ParseKeys(keys)
		if err != nil {
			return err
		}
		if len(ks) == 0 {
			return fmt.Errorf("keypool: upstream %s: no key given", redactURL(baseURL))
		}
		c.upstreams = append(c.upstreams, Upstream{BaseURL: baseURL, Keys: ks})
		return nil
	})
}

// WithUpstreams adds fully described upstreams, in priority order.
func WithUpstreams(us ...Upstream) Option {
	return optionFunc(func(c *config) error {
		c.upstreams = append(c.upstreams, us...)
		return nil
	})
}

// UpstreamOrder is the order in which a request tries the upstreams.
type UpstreamOrder uint8

const (
	// OrderPriority tries upstreams in the order they were given: a later
	// one only when no key of an earlier one can take the request. The
	// default (openai-api-route's lb_policy "order").
	OrderPriority UpstreamOrder = iota
	// OrderRandom shuffles the upstreams for each request, spreading
	// requests over them; failover then goes through the rest in that
	// shuffled order (openai-api-route's lb_policy "random"). Which key of
	// an upstream is chosen stays the pool's choice.
	OrderRandom
)

// WithUpstreamOrder sets the order in which a request tries the upstreams;
// the default is OrderPriority.
func WithUpstreamOrder(o UpstreamOrder) Option {
	return optionFunc(func(c *config) error {
		if o > OrderRandom {
			return fmt.Errorf("keypool: unknown upstream order %d", o)
		}
		c.order = o
		return nil
	})
}

// WithBase sets the RoundTripper that carries each attempt. nil means a
// clone of http.DefaultTransport that keeps up to 256 idle connections per
// host (the default's 2 would reconnect under any real concurrency).
func WithBase(rt http.RoundTripper) Option {
	return optionFunc(func(c *config) error { c.base = rt; return nil })
}

// WithPolicy sets what upstream answers mean, for requests and for the
// Checker's probes alike; nil means DefaultPolicy().
func WithPolicy(p Policy) Option {
	return optionFunc(func(c *config) error {
		if p == nil {
			p = DefaultPolicy()
		}
		c.policy = p
		return nil
	})
}

// WithObserver adds an observer of attempts and state changes; it may be given
// more than once. nil is ignored.
func WithObserver(o Observer) Option {
	return optionFunc(func(c *config) error {
		if o != nil {
			c.observers = append(c.observers, o)
		}
		return nil
	})
}

// WithLogger sets where failovers and state changes are logged, at debug and
// info level, by key ID. nil (the default) logs nothing.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) error { c.logger = l; return nil })
}

// WithStateStore sets where the pool keeps the state of its keys beyond its
// process, so that a restart (or another replica) starts from what it knew:
// which keys are revoked, over quota or disabled and why, when each was
// last checked, what checks and answers taught of each (trial tier,
// organization and scope, models, models it may not stream, organization
// clones), and rests after failures that have not ended. nil (the default)
// keeps them in memory only.
//
// New loads the store's states once, waiting at most 5s, and applies those
// of keys it holds in the same upstream; any other state is ignored, as is
// a field that does not decode. A restored state sends no StateEvent. When
// Load fails or takes too long, New still succeeds, starts as without a
// store, and logs why once (WithLogger): a store's errors must hold no
// secret. From then on every change of a key's state is handed to Save (at
// most once per change, and never for an answer that changes nothing),
// from the goroutine that made it, without the pool's lock held.
//
// A Checker does not check a key restored with a check at start, but when
// its recheck is due (WithRecheckEvery), counted from that check, or on
// Recheck.
//
// When s is also a StateSubscriber, New subscribes after the load, and the
// pool applies the states other replicas save as it applies restored ones,
// from the store's goroutines, taking its lock briefly: of two states of a
// key the later one (by Updated) wins, an older or repeated one changes
// nothing, and an applied state is never saved again. A change it makes to
// a key's state (revoked, over quota, disabled, enabled, resting) sends a
// StateEvent, so that metrics and notifications see it: observers on every
// replica hear of it, once from the replica that made it and once from
// each that applied it. A key another replica checked is not checked again
// before its recheck is due, counted from that check.
//
// When s is also a BudgetStore, the pools that share it spend one
// rate-limit budget per scope and model together, through leases (see
// BudgetStore): together they send about what the upstream allows, where
// each alone would send it all. A Spend that fails never fails a request:
// the pool spends alone for a few seconds and asks again.
func WithStateStore(s StateStore) Option {
	return optionFunc(func(c *config) error { c.store = s; return nil })
}

// WithMaxAttempts bounds the attempts of one request, from 1 to 16; the
// default is 4.
func WithMaxAttempts(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 || n > maxTried {
			return fmt.Errorf("keypool: max attempts must be from 1 to %d, not %d", maxTried, n)
		}
		c.maxAttempts = n
		return nil
	})
}

// WithMaxWait bounds how long a request waits for a key to free up when none
// is usable (a cooldown ends, a busy key answers). 0 means never wait; the
// default is 20s. The caller's context bounds the wait too.
func WithMaxWait(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d < 0 {
			return errors.New("keypool: max wait must not be negative")
		}
		c.maxWait = d
		return nil
	})
}

// DefaultRetryTime is how long after its start a request may still begin a
// new attempt, unless WithRetryTime says otherwise.
const DefaultRetryTime = 2 * time.Minute

// WithRetryTime bounds the time after which a request starts no new attempt;
// the default is DefaultRetryTime. It does not cut an attempt short.
func WithRetryTime(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		if d <= 0 {
			return errors.New("keypool: retry time must be positive")
		}
		c.retryTime = d
		return nil
	})
}

// WithBackoff sets the exponential backoff (with 20% jitter) between attempts
// after server errors: base for the first, doubling up to cap. Failover after
// a key's own error (rate limit, quota, revoked) does not wait. Defaults 200ms
// and 5s.
func WithBackoff(base, cap time.Duration) Option {
	return optionFunc(func(c *config) error {
		if base <= 0 || cap < base {
			return errors.New("keypool: backoff needs 0 < base <= cap")
		}
		c.backoffBase, c.backoffCap = base, cap
		return nil
	})
}

// WithMaxBodyBuffer bounds the request body kept for replay; a larger body
// gets one attempt (or is replayed through Request.GetBody when it has one).
// The default is 32 MiB.
func WithMaxBodyBuffer(n int64) Option {
	return optionFunc(func(c *config) error {
		if n < 0 {
			return errors.New("keypool: max body buffer must not be negative")
		}
		c.maxBody = n
		return nil
	})
}

// WithTrialsFirst sets whether trial keys are spent before paid ones (the
// default, true); embeddings never go to trial keys first.
func WithTrialsFirst(on bool) Option {
	return optionFunc(func(c *config) error { c.pool.trialsFirst = on; return nil })
}

// WithCheckedKeysOnly sets whether keys wait for their first check (see
// Checker) before they take requests. With it on and no Checker running no
// key is ever used. The default, false, uses unchecked keys at once.
func WithCheckedKeysOnly(on bool) Option {
	return optionFunc(func(c *config) error { c.pool.checkedOnly = on; return nil })
}

// WithProbeLimit sets how many requests a key may have in flight before its
// first answer states its limits; the default is 4. It keeps a burst from
// flooding a key whose limits are not known yet.
func WithProbeLimit(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 {
			return errors.New("keypool: probe limit must be at least 1")
		}
		c.pool.probeLimit = int64(n)
		return nil
	})
}

// WithFailureCooldown sets when a failing key rests: after threshold
// consecutive server errors it cools for base, doubling with each further
// failure up to max. Defaults 2, 2s and 1m.
func WithFailureCooldown(threshold int, base, max time.Duration) Option {
	return optionFunc(func(c *config) error {
		if threshold < 1 || base <= 0 || max < base {
			return errors.New("keypool: failure cooldown needs threshold >= 1 and 0 < base <= max")
		}
		c.pool.failures, c.pool.failCooldown, c.pool.maxCooldown = threshold, base, max
		return nil
	})
}

// WithMaxModels bounds the models an upstream tracks limits for at once
// (default 64); past it, the least recently used idle model is forgotten.
func WithMaxModels(n int) Option {
	return optionFunc(func(c *config) error {
		if n < 1 {
			return errors.New("keypool: max models must be at least 1")
		}
		c.pool.maxBuckets = n
		return nil
	})
}

// withClock sets the clock the pool reads (nil means time.Now), for tests
// that feed times as data. It does not drive the transport's timers
// (attempt and idle timeouts, backoff, waits for a key, the checker's
// pacing), which is why it is not exported: tests that need those run under
// testing/synctest.
func withClock(now func() time.Time) Option {
	return optionFunc(func(c *config) error {
		if now == nil {
			now = time.Now
		}
		c.pool.now = now
		return nil
	})
}
