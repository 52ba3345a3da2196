package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/keystates"
)

// saveScript writes a batch of states. KEYS are the states hash and the
// updated hash; ARGV[1] the channel, then triples of key ID, Updated (20
// digits of nanoseconds, so that strings compare as numbers) and the
// state's JSON. A state older than the stored one of its key is left out;
// every state written is published.
var saveScript = redis.NewScript(`
for i = 2, #ARGV, 3 do
  local id, updated, state = ARGV[i], ARGV[i+1], ARGV[i+2]
  local cur = redis.call('HGET', KEYS[2], id)
  if not cur or cur <= updated then
    redis.call('HSET', KEYS[1], id, state)
    redis.call('HSET', KEYS[2], id, updated)
    redis.call('PUBLISH', ARGV[1], state)
  end
end
return 0
`)

// updatedArg is t as the script compares it: nanoseconds since 1970, 20
// digits. Times before 1970 (never a state's) are 0.
func updatedArg(t time.Time) string { return fmt.Sprintf("%020d", max(t.UnixNano(), 0)) }

// writeTimeout bounds one batch's write: a batch takes milliseconds, and a
// write under way when Run's context ends holds the shutdown this long at
// most (go-redis heeds deadlines, not cancellation).
const writeTimeout = 2 * time.Second

// writeBatch runs the script over states, within writeTimeout and ctx.
func (s *Store) writeBatch(ctx context.Context, states []keypool.KeyState) error {
	args := make([]any, 0, 1+3*len(states))
	args = append(args, s.channel)
	for i := range states {
		data, err := json.Marshal(&states[i])
		if err != nil {
			return fmt.Errorf("redisstore: key state %s: %w", states[i].ID, err)
		}
		args = append(args, string(states[i].ID), updatedArg(states[i].Updated), data)
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return saveScript.Run(ctx, s.client, []string{s.states, s.updated}, args...).Err()
}

// writer writes what Save queues until ctx ends, retrying with backoff while
// Redis fails. It reports whether the last write failed, for the drain.
func (s *Store) writer(ctx context.Context) (failing bool) {
	for {
		select {
		case <-ctx.Done():
			return failing
		case <-s.queue.Wake():
		}
		if s.opt.Linger > 0 {
			keystates.Sleep(ctx, s.opt.Linger)
		}
		wait := s.opt.RetryMin
		for {
			err := s.writePending(ctx)
			if ctx.Err() != nil {
				return failing
			}
			if failing = err != nil; !failing {
				break
			}
			s.failed(ctx, "save", err)
			if !keystates.Sleep(ctx, wait) {
				return failing
			}
			wait = min(2*wait, s.opt.RetryMax)
		}
	}
}

// writePending writes what waits, batch by batch. What a failed write did
// not store waits again (behind any newer change of its key) and its error
// is returned.
func (s *Store) writePending(ctx context.Context) error {
	todo := s.queue.Take()
	for len(todo) > 0 {
		batch := todo[:min(len(todo), s.opt.Batch)]
		start := time.Now()
		if err := s.writeBatch(ctx, batch); err != nil {
			s.queue.PutBack(todo)
			return err
		}
		s.answered(start)
		s.queue.Done(len(batch))
		todo = todo[len(batch):]
	}
	return nil
}

// drain writes what waits, and what comes meanwhile, once Run's context has
// ended: within DrainTimeout, and while Redis fails within CloseRetry of
// the first failure. Then it closes the Store to Save, and drops what is
// left. It returns an error saying how many states were lost, if any.
func (s *Store) drain(ctx context.Context, failing bool) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opt.DrainTimeout)
	defer cancel()
	var (
		giveUpAt time.Time
		lastErr  error
	)
	wait := s.opt.RetryMin
	for {
		if failing && giveUpAt.IsZero() {
			giveUpAt = time.Now().Add(s.opt.CloseRetry)
		}
		if lost, closed := s.queue.CloseIfIdle(dctx.Err() != nil || failing && !time.Now().Before(giveUpAt)); closed {
			if lost == 0 {
				return nil
			}
			err := fmt.Errorf("redisstore: %d key states not written at shutdown: redis did not take them", lost)
			if lastErr != nil {
				err = fmt.Errorf("%w: %s", err, s.scrub.Scrub(lastErr.Error()))
			}
			s.log.Warn("redisstore: redis out of reach at shutdown; key states lost (other replicas keep their own)",
				"states", lost, "store", s.shown)
			return err
		}
		wctx, wcancel := dctx, context.CancelFunc(func() {})
		if !giveUpAt.IsZero() {
			wctx, wcancel = context.WithDeadline(dctx, giveUpAt)
		}
		lastErr = s.writePending(wctx)
		wcancel()
		if lastErr == nil {
			failing, giveUpAt, wait = false, time.Time{}, s.opt.RetryMin
			continue
		}
		s.failed(dctx, "save", lastErr)
		if failing {
			keystates.Sleep(dctx, min(wait, time.Until(giveUpAt)))
			wait = min(2*wait, s.opt.RetryMax)
		}
		failing = true
	}
}
