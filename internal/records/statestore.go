package records

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/keystates"
)

// StateStoreOptions configures a StateStore; zero fields take the defaults.
type StateStoreOptions struct {
	// MaxPending bounds the key states waiting to be written, the batch
	// being written included (default 100000). One waits per key at most,
	// so this is reached only by a pool of more keys than that while the
	// store is down; a state of one more key is then dropped and counted.
	MaxPending int
	// Batch bounds the key states of one transaction (default 256).
	Batch int
	// Linger is how long the first change waits for more before they are
	// written together (default 100ms; negative: not at all). A check
	// pass, or an upstream that revokes many keys at once, changes many
	// states within moments.
	Linger time.Duration
	// RetryMin and RetryMax bound the wait between tries of a store that
	// refused a write (defaults 100ms and 10s, doubling). What it refused
	// waits, merged with the changes made meanwhile, until it is written
	// or the StateStore closes.
	RetryMin, RetryMax time.Duration
	// LoadTimeout bounds Load (default 1.5s): a store that does not answer
	// must not hold start-up (a PostgreSQL that takes connections and
	// never answers delays serve's start by this much, no more; a live one
	// answers in milliseconds). The pool then starts without the states.
	LoadTimeout time.Duration
	// DrainTimeout bounds how long Run, once its context has ended, keeps
	// writing what waits to a store that takes writes (default 30s).
	DrainTimeout time.Duration
	// CloseRetry bounds how long Run, once its context has ended, keeps
	// trying a store whose last write failed (default 2s), as
	// WriterOptions.CloseRetry does.
	CloseRetry time.Duration
	// LogEvery is how often dropped states are logged, once per interval
	// with their count (default 10s).
	LogEvery time.Duration
	// Logger receives what was loaded and the store's failures; nil means
	// silent.
	Logger *slog.Logger
}

// Defaults of StateStoreOptions.
const (
	DefaultMaxPending  = 100000
	DefaultLoadTimeout = 1500 * time.Millisecond
)

// StateStoreStats counts what a StateStore did since it was made.
type StateStoreStats struct {
	Pending int    // key states waiting now, the batch being written included
	Written uint64 // key states stored
	// Dropped counts key states lost: beyond MaxPending, given after the
	// StateStore closed, or left when the drain gave up.
	Dropped uint64
	Errors  uint64 // writes the store refused
}

// StateStore is a keypool.StateStore over a Store: it loads the key states
// saved before, and writes the pool's changes in the background, so that a
// restarted keypool serve starts from what it knew. Save never waits for
// the store: it keeps the latest state per key in memory (bounded by
// MaxPending), and Run writes them in batches, and keeps what a store that
// is down refuses until it answers. Make one with NewStateStore, which
// starts nothing; give it to keypool.WithStateStore; run Run in a goroutine
// of its own, and end Run's context once the pool no longer changes, so
// that what waits is written. It is safe for simultaneous use by multiple
// goroutines.
type StateStore struct {
	store Store
	opt   StateStoreOptions
	log   *slog.Logger
	queue *keystates.Queue // closed once the drain is over: Save drops
	ran   atomic.Bool

	errors atomic.Uint64

	droppedLogged uint64 // Run's: dropped count already logged
}

// NewStateStore returns a StateStore over store. It starts nothing.
func NewStateStore(store Store, opt StateStoreOptions) *StateStore {
	if opt.MaxPending <= 0 {
		opt.MaxPending = DefaultMaxPending
	}
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.Linger == 0 {
		opt.Linger = 100 * time.Millisecond
	}
	if opt.RetryMin <= 0 {
		opt.RetryMin = 100 * time.Millisecond
	}
	if opt.RetryMax < opt.RetryMin {
		opt.RetryMax = max(10*time.Second, opt.RetryMin)
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
	if opt.LogEvery <= 0 {
		opt.LogEvery = 10 * time.Second
	}
	s := &StateStore{store: store, opt: opt, log: opt.Logger, queue: keystates.NewQueue(opt.MaxPending)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// String describes the StateStore by its store, without secrets.
func (s *StateStore) String() string { return fmt.Sprintf("key states in %v", s.store) }

// Load returns the key states stored, within LoadTimeout and ctx. Rows that
// do not decode are skipped and logged; so is how many states it loaded,
// with those of keys held back (over quota, revoked, disabled) counted by
// state, and listed by ID at debug level.
func (s *StateStore) Load(ctx context.Context) ([]keypool.KeyState, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.LoadTimeout)
	defer cancel()
	states, skipped, err := s.store.LoadKeyStates(ctx)
	if err != nil {
		return nil, err
	}
	if len(skipped) > 0 {
		const shown = 3
		why := make([]string, 0, shown)
		for _, e := range skipped[:min(len(skipped), shown)] {
			why = append(why, e.Error())
		}
		s.log.Warn("records: key states skipped: they do not decode (another program's rows, or a format this keypool does not know)",
			slog.Int("skipped", len(skipped)), slog.String("first", strings.Join(why, "; ")))
	}
	attrs := []any{slog.Int("states", len(states))}
	held := map[keypool.State]int{}
	for _, st := range states {
		if !st.State.Usable() {
			held[st.State]++
			s.log.Debug("key state loaded", slog.String("key", string(st.ID)), slog.String("state", st.State.String()))
		}
	}
	for _, state := range slices.Sorted(maps.Keys(held)) {
		attrs = append(attrs, slog.Int(state.String(), held[state]))
	}
	s.log.Info("key states loaded", attrs...)
	return states, nil
}

// Save queues st to be written, replacing a waiting state of its key unless
// that one is newer (a later Updated). It never blocks: beyond MaxPending
// keys, or once the StateStore closed, st is dropped and counted.
func (s *StateStore) Save(st keypool.KeyState) {
	if st.ID == "" {
		s.queue.Drop()
		return
	}
	s.queue.Put(st)
}

// Stats returns the StateStore's counters.
func (s *StateStore) Stats() StateStoreStats {
	return StateStoreStats{Pending: s.queue.Pending(), Written: s.queue.Written(), Dropped: s.queue.Dropped(), Errors: s.errors.Load()}
}

// Run writes the key states Save queues, in batches, until ctx ends. Then it
// writes what waits, and what Save is given meanwhile: a store that takes
// writes gets DrainTimeout, one whose last write failed at most CloseRetry.
// Then Save drops what it is given. What is still unwritten is dropped,
// counted and logged, and Run returns an error saying how many states were
// not written; nil once everything is written. A StateStore runs once: a
// second Run returns an error at once.
func (s *StateStore) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("records: StateStore.Run called twice")
	}
	logTick := time.NewTicker(s.opt.LogEvery)
	defer logTick.Stop()
	var (
		failing bool
		lastErr error
	)
	for {
		if ctx.Err() != nil {
			return s.drain(ctx, failing, lastErr)
		}
		select {
		case <-ctx.Done():
			continue
		case <-logTick.C:
			s.logDropped()
			continue
		case <-s.queue.Wake():
		}
		s.linger(ctx)
		wait := s.opt.RetryMin
		for {
			err := s.writePending(ctx)
			if ctx.Err() != nil {
				break // cut short by the shutdown: the drain writes it
			}
			lastErr, failing = err, err != nil
			if !failing {
				break
			}
			if s.errors.Load() == 1 || wait >= s.opt.RetryMax {
				s.log.Warn("records: store refused key states; keeping them and trying again",
					slog.Int("states", s.Stats().Pending), slog.Duration("retry_in", wait), slog.String("error", lastErr.Error()))
			}
			select {
			case <-logTick.C: // a long outage: drops beyond MaxPending
				s.logDropped()
			default:
			}
			if !keystates.Sleep(ctx, wait) {
				break
			}
			wait = min(2*wait, s.opt.RetryMax)
		}
	}
}

// linger waits up to Linger, or until ctx ends, for more changes to join
// the first.
func (s *StateStore) linger(ctx context.Context) {
	if s.opt.Linger > 0 {
		keystates.Sleep(ctx, s.opt.Linger)
	}
}

// writePending writes what waits, batch by batch, each within 30s and ctx.
// What a failed write did not store waits again (behind any newer change of
// its key) and its error is returned. A write cut short by the end of ctx
// is not counted as the store's error.
func (s *StateStore) writePending(ctx context.Context) error {
	todo := s.queue.Take()
	for len(todo) > 0 {
		batch := todo[:min(len(todo), s.opt.Batch)]
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.store.SaveKeyStates(wctx, batch)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.errors.Add(1)
			}
			s.queue.PutBack(todo)
			return err
		}
		s.queue.Done(len(batch))
		todo = todo[len(batch):]
	}
	return nil
}

// drain writes what waits, and what comes meanwhile, once Run's context
// has ended: within DrainTimeout, and while the store fails, within
// CloseRetry of the first failure. Then it closes the StateStore, and drops
// what is left.
func (s *StateStore) drain(ctx context.Context, failing bool, lastErr error) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opt.DrainTimeout)
	defer cancel()
	var giveUpAt time.Time // while failing: CloseRetry after the failures began
	wait := s.opt.RetryMin
	for {
		if failing && giveUpAt.IsZero() {
			giveUpAt = time.Now().Add(s.opt.CloseRetry)
		}
		if lost, closed := s.queue.CloseIfIdle(dctx.Err() != nil || failing && !time.Now().Before(giveUpAt)); closed {
			return s.lose(lost, dctx, lastErr)
		}
		if lastErr = s.writeWithin(dctx, giveUpAt); lastErr == nil {
			failing, giveUpAt, wait = false, time.Time{}, s.opt.RetryMin
			continue
		}
		if failing { // again: pause first
			keystates.Sleep(dctx, min(wait, time.Until(giveUpAt)))
			wait = min(2*wait, s.opt.RetryMax)
		}
		failing = true
	}
}

// writeWithin is writePending within ctx and, unless it is zero, deadline.
func (s *StateStore) writeWithin(ctx context.Context, deadline time.Time) error {
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	return s.writePending(ctx)
}

// lose logs the n states the drain dropped (the queue counted them), and
// returns Run's error for them (nil for none).
func (s *StateStore) lose(n int, drain context.Context, lastErr error) error {
	s.logDropped()
	if n == 0 {
		return nil
	}
	attrs := []any{slog.Int("states", n)}
	if lastErr != nil {
		attrs = append(attrs, slog.String("error", lastErr.Error()))
	}
	s.log.Warn("records: store out of reach at shutdown; key states lost (their keys start from an older state next time)", attrs...)
	switch {
	case drain.Err() != nil:
		return fmt.Errorf("records: %d key states not written at shutdown: the store took longer than %v: %w", n, s.opt.DrainTimeout, context.DeadlineExceeded)
	case lastErr != nil && !errors.Is(lastErr, context.DeadlineExceeded) && !errors.Is(lastErr, context.Canceled):
		return fmt.Errorf("records: %d key states not written at shutdown: the store refused them: %w", n, lastErr)
	default:
		return fmt.Errorf("records: %d key states not written at shutdown: the store did not answer within %v", n, s.opt.CloseRetry)
	}
}

// logDropped logs the states dropped since it last did, if any. Run's only.
func (s *StateStore) logDropped() {
	d := s.queue.Dropped()
	if d == s.droppedLogged {
		return
	}
	s.log.Warn("records: dropped key states (too many keys waiting for the store, or saved after shutdown)",
		slog.Uint64("dropped", d-s.droppedLogged), slog.Uint64("dropped_total", d))
	s.droppedLogged = d
}
