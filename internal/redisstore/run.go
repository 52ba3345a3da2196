package redisstore

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/keystates"
)

// Load returns the key states Redis holds, within LoadTimeout and ctx.
// Entries that do not decode are skipped, counted and logged by key ID.
func (s *Store) Load(ctx context.Context) ([]keypool.KeyState, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.LoadTimeout)
	defer cancel()
	start := time.Now()
	states, err := s.readAll(ctx)
	if err != nil {
		s.failed(ctx, "load", err)
		return nil, errors.New("redisstore: load: " + s.scrub.Scrub(err.Error()))
	}
	s.answered(start)
	held := map[keypool.State]int{}
	for _, st := range states {
		if !st.State.Usable() {
			held[st.State]++
		}
	}
	attrs := []any{slog.String("store", s.shown), slog.Int("states", len(states))}
	for _, state := range slices.Sorted(maps.Keys(held)) {
		attrs = append(attrs, slog.Int(state.String(), held[state]))
	}
	s.log.Info("key states loaded", attrs...)
	return states, nil
}

// readAll reads the hash of states, skipping (and logging) what does not
// decode.
func (s *Store) readAll(ctx context.Context) ([]keypool.KeyState, error) {
	all, err := s.client.HGetAll(ctx, s.states).Result()
	if err != nil {
		return nil, err
	}
	states := make([]keypool.KeyState, 0, len(all))
	for _, id := range slices.Sorted(maps.Keys(all)) {
		st, err := decode(id, []byte(all[id]))
		if err != nil {
			s.skip(err)
			continue
		}
		states = append(states, st)
	}
	return states, nil
}

// skip counts an entry or message that did not decode, and logs it: err
// names the key by its ID only.
func (s *Store) skip(err error) {
	s.skipped.Add(1)
	s.log.Warn("redisstore: key state skipped: it does not decode (another program's data, or a format this keypool does not know)",
		slog.String("why", err.Error()))
}

// Run writes the key states Save queues, and, once Subscribe was called,
// listens for the states the other replicas save and gives them to its
// function, until ctx ends. While Redis does not answer it retries both
// with backoff, logging once per outage. Once ctx ends it writes what waits
// (see Options.DrainTimeout and CloseRetry), closes the connections, and
// returns an error saying how many states it could not write; nil once
// everything is written. A Store runs once: a second Run returns an error
// at once.
func (s *Store) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("redisstore: Store.Run called twice")
	}
	defer s.client.Close()
	var wg sync.WaitGroup
	if apply := s.apply.Load(); apply != nil {
		wg.Go(func() { s.listen(ctx, *apply) })
	}
	failing := s.writer(ctx)
	wg.Wait()
	return s.drain(ctx, failing)
}

// listen subscribes to the channel and gives apply every state published on
// it, until ctx ends. Every (re)subscription is followed by a resync: the
// whole hash read and applied, for the states published while it was not
// listening. go-redis resubscribes by itself after a broken connection.
func (s *Store) listen(ctx context.Context, apply func(keypool.KeyState)) {
	// go-redis heeds deadlines, not cancellation: every call here has one,
	// so that a Redis that takes connections and never answers cannot hold
	// Run past its context's end.
	ps := s.client.Subscribe(ctx) // no channel yet: no I/O
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer func() {
		if stop() {
			ps.Close()
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, writeTimeout)
	err := ps.Subscribe(sctx, s.channel) // kept, and sent again on reconnects
	cancel()
	if err != nil {
		s.failed(ctx, "subscribe", err)
	}
	wait := s.opt.RetryMin
	backoff := func() bool {
		ok := keystates.Sleep(ctx, wait)
		wait = min(2*wait, s.opt.RetryMax)
		return ok
	}
	for {
		msg, err := ps.ReceiveTimeout(ctx, idleReceive)
		if ctx.Err() != nil {
			return
		}
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			continue // nothing published meanwhile; go-redis keeps the connection
		}
		if err != nil {
			s.failed(ctx, "subscribe", err)
			if !backoff() {
				return
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			// Messages queue on the connection meanwhile; the hash read
			// after the subscription misses none.
			start := time.Now()
			for !s.resync(ctx, apply) {
				if !backoff() {
					return
				}
				start = time.Now()
			}
			wait = s.opt.RetryMin
			s.answered(start)
		case *redis.Message:
			st, err := decode("", []byte(m.Payload))
			if err != nil {
				s.skip(err)
				continue
			}
			s.received.Add(1)
			s.known.note(st)
			apply(st)
		}
	}
}

// idleReceive is how long a Receive waits for a message before the loop
// looks at its context again.
const idleReceive = time.Second

// resyncTimeout bounds a resync's read of the states.
const resyncTimeout = 30 * time.Second

// resync reads every state and gives each to apply, and queues again the
// states this Store knows that Redis lacks; it reports whether the read
// succeeded.
func (s *Store) resync(ctx context.Context, apply func(keypool.KeyState)) bool {
	// In the background, unlike Load: a large pool's states get longer.
	rctx, cancel := context.WithTimeout(ctx, max(s.opt.LoadTimeout, resyncTimeout))
	defer cancel()
	states, err := s.readAll(rctx)
	if err != nil {
		s.failed(ctx, "resync", err)
		return false
	}
	s.resyncs.Add(1)
	for _, st := range states {
		s.received.Add(1)
		s.known.note(st)
		apply(st)
	}
	if lost := s.known.missing(states); len(lost) > 0 {
		for _, st := range lost {
			s.queue.Put(st)
		}
		s.refilled.Add(uint64(len(lost)))
		s.log.Warn("Redis had lost key states; writing them again", "store", s.shown, "states", len(lost))
	}
	return true
}
