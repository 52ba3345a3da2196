package status

import (
	"fmt"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

// A day of events and traffic leaves the history its fixed size: the
// latest maxEvents events, newest first, and the last hour's minutes.
func TestHistoryIsBounded(t *testing.T) {
	var h history
	start := time.Date(2026, 12, 2, 0, 0, 30, 0, time.UTC)
	for i := range 24 * 60 {
		at := start.Add(time.Duration(i) * time.Minute)
		h.add(Event{At: at, Kind: "failover", Key: keypool.KeyID(fmt.Sprint("k", i))})
		h.count(at, int64(i%2), 10)
		h.count(at, 0, 5)
	}
	ev := h.latest()
	if len(ev) != maxEvents || ev[0].Key != "k1439" || ev[maxEvents-1].Key != keypool.KeyID(fmt.Sprint("k", 1440-maxEvents)) {
		t.Fatalf("%d events, newest %s, oldest %s", len(ev), ev[0].Key, ev[len(ev)-1].Key)
	}
	now := start.Add(24*time.Hour - time.Minute)
	m := h.minutes(now)
	if len(m.Requests) != minutes || !m.Start.Equal(time.Date(2026, 12, 2, 23, 0, 0, 0, time.UTC)) {
		t.Fatalf("%d slots from %v", len(m.Requests), m.Start)
	}
	for i := range minutes {
		if m.Requests[i] != 2 || m.Tokens[i] != 15 || m.Errors[i] != int64((1380+i)%2) {
			t.Fatalf("minute %d: %d requests, %d errors, %d tokens", i, m.Requests[i], m.Errors[i], m.Tokens[i])
		}
	}
	// An hour later with no traffic, the charts are empty; a request
	// from before the hour counts nowhere.
	h.count(start, 1, 1)
	m = h.minutes(now.Add(time.Hour))
	for i := range minutes {
		if m.Requests[i] != 0 {
			t.Fatalf("minute %d holds %d requests an hour after traffic stopped", i, m.Requests[i])
		}
	}
}

func TestUnixMinute(t *testing.T) {
	for _, tt := range []struct {
		t    time.Time
		want int64
	}{
		{time.Unix(0, 0), 0},
		{time.Unix(59, 999), 0},
		{time.Unix(60, 0), 1},
		{time.Unix(-1, 0), -1},
		{time.Unix(-60, 0), -1},
		{time.Unix(-61, 0), -2},
	} {
		if got := unixMinute(tt.t); got != tt.want {
			t.Errorf("unixMinute(%d) = %d; want %d", tt.t.Unix(), got, tt.want)
		}
		if i := ringIndex(tt.want); i < 0 || i >= minutes {
			t.Errorf("ringIndex(%d) = %d", tt.want, i)
		}
	}
}
