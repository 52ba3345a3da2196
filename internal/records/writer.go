package records

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// WriterOptions configures a Writer; zero fields take the defaults.
type WriterOptions struct {
	// Queue bounds the records waiting to be written (default 10000). When
	// it is full, Add drops the record and counts it.
	Queue int
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
	// LogEvery is how often dropped records are logged, once per interval
	// with their count (default 10s).
	LogEvery time.Duration
	// Keep, when positive, is how long records are kept: older ones are
	// deleted at start and then every PruneEvery (default 1h).
	Keep, PruneEvery time.Duration
	// Logger receives the writer's warnings; nil means silent.
	Logger *slog.Logger
}

// WriterStats counts what a Writer did since it started.
type WriterStats struct {
	Queued  int    // records waiting now
	Written uint64 // records stored
	Dropped uint64 // records lost: queue full, or left when Close gave up
	Errors  uint64 // inserts the store refused
	Pruned  uint64 // records deleted for being older than Keep
}

// Writer takes records from request goroutines without ever making them wait,
// and inserts them into a Store in batches from a goroutine of its own. Make
// one with NewWriter, Add records, and Close it after the server has stopped
// taking requests, so that what is queued is written. It is safe for
// simultaneous use by multiple goroutines.
type Writer struct {
	store Store
	opt   WriterOptions
	log   *slog.Logger
	queue chan Record

	flushes  chan chan struct{} // Flush's requests
	closing  chan struct{}      // closed by Close: write what is queued, then stop
	done     chan struct{}      // closed when the goroutine has stopped
	stopOnce sync.Once
	closed   atomic.Bool
	addMu    sync.RWMutex    // Add holds it to read closed and send; Close to set closed
	flushCtx context.Context // Close's context, for the last writes
	ctx      context.Context // every insert's; cancelled when Close gives up
	cancel   context.CancelFunc
	mu       sync.Mutex // guards flushCtx

	written, dropped, errors atomic.Uint64
	pruned                   atomic.Uint64
	lost                     atomic.Uint64 // of dropped: those Close could not write
	droppedLogged            uint64        // dropped count already logged; writer goroutine only
	loggedAt                 time.Time     // when dropped records were last logged; writer goroutine only
}

// NewWriter starts a Writer that inserts into store.
func NewWriter(store Store, opt WriterOptions) *Writer {
	if opt.Queue <= 0 {
		opt.Queue = 10000
	}
	if opt.Batch <= 0 {
		opt.Batch = 256
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
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w
}

// Add queues r for writing and reports whether it was taken. It never
// blocks: with the queue full, or the Writer closed, r is dropped and
// counted.
func (w *Writer) Add(r Record) bool {
	// The read lock keeps Close from closing between the check and the
	// send, so a record taken is one Close writes.
	w.addMu.RLock()
	defer w.addMu.RUnlock()
	if w.closed.Load() {
		w.dropped.Add(1)
		return false
	}
	select {
	case w.queue <- r:
		return true
	default:
		w.dropped.Add(1)
		return false
	}
}

// Stats returns the writer's counters.
func (w *Writer) Stats() WriterStats {
	return WriterStats{Queued: len(w.queue), Written: w.written.Load(), Dropped: w.dropped.Load(), Errors: w.errors.Load(), Pruned: w.pruned.Load()}
}

// Close stops taking records and writes those queued, trying the store until
// ctx ends; what is still unwritten then is dropped, counted and logged.
// It returns ctx's error in that case, and nil once everything is written.
func (w *Writer) Close(ctx context.Context) error {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.flushCtx = ctx
		w.mu.Unlock()
		w.addMu.Lock()
		w.closed.Store(true)
		w.addMu.Unlock()
		close(w.closing)
	})
	select {
	case <-w.done:
	case <-ctx.Done():
		w.cancel() // an insert in flight gives up too
		<-w.done
	}
	w.cancel()
	// An Add that raced with Close may have queued after the last flush.
	for range len(w.queue) {
		<-w.queue
		w.lost.Add(1)
		w.dropped.Add(1)
	}
	if n := w.lost.Load(); n > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("records: %d records not written at shutdown: %w", n, err)
		}
		return fmt.Errorf("records: %d records not written at shutdown", n)
	}
	return nil
}

func (w *Writer) run() {
	defer close(w.done)
	stop := make(chan struct{})
	watched := make(chan struct{})
	go w.watch(stop, watched)
	defer func() {
		close(stop)
		<-watched
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
		case <-w.closing:
			w.flush(batch[:0])
			return
		}
	}
}

// Flush returns once the records queued before it was called are written
// (or the Writer closed), or when ctx ends.
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

// prune deletes the records older than Keep.
func (w *Writer) prune() {
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Minute)
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
	case <-w.closing:
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
// refuses it, until it is written or the Writer closes (then the batch is
// tried on under Close's context).
func (w *Writer) write(batch []Record) {
	wait := w.opt.RetryMin
	for {
		ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		err := w.store.Insert(ctx, batch)
		cancel()
		if err == nil {
			w.written.Add(uint64(len(batch)))
			return
		}
		w.errors.Add(1)
		if w.errors.Load() == 1 || wait >= w.opt.RetryMax {
			w.log.Warn("records: store refused a batch; keeping it and trying again",
				slog.Int("records", len(batch)), slog.Duration("retry_in", wait), slog.String("error", err.Error()))
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-w.closing:
			t.Stop()
			w.insertClosing(batch)
			return
		}
		wait = min(2*wait, w.opt.RetryMax)
	}
}

// flush writes what is queued at Close, batch by batch, under Close's
// context.
func (w *Writer) flush(batch []Record) {
	for {
		batch = w.fill(batch[:0])
		if len(batch) == 0 {
			return
		}
		if !w.insertClosing(batch) {
			// The store is out of reach: count the rest as lost.
			for range len(w.queue) {
				<-w.queue
				w.lost.Add(1)
				w.dropped.Add(1)
			}
			return
		}
	}
}

// insertClosing tries batch until it is written or Close's context ends, and
// reports whether it was written.
func (w *Writer) insertClosing(batch []Record) bool {
	w.mu.Lock()
	ctx := w.flushCtx
	w.mu.Unlock()
	wait := w.opt.RetryMin
	for {
		err := w.store.Insert(ctx, batch)
		if err == nil {
			w.written.Add(uint64(len(batch)))
			return true
		}
		w.errors.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			w.lost.Add(uint64(len(batch)))
			w.dropped.Add(uint64(len(batch)))
			w.log.Warn("records: store out of reach at shutdown; records lost",
				slog.Int("records", len(batch)+len(w.queue)), slog.String("error", err.Error()))
			return false
		}
		wait = min(2*wait, w.opt.RetryMax)
	}
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
