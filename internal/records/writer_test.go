package records

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keypool/keypool"
)

// memStore is a Store in memory that can be told to fail or to block; its
// writes of records and of key states alike.
type memStore struct {
	mu      sync.Mutex
	rows    []Record
	batches []int
	fail    int           // the next fail writes fail
	block   chan struct{} // non-nil: writes wait for it to close
	delay   time.Duration // each write takes this long

	states      map[keypool.KeyID]keypool.KeyState
	stateSaves  [][]keypool.KeyID // the IDs of each SaveKeyStates that succeeded
	stateErr    error             // LoadKeyStates's
	stateCalled chan struct{}     // non-nil: told of each SaveKeyStates call, before it waits
}

// wait waits as the store is told to, then reports whether the write fails.
func (m *memStore) wait(ctx context.Context) error {
	m.mu.Lock()
	block, delay := m.block, m.delay
	m.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail > 0 {
		m.fail--
		return errors.New("store down")
	}
	return nil
}

func (m *memStore) Insert(ctx context.Context, recs []Record) error {
	if err := m.wait(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rows = append(m.rows, recs...)
	m.batches = append(m.batches, len(recs))
	return nil
}

// SaveKeyStates keeps the latest state per ID, as the SQL stores do.
func (m *memStore) SaveKeyStates(ctx context.Context, states []keypool.KeyState) error {
	if m.stateCalled != nil {
		m.stateCalled <- struct{}{}
	}
	if err := m.wait(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.states == nil {
		m.states = map[keypool.KeyID]keypool.KeyState{}
	}
	var ids []keypool.KeyID
	for _, st := range latestByID(states) {
		if old, ok := m.states[st.ID]; !ok || !st.Updated.Before(old.Updated) {
			m.states[st.ID] = st
		}
		ids = append(ids, st.ID)
	}
	m.stateSaves = append(m.stateSaves, ids)
	return nil
}

func (m *memStore) LoadKeyStates(context.Context) ([]keypool.KeyState, []error, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stateErr != nil {
		return nil, nil, m.stateErr
	}
	out := slices.Collect(maps.Values(m.states))
	slices.SortFunc(out, func(a, b keypool.KeyState) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil, nil
}

// state returns the stored state of id.
func (m *memStore) state(id keypool.KeyID) (keypool.KeyState, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.states[id]
	return st, ok
}

func (m *memStore) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rows)
}

func (m *memStore) Recent(context.Context, Query) ([]Record, error)            { return nil, nil }
func (m *memStore) Aggregate(context.Context, Query, GroupBy) ([]Group, error) { return nil, nil }
func (m *memStore) Ping(context.Context) error                                 { return nil }
func (m *memStore) Close() error                                               { return nil }

// Prune deletes the rows before before.
func (m *memStore) Prune(ctx context.Context, before time.Time) (int64, error) {
	m.mu.Lock()
	block := m.block
	m.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.rows[:0]
	for _, r := range m.rows {
		if !r.Time.Before(before) {
			kept = append(kept, r)
		}
	}
	n := int64(len(m.rows) - len(kept))
	m.rows = kept
	return n, nil
}

func rec(i int) Record { return Record{Path: fmt.Sprintf("/v1/r%d", i), Status: 200} }

// start runs w until stop is called: stop ends Run's context, waits for Run
// to return and hands back its error (the same one on every call).
func start(w *Writer) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	return sync.OnceValue(func() error {
		cancel()
		return <-ran
	})
}

func TestWriterBatchesAndFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{block: make(chan struct{})}
		w := NewWriter(st, WriterOptions{Queue: 100, Batch: 10})
		stop := start(w)
		for i := range 50 {
			if !w.Add(rec(i)) {
				t.Fatalf("record %d dropped with room in the queue", i)
			}
		}
		close(st.block)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if st.count() != 50 {
			t.Fatalf("%d records written, want 50", st.count())
		}
		for i, r := range st.rows {
			if r.Path != fmt.Sprintf("/v1/r%d", i) {
				t.Fatalf("row %d is %s: order lost", i, r.Path)
			}
		}
		for _, n := range st.batches {
			if n > 10 {
				t.Fatalf("batch of %d, over 10", n)
			}
		}
		if len(st.batches) > 6 { // the first alone, then full batches
			t.Errorf("%d batches for 50 records queued at once: %v", len(st.batches), st.batches)
		}
		if s := w.Stats(); s.Written != 50 || s.Dropped != 0 || s.Queued != 0 {
			t.Errorf("stats %+v", s)
		}
		if w.Add(rec(99)) || w.Stats().Dropped != 1 {
			t.Error("Add after Run returned was taken")
		}
	})
}

// TestWriterDropsWhenFull: a store that hangs never makes Add wait; what does
// not fit is counted and logged once per interval.
func TestWriterDropsWhenFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs strings.Builder
		var mu sync.Mutex
		st := &memStore{block: make(chan struct{})}
		w := NewWriter(st, WriterOptions{Queue: 10, Batch: 5, Linger: -1, LogEvery: time.Second,
			Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
		stop := start(w)
		w.Add(rec(0))
		synctest.Wait() // the writer holds record 0, stuck in Insert
		taken := 1
		for i := 1; i < 1000; i++ {
			if w.Add(rec(i)) {
				taken++
			}
		}
		// One record is in the writer's hands, 10 queued.
		if taken != 11 || w.Stats().Dropped != 989 {
			t.Fatalf("taken %d, stats %+v", taken, w.Stats())
		}
		time.Sleep(3 * time.Second) // fake time: let the log interval pass
		synctest.Wait()
		mu.Lock()
		n := strings.Count(logs.String(), "dropped records")
		mu.Unlock()
		if n != 1 {
			t.Fatalf("dropped records logged %d times, want once:\n%s", n, logs.String())
		}
		close(st.block)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if st.count() != 11 {
			t.Fatalf("%d written, want 11", st.count())
		}
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestWriterRetriesAStoreThatIsDown keeps the batch until the store is back.
func TestWriterRetriesAStoreThatIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{fail: 5}
		w := NewWriter(st, WriterOptions{RetryMin: 100 * time.Millisecond, RetryMax: time.Second})
		stop := start(w)
		w.Add(rec(1))
		time.Sleep(10 * time.Second) // fake time
		synctest.Wait()
		if st.count() != 1 {
			t.Fatalf("%d written after the store came back", st.count())
		}
		if s := w.Stats(); s.Errors != 5 || s.Written != 1 || s.Dropped != 0 {
			t.Fatalf("stats %+v", s)
		}
		stop()
	})
}

// TestWriterDrainGivesUp: with the store down, the drain gives up (after
// CloseRetry, before DrainTimeout) and counts what was lost.
func TestWriterDrainGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{fail: 1 << 30}
		w := NewWriter(st, WriterOptions{DrainTimeout: 5 * time.Second})
		for i := range 7 {
			w.Add(rec(i))
		}
		err := start(w)()
		if err == nil || !strings.Contains(err.Error(), "7 records not written") {
			t.Fatalf("Run: %v", err)
		}
		if s := w.Stats(); s.Dropped != 7 || s.Written != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestWriterLingers: records that trickle in within Linger share one insert.
func TestWriterLingers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{}
		w := NewWriter(st, WriterOptions{Linger: 100 * time.Millisecond})
		stop := start(w)
		for i := range 3 {
			w.Add(rec(i))
			time.Sleep(30 * time.Millisecond) // fake time
		}
		synctest.Wait()
		if st.count() != 0 {
			t.Fatal("inserted before the linger ended")
		}
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		if st.count() != 3 || len(st.batches) != 1 {
			t.Fatalf("batches %v, want one of 3", st.batches)
		}
		stop()
	})
}

// TestWriterFlush: Flush returns once what was queued is written, without
// waiting for the linger.
func TestWriterFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{}
		w := NewWriter(st, WriterOptions{Linger: time.Hour})
		stop := start(w)
		w.Add(rec(0))
		synctest.Wait() // the writer lingers with record 0
		for i := 1; i < 5; i++ {
			w.Add(rec(i))
		}
		start := time.Now()
		if err := w.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st.count() != 5 || time.Since(start) >= time.Hour {
			t.Fatalf("%d written after %v", st.count(), time.Since(start))
		}
		stop()
	})
}

// TestWriterPrunes: with Keep, records older than it go at start and then
// every PruneEvery.
func TestWriterPrunes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		st := &memStore{rows: []Record{{Time: now.Add(-48 * time.Hour)}, {Time: now.Add(-2 * time.Hour)}}}
		w := NewWriter(st, WriterOptions{Keep: 24 * time.Hour, PruneEvery: time.Hour})
		stop := start(w)
		synctest.Wait()
		if st.count() != 1 || w.Stats().Pruned != 1 {
			t.Fatalf("%d rows after the first prune, stats %+v", st.count(), w.Stats())
		}
		time.Sleep(23 * time.Hour) // fake time: the -2h row turns 25h old
		synctest.Wait()
		if st.count() != 0 || w.Stats().Pruned != 2 {
			t.Fatalf("%d rows a day later, stats %+v", st.count(), w.Stats())
		}
		stop()
	})
}

// accounted checks that every one of added records is written or dropped,
// once, and that nothing is held any more.
func accounted(t *testing.T, w *Writer, added uint64) {
	t.Helper()
	s := w.Stats()
	if s.Written+s.Dropped != added || s.Queued != 0 || s.QueuedBytes != 0 {
		t.Errorf("%d records added, stats %+v", added, s)
	}
}

// TestWriterDrainDeadStore: with a store whose inserts fail, the drain
// gives what is left CloseRetry and no more, however long DrainTimeout, and
// counts every record not written as dropped, once, the batch being retried
// included.
func TestWriterDrainDeadStore(t *testing.T) {
	for _, tc := range []struct {
		name       string
		closeRetry time.Duration // 0: the default
		early      bool          // the store fails before the drain; else first in it
		hang       bool          // when the drain comes, a retry hangs in the store
		why        string        // in Run's error
	}{
		{name: "failing before the drain", early: true, why: "the store refused them: store down"},
		{name: "failing before the drain, short CloseRetry", closeRetry: 300 * time.Millisecond, early: true, why: "store down"},
		{name: "a retry hanging at the drain", early: true, hang: true, why: "the store did not answer within 2s"},
		{name: "failing first in the drain", why: "store down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &memStore{fail: 1 << 30}
				opt := WriterOptions{Queue: 100, Batch: 10, Linger: time.Hour, CloseRetry: tc.closeRetry, DrainTimeout: 30 * time.Second}
				if tc.early {
					opt.Linger = -1
				}
				w := NewWriter(st, opt)
				stop := start(w)
				for i := range 35 {
					if !w.Add(rec(i)) {
						t.Fatalf("record %d dropped with room in the queue", i)
					}
				}
				if tc.early {
					time.Sleep(5 * time.Second) // fake time: the store refuses a few tries
					synctest.Wait()
					if w.Stats().Errors == 0 {
						t.Fatal("the store was not tried before the drain")
					}
				}
				if tc.hang {
					st.mu.Lock()
					st.block = make(chan struct{}) // never closed
					st.mu.Unlock()
					time.Sleep(20 * time.Second) // past RetryMax: a retry is in the store
					synctest.Wait()
				}
				limit := cmp.Or(tc.closeRetry, DefaultCloseRetry)
				start := time.Now()
				err := stop()
				if took := time.Since(start); took > limit {
					t.Errorf("the drain took %v, over CloseRetry %v", took, limit)
				}
				if err == nil || !strings.Contains(err.Error(), "records: 35 records not written") || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("Run: %v, want 35 records not written: %s", err, tc.why)
				}
				if errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Run: %v: DrainTimeout did not pass", err)
				}
				if s := w.Stats(); s.Written != 0 || s.Dropped != 35 {
					t.Errorf("stats %+v, want 35 dropped", s)
				}
				accounted(t, w, 35)
				if w.Add(rec(35)) {
					t.Error("Add after Run returned was taken")
				}
				accounted(t, w, 36)
				if err := w.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "called twice") {
					t.Errorf("Run again: %v", err)
				}
				accounted(t, w, 36)
			})
		})
	}
}

// TestWriterDrainDoesNotWaitForPrune: pruning is cut short by the end of
// Run's context, so a store that hangs does not hold up a drain with nothing
// to write.
func TestWriterDrainDoesNotWaitForPrune(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{block: make(chan struct{})} // never closed
		w := NewWriter(st, WriterOptions{Keep: time.Hour, DrainTimeout: 30 * time.Second})
		stop := start(w)
		synctest.Wait() // the first prune hangs in the store
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != 0 {
			t.Errorf("the drain took %v with nothing to write", took)
		}
	})
}

// TestWriterDrainSlowStore: a store that takes inserts, however slowly, gets
// all of DrainTimeout to take what is queued, also when it failed just
// before the drain; when DrainTimeout passes first, what is left is counted.
func TestWriterDrainSlowStore(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    int           // inserts that fail first
		drain   time.Duration // DrainTimeout
		written uint64
	}{
		// Inserts take 1s: the batch of record 0, then 10, 10, 10, 10, 9.
		{name: "alive", drain: 30 * time.Second, written: 50},
		{name: "failed just before the drain", fail: 1, drain: 30 * time.Second, written: 50},
		{name: "DrainTimeout passes first", drain: 3500 * time.Millisecond, written: 21},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &memStore{fail: tc.fail, delay: time.Second}
				w := NewWriter(st, WriterOptions{Queue: 100, Batch: 10, Linger: -1, DrainTimeout: tc.drain})
				stop := start(w)
				w.Add(rec(0))
				synctest.Wait() // record 0 is in the store's hands
				for i := 1; i < 50; i++ {
					w.Add(rec(i))
				}
				if tc.fail > 0 {
					// At 1s the insert fails; at 1.1s the retry starts.
					time.Sleep(1500 * time.Millisecond)
					if w.Stats().Errors != 1 {
						t.Fatalf("stats %+v, want an insert refused", w.Stats())
					}
				}
				start := time.Now()
				err := stop()
				took := time.Since(start)
				s := w.Stats()
				if s.Written != tc.written || st.count() != int(tc.written) {
					t.Errorf("%d written (store: %d), want %d", s.Written, st.count(), tc.written)
				}
				accounted(t, w, 50)
				if tc.written == 50 {
					if err != nil {
						t.Fatalf("Run: %v", err)
					}
					if took <= DefaultCloseRetry {
						t.Errorf("the drain took %v: it is meant to outlast CloseRetry", took)
					}
					return
				}
				want := fmt.Sprintf("records: %d records not written", 50-tc.written)
				if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Run: %v, want %q and context.DeadlineExceeded", err, want)
				}
				if took != tc.drain {
					t.Errorf("the drain took %v, want DrainTimeout's %v", took, tc.drain)
				}
			})
		})
	}
}

// TestWriterQueueBytes: records that would take the queue past QueueBytes
// are dropped and counted, the batch in the store's hands included, and the
// bytes come back once records are written.
func TestWriterQueueBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		big := Record{Path: strings.Repeat("p", MaxPath), Model: "gpt-4o", Status: 200,
			Attempts: []Attempt{{Key: "k1", Upstream: "openai", Outcome: "success", Status: 200}}}
		size := recordSize(&big)
		st := &memStore{block: make(chan struct{})}
		w := NewWriter(st, WriterOptions{Queue: 1000, QueueBytes: 10 * size, Linger: -1})
		stop := start(w)
		w.Add(big)
		synctest.Wait() // the writer holds it, stuck in Insert
		taken := 1
		for range 99 {
			if w.Add(big) {
				taken++
			}
		}
		if s := w.Stats(); taken != 10 || s.Dropped != 90 || s.Queued != 9 || s.QueuedBytes != 10*size {
			t.Fatalf("taken %d, stats %+v (a record is %d bytes)", taken, s, size)
		}
		close(st.block)
		if err := w.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if s := w.Stats(); s.Written != 10 || s.QueuedBytes != 0 {
			t.Fatalf("after Flush: %+v", s)
		}
		if !w.Add(big) {
			t.Error("Add dropped a record with the queue empty")
		}
		huge := Record{RequestBody: strings.Repeat("b", int(10*size))}
		if w.Add(huge) {
			t.Error("Add took a record larger than QueueBytes")
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if s := w.Stats(); s.Written != 11 || s.Dropped != 91 {
			t.Errorf("stats %+v", s)
		}
		accounted(t, w, 102)
	})
}

func TestRecordSize(t *testing.T) {
	r := Record{Client: "ct_0123456789abcdef", IP: "10.0.0.1", Method: "POST", Path: "/v1/chat/completions",
		Model: "gpt-4o", Upstream: "openai", Key: "k1", Error: "rate_limited", RequestBody: "{}", ResponseBody: "{}",
		Attempts: []Attempt{{Key: "k1", Upstream: "openai", Outcome: "rate_limited"}, {Key: "k2", Upstream: "openai", Outcome: "success"}}}
	strs := 19 + 8 + 4 + 20 + 6 + 6 + 2 + 12 + 2 + 2
	atts := 2 + 6 + 12 + 2 + 6 + 7
	if got, want := recordSize(&r), recordOverhead+2*attemptOverhead+int64(strs+atts); got != want {
		t.Errorf("recordSize = %d, want %d", got, want)
	}
}

// TestWriterCountsEveryRecord: with Adds racing the end of Run, every record
// is written or counted as dropped, once; those the drain could not write are
// the ones Run's error names.
func TestWriterCountsEveryRecord(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail int
	}{{"store alive", 0}, {"store dead", 1 << 30}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &memStore{fail: tc.fail, delay: 10 * time.Millisecond}
				w := NewWriter(st, WriterOptions{Queue: 50, Batch: 8})
				stop := start(w)
				var (
					wg     sync.WaitGroup
					mu     sync.Mutex
					taken  uint64
					closed = make(chan error, 1)
				)
				for g := range 8 {
					wg.Go(func() {
						for i := range 200 {
							if w.Add(rec(g*1000 + i)) {
								mu.Lock()
								taken++
								mu.Unlock()
							}
							if i%20 == 0 {
								time.Sleep(time.Millisecond) // fake time
							}
						}
					})
				}
				go func() {
					time.Sleep(40 * time.Millisecond)
					closed <- stop()
				}()
				wg.Wait()
				err := <-closed
				accounted(t, w, 1600)
				s := w.Stats()
				if tc.fail == 0 {
					if err != nil || s.Written != taken {
						t.Errorf("Run: %v; %d taken, stats %+v", err, taken, s)
					}
					return
				}
				want := fmt.Sprintf("records: %d records not written", taken)
				if s.Written != 0 || err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Run: %v, want %q; stats %+v", err, want, s)
				}
			})
		})
	}
}

// TestWriterAddDoesNotAllocate: Add runs on every request.
func TestWriterAddDoesNotAllocate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{block: make(chan struct{})}
		w := NewWriter(st, WriterOptions{Queue: 1000, Linger: -1})
		stop := start(w)
		r := Record{Path: "/v1/chat/completions", Model: "gpt-4o-mini", Attempts: []Attempt{{Key: "k1", Upstream: "openai", Outcome: "success"}}}
		w.Add(r)
		synctest.Wait() // the writer is stuck in Insert
		if n := testing.AllocsPerRun(100, func() { w.Add(r) }); n != 0 {
			t.Errorf("Add: %v allocations", n)
		}
		close(st.block)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// discardStore takes every insert and keeps nothing.
type discardStore struct{ *memStore }

func (discardStore) Insert(context.Context, []Record) error { return nil }

// BenchmarkWriterAdd is what a request pays to hand its record over.
func BenchmarkWriterAdd(b *testing.B) {
	w := NewWriter(discardStore{&memStore{}}, WriterOptions{})
	defer start(w)()
	r := Record{Client: "ct_0123456789abcdef", IP: "10.0.0.1", Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o-mini",
		Upstream: "openai", Key: "k1", Attempts: []Attempt{{Key: "k1", Upstream: "openai", Outcome: "success", Status: 200}}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Add(r)
		}
	})
}

// TestWriterStartsNothing: NewWriter starts no goroutine (synctest.Test
// would fail on one left running); records added before Run wait in the
// queue, and Run writes them.
func TestWriterStartsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{rows: []Record{{Time: time.Now().Add(-48 * time.Hour)}}}
		w := NewWriter(st, WriterOptions{Keep: time.Hour})
		r := rec(0)
		r.Time = time.Now().Add(time.Hour) // still young when Run prunes
		w.Add(r)
		time.Sleep(time.Hour) // fake time
		synctest.Wait()
		if st.count() != 1 || w.Stats().Written != 0 || w.Stats().Pruned != 0 {
			t.Fatalf("the Writer worked before Run: %d rows, stats %+v", st.count(), w.Stats())
		}
		if err := start(w)(); err != nil {
			t.Fatal(err)
		}
		if s := w.Stats(); s.Written != 1 || s.Pruned != 1 || st.count() != 1 || st.rows[0].Path != "/v1/r0" {
			t.Fatalf("after Run: stats %+v, rows %+v", s, st.rows)
		}
	})
}
