package main

import (
	"context"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// slowStore is a store that takes delay over every insert: a database under
// load, or far away.
type slowStore struct {
	records.Store
	delay time.Duration
}

func (s slowStore) Insert(ctx context.Context, recs []records.Record) error {
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Insert(ctx, recs)
}

// cpuTime is the CPU time the process used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discardStore takes every batch and keeps none: the cost of records
// without a database.
type discardStore struct{ records.Store }

func (discardStore) Insert(context.Context, []records.Record) error { return nil }

// BenchmarkProxyRecords sends JSON chat completions through keypool's proxy
// with records off, with records in SQLite, and with records in a store
// that takes a second over every batch and so falls behind (dropped/op reports
// the records it dropped; requests must not slow down).
func BenchmarkProxyRecords(b *testing.B) {
	r, err := newRig(256)
	if err != nil {
		b.Fatal(err)
	}
	defer r.close()
	dir := b.TempDir()
	for _, tc := range []struct {
		name  string
		store func() (records.Store, error)
	}{
		{"off", nil},
		{"discard", func() (records.Store, error) {
			s, err := records.Open(records.TypeSQLite, secret.New(filepath.Join(dir, "discard.sqlite")))
			return discardStore{s}, err
		}},
		{"sqlite", func() (records.Store, error) {
			return records.Open(records.TypeSQLite, secret.New(filepath.Join(dir, "bench.sqlite")))
		}},
		{"overloaded", func() (records.Store, error) {
			s, err := records.Open(records.TypeSQLite, secret.New(filepath.Join(dir, "slow.sqlite")))
			return slowStore{s, time.Second}, err
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			opts := server.Options{Transport: r.transport, Tokens: []secret.String{secret.New(clientToken)}}
			var w *records.Writer
			var stopWriter func()
			if tc.store != nil {
				st, err := tc.store()
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				w = records.NewWriter(st, records.WriterOptions{Queue: 1000, DrainTimeout: 10 * time.Second})
				opts.Records = w
				ctx, cancel := context.WithCancel(context.Background())
				ran := make(chan error, 1)
				go func() { ran <- w.Run(ctx) }()
				stopWriter = func() {
					cancel()
					<-ran
				}
			}
			srv, err := server.New(opts)
			if err != nil {
				b.Fatal(err)
			}
			ls, err := listen(srv.Handler())
			if err != nil {
				b.Fatal(err)
			}
			defer ls.srv.Close()
			client := &http.Client{Transport: newHTTPTransport(256)}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			b.SetParallelism(16) // 32 clients on 2 cores: the proxy saturates them
			cpu0 := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 32<<10)
				for pb.Next() {
					if _, _, err := do(context.Background(), client, ls.url, false, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if w != nil && tc.name != "overloaded" {
				// The records of the run are written on its time (the
				// overloaded store would take seconds: its point is that
				// requests do not wait for it).
				w.Flush(context.Background())
			}
			b.StopTimer()
			// CPU time of the whole process (clients and upstream too) per
			// request: steadier than wall time on a shared machine.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			if w != nil {
				stopWriter()
				s := w.Stats()
				b.ReportMetric(float64(s.Dropped)/float64(b.N), "dropped/op")
				b.ReportMetric(float64(s.Written)/float64(b.N), "written/op")
			}
		})
	}
}
