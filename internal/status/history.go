package status

import (
	"sync"
	"time"

	"github.com/keypool/keypool"
)

// minutes is how many minutes the charts cover.
const minutes = 60

// history is what a Page observed: requests, errors and tokens per minute
// over the last hour, in a ring of minute slots, and the latest events, in
// a ring of maxEvents. Both are fixed in size: a day of traffic holds no
// more than a minute of it.
type history struct {
	mu     sync.Mutex
	slots  [minutes]slot
	events [maxEvents]Event
	next   int // where the next event goes
	n      int // events held
}

type slot struct {
	minute                   int64 // Unix minute the counts are of
	requests, errors, tokens int64
}

// Event is a failover or a change of a key's state, as the page lists it.
type Event struct {
	At       time.Time      `json:"at"`
	Kind     string         `json:"kind"` // "state" or "failover"
	Key      keypool.KeyID  `json:"key"`
	Upstream string         `json:"upstream,omitempty"`
	From     *keypool.State `json:"from,omitempty"`
	To       *keypool.State `json:"to,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Model    string         `json:"model,omitempty"`
	Until    time.Time      `json:"until,omitzero"`
	Status   int            `json:"status,omitempty"`
	Outcome  string         `json:"outcome,omitempty"`
}

// Attempt counts a request when its answer went back to the caller (its
// final attempt: an error unless it succeeded), and lists a failover.
func (p *Page) Attempt(e keypool.AttemptEvent) {
	if !e.Final {
		if e.Outcome.Retryable() {
			p.history.add(Event{At: e.Start.Add(e.Duration), Kind: "failover", Key: e.Key, Upstream: e.Upstream,
				Model: e.Model, Status: e.Status, Outcome: e.Outcome.String()})
		}
		return
	}
	errored := int64(0)
	if e.Outcome != keypool.OutcomeSuccess {
		errored = 1
	}
	p.history.count(e.Start.Add(e.Duration), errored, e.Usage.InputTokens+e.Usage.OutputTokens)
}

// StateChange lists the change, and has open pages told soon.
func (p *Page) StateChange(e keypool.StateEvent) {
	from, to := e.From, e.To
	p.history.add(Event{At: e.At, Kind: "state", Key: e.Key, Upstream: e.Upstream, From: &from, To: &to,
		Reason: e.Reason, Model: e.Model, Until: e.Until})
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Checked does nothing: a check that changes a key's state says so in a
// StateChange.
func (p *Page) Checked(keypool.CheckResult) {}

func (h *history) count(t time.Time, errors, tokens int64) {
	m := unixMinute(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &h.slots[ringIndex(m)]
	if s.minute != m {
		if s.minute > m { // older than the hour the ring holds
			return
		}
		*s = slot{minute: m}
	}
	s.requests++
	s.errors += errors
	s.tokens += tokens
}

func (h *history) add(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events[h.next] = e
	h.next = (h.next + 1) % maxEvents
	h.n = min(h.n+1, maxEvents)
}

// latest returns the events held, newest first.
func (h *history) latest() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Event, 0, h.n)
	for i := 1; i <= h.n; i++ {
		out = append(out, h.events[(h.next-i+maxEvents)%maxEvents])
	}
	return out
}

// Minutes is the last hour, one slot per minute, oldest first; the last is
// the minute now falls in.
type Minutes struct {
	Source   string    `json:"source"` // "memory" or "records"
	Start    time.Time `json:"start"`
	Requests []int64   `json:"requests"`
	Errors   []int64   `json:"errors"`
	Tokens   []int64   `json:"tokens"`
}

func newMinutes(source string, now time.Time) Minutes {
	return Minutes{Source: source, Start: time.Unix((unixMinute(now)-minutes+1)*60, 0).UTC(),
		Requests: make([]int64, minutes), Errors: make([]int64, minutes), Tokens: make([]int64, minutes)}
}

// index is the slot of the minute t falls in, or false when t is outside
// the hour.
func (m *Minutes) index(t time.Time) (int, bool) {
	i := unixMinute(t) - unixMinute(m.Start)
	return int(i), i >= 0 && i < minutes
}

func (h *history) minutes(now time.Time) Minutes {
	out := newMinutes("memory", now)
	first := unixMinute(out.Start)
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range int64(minutes) {
		if s := h.slots[ringIndex(first+i)]; s.minute == first+i {
			out.Requests[i], out.Errors[i], out.Tokens[i] = s.requests, s.errors, s.tokens
		}
	}
	return out
}

// unixMinute is the minute t falls in, counted from 1970 (floored).
func unixMinute(t time.Time) int64 {
	s := t.Unix()
	if s < 0 {
		return (s - 59) / 60
	}
	return s / 60
}

func ringIndex(m int64) int { return int(((m % minutes) + minutes) % minutes) }
