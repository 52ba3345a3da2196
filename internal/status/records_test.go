package status_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/status"
)

// failingStore is a records store that cannot be read.
type failingStore struct{ records.Store }

func (failingStore) Aggregate(context.Context, records.Query, records.GroupBy) ([]records.Group, error) {
	return nil, errors.New("store down")
}

// With records on, the charts count what the store holds (every replica's
// requests, and those from before a restart), by minute; a store that does
// not answer leaves them to this process's memory.
func TestChartsFromRecords(t *testing.T) {
	store, err := records.Open(records.TypeSQLite, secret.New(":memory:"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	now := time.Date(2026, 12, 2, 14, 30, 20, 0, time.UTC)
	recs := []records.Record{
		{Time: now.Add(-10 * time.Second), Status: 200, InputTokens: 10, OutputTokens: 5},
		{Time: now.Add(-15 * time.Second), Status: 429, Error: "rate_limited"},
		{Time: now.Add(-59 * time.Minute), Status: 200, InputTokens: 1, OutputTokens: 1},
		{Time: now.Add(-61 * time.Minute), Status: 200, InputTokens: 100}, // before the hour
	}
	if err := store.Insert(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return now }
	r := newRig(t, status.Options{Records: store, Now: clock}, fakeopenai.Key{Secret: good})
	r.chat(t) // in memory only: not in the store
	m := decode(t, r.get(t, "/status/data").Body.Bytes()).Minutes
	if m.Source != "records" || !m.Start.Equal(time.Date(2026, 12, 2, 13, 31, 0, 0, time.UTC)) ||
		m.Requests[59] != 2 || m.Errors[59] != 1 || m.Tokens[59] != 15 || m.Requests[0] != 1 || m.Tokens[0] != 2 {
		t.Fatalf("minutes %+v", m)
	}
	var total int64
	for _, n := range m.Requests {
		total += n
	}
	if total != 3 {
		t.Fatalf("%d requests in the hour; the store holds 3", total)
	}

	down := newRig(t, status.Options{Records: failingStore{store}, Now: clock}, fakeopenai.Key{Secret: good})
	m = decode(t, down.get(t, "/status/data").Body.Bytes()).Minutes
	if m.Source != "memory" {
		t.Fatalf("with the store down, the charts come from %s", m.Source)
	}
}
