package keystates

import (
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func st(id string, sec int) keypool.KeyState {
	return keypool.KeyState{ID: keypool.KeyID(id), Updated: t0.Add(time.Duration(sec) * time.Second)}
}

func ids(states []keypool.KeyState) string {
	s := ""
	for _, st := range states {
		s += string(st.ID) + "@" + st.Updated.Format("05") + " "
	}
	return s
}

func TestQueue(t *testing.T) {
	q := NewQueue(3)
	if got := q.Take(); got != nil {
		t.Fatalf("Take of an empty queue = %v", got)
	}
	q.Put(st("b", 1))
	q.Put(st("a", 2))
	q.Put(st("a", 1)) // older: a@02 stays
	q.Put(st("b", 3)) // newer: replaces b@01
	select {
	case <-q.Wake():
	default:
		t.Error("no wake-up after Put")
	}
	taken := q.Take()
	if got, want := ids(taken), "a@02 b@03 "; got != want {
		t.Fatalf("Take = %s, want %s", got, want)
	}
	q.Put(st("a", 5)) // newer than the taken a@02
	if q.Pending() != 3 || q.Put(st("c", 1)) {
		t.Errorf("taken states do not count against max: pending %d", q.Pending())
	}
	q.PutBack(taken)
	if got, want := ids(q.Take()), "a@05 b@03 "; got != want {
		t.Errorf("after PutBack, Take = %s, want %s", got, want)
	}
	q.Done(2)
	if q.Pending() != 0 || q.Written() != 2 || q.Dropped() != 1 {
		t.Errorf("pending %d written %d dropped %d, want 0 2 1", q.Pending(), q.Written(), q.Dropped())
	}
}

func TestQueueCloseIfIdle(t *testing.T) {
	tests := []struct {
		name        string
		put         int
		giveUp      bool
		wantDropped int
		wantClosed  bool
	}{
		{"idle", 0, false, 0, true},
		{"waiting", 2, false, 0, false},
		{"gave up", 2, true, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := NewQueue(10)
			for i := range tt.put {
				q.Put(st(string(rune('a'+i)), 1))
			}
			dropped, closed := q.CloseIfIdle(tt.giveUp)
			if dropped != tt.wantDropped || closed != tt.wantClosed {
				t.Fatalf("CloseIfIdle = %d, %v, want %d, %v", dropped, closed, tt.wantDropped, tt.wantClosed)
			}
			if closed && q.Put(st("z", 1)) {
				t.Error("Put after close kept the state")
			}
			if want := uint64(tt.wantDropped); closed && q.Dropped() != want+1 {
				t.Errorf("dropped %d, want %d", q.Dropped(), want+1)
			}
		})
	}
}

// TestQueueTakeRacesPut: Take on an empty queue must not read the map Put
// writes to (run with -race).
func TestQueueTakeRacesPut(t *testing.T) {
	q := NewQueue(1000)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 500 {
			q.Put(st(string(rune('a'+i%26))+string(rune('a'+i/26)), i))
		}
	})
	n := 0
	for n < 500 {
		taken := q.Take()
		n += len(taken)
		q.Done(len(taken))
	}
	wg.Wait()
	if q.Pending() != 0 || q.Written() != 500 {
		t.Errorf("pending %d written %d", q.Pending(), q.Written())
	}
}
