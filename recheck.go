package keypool

import (
	"container/heap"
	"context"
	"time"
)

// With a StateStore a key's last check may be older than the process that
// runs the Checker: New restored it. Run then keeps a schedule per key, so
// that a key is checked a recheck interval after its own last check,
// wherever and whenever that was made, and not again at every start.

// A key another replica checked (a StateSubscriber) gets that check too:
// its entry in the schedule, when it comes, finds the key not yet due and
// puts it at that check's recheck instead, and a retry after a check that
// failed here is dropped once a check has succeeded since.

// heardCheckGrace is how much later than its own last check a key whose
// last check another replica made is due here. The replica that checked a
// key last checks it again when due, and the others, waiting this much
// longer, have most likely heard of that check by then: a key is checked
// once per interval among replicas, and still checked when the replica
// that checked it is gone.
const heardCheckGrace = time.Minute

// heardCloneGrace is how long Run leaves an organization clone another
// replica found, and is checking, before checking it here.
const heardCloneGrace = time.Minute

// runEach is Run for a pool with a StateStore.
func (c *Checker) runEach(ctx context.Context) error {
	every := c.cfg.recheckEvery
	q := &recheckQueue{at: map[*key]time.Time{}}
	keys, known := c.p.checkedKeys(0)
	c.passScheduled(ctx, q, c.schedule(q, keys, every, c.t.now()))
	timer := time.NewTimer(0)
	timer.Stop()
	defer timer.Stop()
	for {
		var wake <-chan time.Time
		if at, ok := q.first(); ok {
			timer.Reset(at.Sub(c.t.now()))
			wake = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
			now := c.t.now()
			c.passScheduled(ctx, q, c.schedule(q, q.due(now), every, now))
		case <-c.p.grown:
			// Clones a state heard from another replica made. The replica
			// that found one is checking it: a clone not yet checked is
			// looked at again after a grace, when that check has most
			// likely been heard of.
			var added []*key
			added, known = c.p.checkedKeys(known)
			now := c.t.now()
			for _, k := range added {
				due, next := c.p.checkDue(k, every, now)
				switch {
				case due:
					q.push(k, now.Add(heardCloneGrace))
				case !next.IsZero():
					q.push(k, next)
				}
			}
		case <-c.p.added:
			// Keys Update added: those never checked at once, the
			// others when due.
			c.passScheduled(ctx, q, c.schedule(q, c.p.takeFresh(), every, c.t.now()))
		case <-c.recheck:
			c.passScheduled(ctx, q, c.p.checkable())
		case r := <-c.retryCh:
			if c.p.lastChecked(r.k, r.failed).After(r.failed) {
				break // checked since, here or by another replica: its entry in q stands
			}
			c.passScheduled(ctx, q, []*key{r.k})
		}
	}
}

// passScheduled checks keys in one pass and schedules each key it checked
// a recheck interval later: after its check, or after this pass for a key
// whose check met a network error (retried sooner by scheduleRetry).
func (c *Checker) passScheduled(ctx context.Context, q *recheckQueue, keys []*key) {
	if len(keys) == 0 {
		return
	}
	start := c.t.now()
	_, checked := c.pass(ctx, keys, true)
	if c.cfg.recheckEvery <= 0 {
		return
	}
	for _, k := range checked {
		q.push(k, c.p.lastChecked(k, start).Add(c.cfg.recheckEvery))
	}
}

// checkedKeys returns the keys a checker may ever check, of those added
// after the first from (by their born number): all but the stand-ins of
// upstreams without keys; and how many keys the pool ever added, from for
// the next call.
func (p *Pool) checkedKeys(from uint32) ([]*key, uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*key
	for _, k := range p.keys {
		if k.born > from && !k.standIn() {
			out = append(out, k)
		}
	}
	return out, p.born
}

// checkDue says whether k is due for a check at now, when rechecks come
// every interval after a key's last check (0: never), and if not, when to
// ask again (zero: only Recheck checks it). A key never checked is due at
// once (heardCheckGrace later for a check heard from another replica);
// one that may take requests, or whose restored check this process
// has not redone, once its interval has passed; an over-quota or revoked
// key waits for Recheck, and a disabled one for Enable, but each is asked
// about again every interval.
func (p *Pool) checkDue(k *key, every time.Duration, now time.Time) (due bool, next time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k.gone {
		return false, time.Time{} // removed by Update: out of the schedule
	}
	if k.state == StateDisabled {
		if every <= 0 {
			return false, time.Time{}
		}
		return false, now.Add(every)
	}
	if k.checked.IsZero() {
		return true, time.Time{}
	}
	if every <= 0 {
		return false, time.Time{}
	}
	at := k.checked.Add(every)
	if k.heardCheck {
		at = at.Add(heardCheckGrace)
	}
	if at.After(now) {
		return false, at
	}
	if k.state.Usable() || k.restored {
		return true, time.Time{}
	}
	return false, now.Add(every)
}

// lastChecked returns when k was last checked, or since if that is later
// (its last check failed).
func (p *Pool) lastChecked(k *key, since time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k.checked.After(since) {
		return k.checked
	}
	return since
}

// recheckQueue orders keys by when they are next due. A key pushed again
// replaces its earlier entry, which stays in the heap until its time and
// is then skipped. It belongs to runEach's goroutine.
type recheckQueue struct {
	h  dueHeap
	at map[*key]time.Time // each key's current entry
}

type dueCheck struct {
	k  *key
	at time.Time
}

func (q *recheckQueue) push(k *key, at time.Time) {
	q.at[k] = at
	heap.Push(&q.h, dueCheck{k, at})
}

// first returns when the earliest current entry is due.
func (q *recheckQueue) first() (time.Time, bool) {
	for len(q.h) > 0 {
		top := q.h[0]
		if at, ok := q.at[top.k]; ok && at.Equal(top.at) {
			return top.at, true
		}
		heap.Pop(&q.h)
	}
	return time.Time{}, false
}

// due takes the keys due by now out of the queue.
func (q *recheckQueue) due(now time.Time) []*key {
	var out []*key
	for {
		at, ok := q.first()
		if !ok || at.After(now) {
			return out
		}
		e := heap.Pop(&q.h).(dueCheck)
		delete(q.at, e.k)
		out = append(out, e.k)
	}
}

type dueHeap []dueCheck

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueCheck)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// schedule puts each of keys whose check is not due yet in q for when it
// is, and returns those due now.
func (c *Checker) schedule(q *recheckQueue, keys []*key, every time.Duration, now time.Time) []*key {
	var due []*key
	for _, k := range keys {
		isDue, next := c.p.checkDue(k, every, now)
		switch {
		case isDue:
			due = append(due, k)
		case !next.IsZero():
			q.push(k, next)
		}
	}
	return due
}
