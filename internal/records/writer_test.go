package records

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memStore is a Store in memory that can be told to fail or to block.
type memStore struct {
	mu      sync.Mutex
	rows    []Record
	batches []int
	fail    int           // the next fail inserts fail
	block   chan struct{} // non-nil: inserts wait for it to close
}

func (m *memStore) Insert(ctx context.Context, recs []Record) error {
	m.mu.Lock()
	block := m.block
	m.mu.Unlock()
	if block != nil {
		select {
		case <-block:
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
	m.rows = append(m.rows, recs...)
	m.batches = append(m.batches, len(recs))
	return nil
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
func (m *memStore) Prune(_ context.Context, before time.Time) (int64, error) {
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

func TestWriterBatchesAndFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{block: make(chan struct{})}
		w := NewWriter(st, WriterOptions{Queue: 100, Batch: 10})
		for i := range 50 {
			if !w.Add(rec(i)) {
				t.Fatalf("record %d dropped with room in the queue", i)
			}
		}
		close(st.block)
		synctest.Wait()
		if err := w.Close(context.Background()); err != nil {
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
			t.Error("Add after Close was taken")
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
		if err := w.Close(context.Background()); err != nil {
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
		w.Add(rec(1))
		time.Sleep(10 * time.Second) // fake time
		synctest.Wait()
		if st.count() != 1 {
			t.Fatalf("%d written after the store came back", st.count())
		}
		if s := w.Stats(); s.Errors != 5 || s.Written != 1 || s.Dropped != 0 {
			t.Fatalf("stats %+v", s)
		}
		w.Close(context.Background())
	})
}

// TestWriterCloseGivesUp: with the store down, Close returns when its
// context ends and counts what was lost.
func TestWriterCloseGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{fail: 1 << 30}
		w := NewWriter(st, WriterOptions{})
		for i := range 7 {
			w.Add(rec(i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := w.Close(ctx)
		if err == nil || !strings.Contains(err.Error(), "7 records not written") {
			t.Fatalf("Close: %v", err)
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
		w.Close(context.Background())
	})
}

// TestWriterFlush: Flush returns once what was queued is written, without
// waiting for the linger.
func TestWriterFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &memStore{}
		w := NewWriter(st, WriterOptions{Linger: time.Hour})
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
		w.Close(context.Background())
	})
}

// TestWriterPrunes: with Keep, records older than it go at start and then
// every PruneEvery.
func TestWriterPrunes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		st := &memStore{rows: []Record{{Time: now.Add(-48 * time.Hour)}, {Time: now.Add(-2 * time.Hour)}}}
		w := NewWriter(st, WriterOptions{Keep: 24 * time.Hour, PruneEvery: time.Hour})
		synctest.Wait()
		if st.count() != 1 || w.Stats().Pruned != 1 {
			t.Fatalf("%d rows after the first prune, stats %+v", st.count(), w.Stats())
		}
		time.Sleep(23 * time.Hour) // fake time: the -2h row turns 25h old
		synctest.Wait()
		if st.count() != 0 || w.Stats().Pruned != 2 {
			t.Fatalf("%d rows a day later, stats %+v", st.count(), w.Stats())
		}
		w.Close(context.Background())
	})
}
