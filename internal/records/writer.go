package records

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// WriterOptions configures a Writer; zero fields take the defaults.
type WriterOptions struct {
	// Queue bounds the records waiting to be written (default 10000). When
	// it is full, Add drops the record and counts it.
	Queue int
	// QueueBytes bounds the memory the records waiting to be written hold,
	// the batch being inserted included, as Add estimates it from their
	// strings and attempts (default 64 MiB). A record that would take the
	// total past it is dropped and counted, as with a full queue: records
	// with large bodies fill memory long before they fill Queue.
	QueueBytes int64
	// Batch bounds the records of one insert (default 256).
	Batch int
	// Linger is how long a batch that is not full waits for more records
	// before it is inserted (default 100ms; negative: not at all). Fewer,
	// fuller transactions leave more CPU to the requests.
	Linger time.Duration
	// RetryMin and RetryMax bound the wait between tries of a batch the
	// store refused (defaults 100ms and 10s, doubling). A batch is kept and
	// tried again until it is written or the Writer closes; meanwhile new
	// records queue up, and drop once the queue is full.
	RetryMin, RetryMax time.Duration
	// DrainTimeout bounds how long Run, once its context has ended, keeps
	// writing what is queued to a store that takes inserts (default 30s).
	DrainTimeout time.Duration
	// CloseRetry bounds how long Run, once its context has ended, keeps
	// trying a store whose last insert failed (default 2s): counted from
	// the end of the context, or from the first failure after it. Once it
	// has passed with no insert written, what is left is dropped.
	CloseRetry time.Duration
	// LogEvery is how often dropped records are logged, once per interval
	// with their count (default 10s).
	LogEvery time.Duration
	// Keep, when positive, is how long records are kept: older ones are
	// deleted at start and then every PruneEvery (default 1h).
	Keep, PruneEvery time.Duration
	// Logger receives the writer's warnings; nil means silent.
	Logger *slog.Logger
}

// Defaults of WriterOptions.
const (
	DefaultQueue        = 10000
	DefaultQueueBytes   = 64 << 20
	DefaultBatch        = 256
	DefaultDrainTimeout = 30 * time.Second
	DefaultCloseRetry   = 2 * time.Second
)

// WriterStats counts what a Writer did since it started.
type WriterStats struct {
	Queued int // records waiting now
	// QueuedBytes is the estimated size of the records waiting now and of
	// the batch being inserted, which QueueBytes bounds.
	QueuedBytes int64
	Written     uint64 // records stored
	Dropped     uint64 // records lost: queue full, Writer closed, or left when the drain gave up
	Errors      uint64 // inserts the store refused
	Pruned      uint64 // records deleted for being older than Keep
}

// Writer takes records from request goroutines without ever making them wait,
// and inserts them into a Store in batches from a goroutine of its own. Make
// one with NewWriter, which starts nothing, run it with Run in a goroutine of
// its own, Add records, and end Run's context after the server has stopped
// taking requests, so that what is queued is written. Every record Add is
// given ends up either written or counted as dropped. It is safe for
// simultaneous use by multiple goroutines.
type Writer struct {
	store Store
	opt   WriterOptions
	log   *slog.Logger
	queue chan Record

	flushes chan chan struct{} // Flush's requests
	done    chan struct{}      // closed when Run's writing goroutine has stopped
	ran     atomic.Bool        // Run was called
	closed  atomic.Bool
	addMu   sync.RWMutex // Add holds it to read closed and send; Run to set closed

	// Set by Run before it starts the writing goroutine.
	closing  context.Context    // ends with Run's context: write what is queued, then stop
	endInput context.CancelFunc // cancels closing
	ctx      context.Context    // every insert's; cancelled when the drain ends
	cancel   context.CancelFunc

	written, dropped, errors atomic.Uint64
	pruned                   atomic.Uint64
	lost                     atomic.Uint64 // of dropped: those the drain could not write
	bytes                    atomic.Int64  // recordSize of the records queued or in the batch being written

	// The writer goroutine's own; Run reads lastErr once it has stopped.
	failing    bool               // the last insert failed
	lastErr    error              // the last insert's error
	giveUp     context.Context    // once closing, while failing: ends CloseRetry after the failures began
	stopGiveUp context.CancelFunc // releases giveUp
	gaveUp     bool               // the drain gave up on the store: what is left is lost

	droppedLogged uint64 // dropped count already logged; the watch goroutine's
}

// NewWriter returns a Writer that inserts into store once Run runs. It starts
// nothing; Add queues records from the start.
func NewWriter(store Store, opt WriterOptions) *Writer {
	if opt.Queue <= 0 {
		opt.Queue = DefaultQueue
	}
	if opt.QueueBytes <= 0 {
		opt.QueueBytes = DefaultQueueBytes
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
	if opt.DrainTimeout <= 0 {
		opt.DrainTimeout = DefaultDrainTimeout
	}
	if opt.CloseRetry <= 0 {
		opt.CloseRetry = DefaultCloseRetry
	}
	if opt.LogEvery <= 0 {
		opt.LogEvery = 10 * time.Second
	}
	if opt.PruneEvery <= 0 {
		opt.PruneEvery = time.Hour
	}
	w := &Writer{
		store: store, opt: opt, log: opt.Logger,
		queue:   make(chan Record, opt.Queue),
		flushes: make(chan chan struct{}),
		done:    make(chan struct{}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w
}

// Fixed parts of recordSize: a record's own fields and an attempt's, beyond
// the bytes of their strings.
const (
	recordOverhead  = int64(unsafe.Sizeof(Record{}))
	attemptOverhead = int64(unsafe.Sizeof(Attempt{}))
)

// recordSize estimates the memory r holds while queued: its fields, the bytes
// of its strings and its attempts. Strings shared with other records (an
// upstream's name) are counted in each.
func recordSize(r *Record) int64 {
	n := recordOverhead + int64(len(r.Client)+len(r.IP)+len(r.Method)+len(r.Path)+len(r.Model)+
		len(r.Upstream)+len(r.Key)+len(r.Error)+len(r.RequestBody)+len(r.ResponseBody))
	for i := range r.Attempts {
		a := &r.Attempts[i]
		n += attemptOverhead + int64(len(a.Key)+len(a.Upstream)+len(a.Outcome))
	}
	return n
}

// Add queues r for writing and reports whether it was taken. It never
// blocks: with the queue full (Queue records, or QueueBytes), or the Writer
// closed, r is dropped and counted.
func (w *Writer) Add(r Record) bool {
	// The read lock keeps Run from closing between the check and the
	// send, so a record taken is one the drain writes.
	w.addMu.RLock()
	defer w.addMu.RUnlock()
	if w.closed.Load() {
		w.dropped.Add(1)
		return false
	}
	size := recordSize(&r)
	if w.bytes.Add(size) > w.opt.QueueBytes {
		w.bytes.Add(-size)
		w.dropped.Add(1)
		return false
	}
	select {
	case w.queue <- r:
		return true
	default:
		w.bytes.Add(-size)
		w.dropped.Add(1)
		return false
	}
}

// Stats returns the writer's counters.
func (w *Writer) Stats() WriterStats {
	return WriterStats{Queued: len(w.queue), QueuedBytes: w.bytes.Load(), Written: w.written.Load(),
		Dropped: w.dropped.Load(), Errors: w.errors.Load(), Pruned: w.pruned.Load()}
}

// Run writes the records Add queues, in batches, and with Keep set prunes
// old ones, until ctx ends. Then it stops taking records and writes those
// queued: a store that takes inserts gets DrainTimeout, one whose last
// insert failed (before or while draining) at most CloseRetry. What is still
// unwritten then is dropped, counted and logged, and Run returns an error
// saying how many records were not written; nil once everything is written.
// Run returns once its goroutines are done. A Writer runs once: a second
// Run returns an error at once.
func (w *Writer) Run(ctx context.Context) error {
	if !w.ran.CompareAndSwap(false, true) {
		return errors.New("records: Writer.Run called twice")
	}
	// Inserts outlive ctx by the drain.
	w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer w.cancel()
	w.closing, w.endInput = context.WithCancel(w.ctx)
	go w.run()
	<-ctx.Done()
	w.addMu.Lock()
	w.closed.Store(true)
	w.addMu.Unlock()
	w.endInput()
	drain := time.NewTimer(w.opt.DrainTimeout)
	defer drain.Stop()
	timedOut := false
	select {
	case <-w.done:
	case <-drain.C:
		timedOut = true
		w.cancel() // an insert in flight gives up too
		<-w.done
	}
	w.cancel()
	w.loseQueued()
	n := w.lost.Load()
	switch {
	case n == 0:
		return nil
	case timedOut:
		return fmt.Errorf("records: %d records not written at shutdown: the store took longer than %v: %w", n, w.opt.DrainTimeout, context.DeadlineExceeded)
	case errors.Is(w.lastErr, context.DeadlineExceeded) || errors.Is(w.lastErr, context.Canceled):
		// CloseRetry's deadline, not the drain's: do not pass it on as if
		// the drain had timed out.
		return fmt.Errorf("records: %d records not written at shutdown: the store did not answer within %v", n, w.opt.CloseRetry)
	case w.lastErr != nil:
		return fmt.Errorf("records: %d records not written at shutdown: the store refused them: %w", n, w.lastErr)
	default:
		return fmt.Errorf("records: %d records not written at shutdown", n)
	}
}

func (w *Writer) run() {
	defer close(w.done)
	stop := make(chan struct{})
	watched := make(chan struct{})
	go w.watch(stop, watched)
	defer func() {
		close(stop)
		<-watched
		if w.stopGiveUp != nil {
			w.stopGiveUp()
		}
	}()
	batch := make([]Record, 0, w.opt.Batch)
	for {
		select {
		case r := <-w.queue:
			var done chan struct{} // a Flush that came while lingering
			batch, done = w.linger(w.fill(append(batch[:0], r)))
			w.write(batch)
			if done != nil {
				w.writeQueued(batch)
				close(done)
			}
		case done := <-w.flushes:
			w.writeQueued(batch)
			close(done)
		case <-w.closing.Done():
			w.writeQueued(batch)
			return
		}
	}
}

// Flush returns once the records queued before it was called are written
// (or the Writer closed), or when ctx ends. It needs Run running.
func (w *Writer) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case w.flushes <- done:
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watch logs dropped records once per LogEvery, on a goroutine of its own so
// that a store that hangs does not keep it quiet, and once more at the end;
// and with Keep set, prunes old records at start and every PruneEvery.
func (w *Writer) watch(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(w.opt.LogEvery)
	defer tick.Stop()
	var prune <-chan time.Time
	if w.opt.Keep > 0 {
		t := time.NewTicker(w.opt.PruneEvery)
		defer t.Stop()
		prune = t.C
		w.prune()
	}
	for {
		select {
		case <-tick.C:
			w.logDropped()
		case <-prune:
			w.prune()
		case <-stop:
			w.logDropped()
			return
		}
	}
}

// prune deletes the records older than Keep. The end of Run's context cuts
// it short: a store that hangs must not hold the drain up, and the next start
// prunes again.
func (w *Writer) prune() {
	ctx, cancel := context.WithTimeout(w.closing, 10*time.Minute)
	defer cancel()
	n, err := w.store.Prune(ctx, time.Now().Add(-w.opt.Keep))
	w.pruned.Add(uint64(n))
	if err != nil {
		w.log.Warn("records: pruning old records failed; trying again later", slog.String("error", err.Error()))
	} else if n > 0 {
		w.log.Info("records: pruned old records", slog.Int64("deleted", n), slog.Duration("keep", w.opt.Keep))
	}
}

// fill adds to batch what is queued now, up to a full batch.
func (w *Writer) fill(batch []Record) []Record {
	for len(batch) < cap(batch) {
		select {
		case r := <-w.queue:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// linger waits up to Linger for more records while batch is not full,
// without taking them one by one (each would wake the writer), then adds
// what came. A Flush ends the wait; linger returns it to be answered.
func (w *Writer) linger(batch []Record) ([]Record, chan struct{}) {
	if len(batch) == cap(batch) || w.opt.Linger < 0 {
		return batch, nil
	}
	t := time.NewTimer(w.opt.Linger)
	defer t.Stop()
	var done chan struct{}
	select {
	case <-t.C:
	case done = <-w.flushes:
	case <-w.closing.Done():
	}
	return w.fill(batch), done
}

// writeQueued writes what is queued now, batch by batch.
func (w *Writer) writeQueued(batch []Record) {
	for {
		batch = w.fill(batch[:0])
		if len(batch) == 0 {
			return
		}
		w.write(batch)
	}
}

// write inserts batch, trying again with a growing pause while the store
// refuses it, until it is written or the Writer closes (then writeClosing
// takes over). Either way the batch's bytes are released: it is written or
// counted as lost.
func (w *Writer) write(batch []Record) {
	defer w.release(batch)
	wait := w.opt.RetryMin
	for w.closing.Err() == nil {
		// A retry gives way to the drain at once: the store is known to
		// fail, and the drain gives it one more try of its own, bounded.
		parent := w.ctx
		if w.failing {
			parent = w.closing
		}
		ctx, cancel := context.WithTimeout(parent, 30*time.Second)
		err := w.insert(ctx, batch)
		cancel()
		if err == nil {
			return
		}
		if w.errors.Load() == 1 || wait >= w.opt.RetryMax {
			w.log.Warn("records: store refused a batch; keeping it and trying again",
				slog.Int("records", len(batch)), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-w.closing.Done():
			t.Stop()
		}
		wait = min(2*wait, w.opt.RetryMax)
	}
	w.writeClosing(batch)
}

// writeClosing tries batch once the Writer is closing: while the store takes
// inserts, until the drain ends; while it fails, until giveUpContext ends. What it cannot write it counts as lost. It requires that the Writer
// is closing.
func (w *Writer) writeClosing(batch []Record) {
	wait := w.opt.RetryMin
	for {
		ctx := w.ctx
		if w.failing {
			ctx = w.giveUpContext()
		}
		if w.gaveUp || ctx.Err() != nil {
			w.lose(batch)
			return
		}
		if w.insert(ctx, batch) == nil {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-w.giveUpContext().Done(): // the insert failed: failing
			t.Stop()
		}
		wait = min(2*wait, w.opt.RetryMax)
	}
}

// giveUpContext returns the context of inserts into a failing store once the
// Writer is closing: it ends CloseRetry after the first of them, or with the
// drain.
// It requires that the Writer is closing and the store failing.
func (w *Writer) giveUpContext() context.Context {
	if w.giveUp == nil {
		w.giveUp, w.stopGiveUp = context.WithTimeout(w.ctx, w.opt.CloseRetry)
	}
	return w.giveUp
}

// insert inserts batch once and notes the outcome: written and failing, and
// the store's error.
func (w *Writer) insert(ctx context.Context, batch []Record) error {
	err := w.store.Insert(ctx, batch)
	w.failing, w.lastErr = err != nil, err
	if err != nil {
		w.errors.Add(1)
		return err
	}
	w.written.Add(uint64(len(batch)))
	if w.giveUp != nil { // the store is back: the drain bounds it again
		w.stopGiveUp()
		w.giveUp, w.stopGiveUp = nil, nil
	}
	return nil
}

// lose counts batch as dropped by the drain, and logs the first loss with
// what is left.
func (w *Writer) lose(batch []Record) {
	w.lost.Add(uint64(len(batch)))
	w.dropped.Add(uint64(len(batch)))
	if w.gaveUp {
		return
	}
	w.gaveUp = true
	attrs := []any{slog.Int("records", len(batch)+len(w.queue))}
	if w.lastErr != nil {
		attrs = append(attrs, slog.String("error", w.lastErr.Error()))
	}
	w.log.Warn("records: store out of reach at shutdown; records lost", attrs...)
}

// loseQueued counts what is queued as lost. Nothing should be (Add queues
// nothing once the Writer is closed), but should something be, it is
// counted.
func (w *Writer) loseQueued() {
	for {
		select {
		case r := <-w.queue:
			w.lost.Add(1)
			w.dropped.Add(1)
			w.bytes.Add(-recordSize(&r))
		default:
			return
		}
	}
}

// release lets go of the bytes batch held against QueueBytes.
func (w *Writer) release(batch []Record) {
	var n int64
	for i := range batch {
		n += recordSize(&batch[i])
	}
	w.bytes.Add(-n)
}

// logDropped logs the records dropped since it last did, if any.
func (w *Writer) logDropped() {
	d := w.dropped.Load()
	if d == w.droppedLogged {
		return
	}
	w.log.Warn("records: dropped records (queue full or store out of reach); requests were not held up",
		slog.Uint64("dropped", d-w.droppedLogged), slog.Uint64("dropped_total", d))
	w.droppedLogged = d
}
