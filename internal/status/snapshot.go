package status

import (
	"context"
	"encoding/json"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/records"
)

// Snapshot is what the page shows at one time: data answers one, events
// streams them. It holds keys by ID and source only, never a secret.
type Snapshot struct {
	Now        time.Time         `json:"now"`
	IntervalMS int64             `json:"interval_ms"`
	InFlight   int64             `json:"in_flight"`
	Counts     Counts            `json:"counts"`
	Upstreams  []UpstreamView    `json:"upstreams"`
	Keys       []keypool.KeyInfo `json:"keys"`
	// KeysTotal is every key's count; Keys lists the first maxKeys, and
	// Budgets are theirs, so that a snapshot stays small however large
	// the pool.
	KeysTotal int      `json:"keys_total"`
	Budgets   []Budget `json:"budgets"`
	Minutes   Minutes  `json:"minutes"`
	Events    []Event  `json:"events"`
}

// Counts is how many keys are in each state, and how many are usable.
type Counts struct {
	Usable int            `json:"usable"`
	States map[string]int `json:"states"`
}

// UpstreamView is an upstream with its keys by state.
type UpstreamView struct {
	Upstream
	Keys   int            `json:"keys"`
	States map[string]int `json:"states"`
}

// Budget is one scope's budget (the organization or project its keys
// share; "key:<id>" for a key whose organization is not known): what its
// answers said of each model's limits.
type Budget struct {
	Scope  string                `json:"scope"`
	Keys   []keypool.KeyID       `json:"keys"`
	Models []keypool.ModelLimits `json:"models"`
}

// snapshot returns the page's snapshot at now, as JSON.
func (p *Page) snapshot(now time.Time) []byte {
	keys := p.opts.Keys()
	s := Snapshot{Now: now.UTC(), IntervalMS: p.opts.Interval.Milliseconds(), KeysTotal: len(keys),
		Counts: Counts{States: map[string]int{}}, Events: p.history.latest(), Minutes: p.minutes(now)}
	ups := p.upstreams()
	byName := make(map[string]int, len(ups))
	for i, u := range ups {
		byName[u.Name] = i
	}
	budgets := map[string]int{}
	var inFlight int64
	for i := range keys {
		k := &keys[i]
		state := k.State.String()
		s.Counts.States[state]++
		if k.State.Usable() {
			s.Counts.Usable++
		}
		inFlight += int64(k.InFlight)
		j, ok := byName[k.Upstream]
		if !ok { // an upstream not (or no longer) configured
			j = len(ups)
			byName[k.Upstream] = j
			ups = append(ups, UpstreamView{Upstream: Upstream{Name: k.Upstream}, States: map[string]int{}})
		}
		ups[j].Keys++
		ups[j].States[state]++
		if i >= maxKeys { // counted above; listed, with its budget, only among the first maxKeys
			continue
		}
		scope := k.Scope
		if scope == "" {
			scope = "key:" + string(k.ID)
		}
		b, ok := budgets[scope]
		if !ok {
			b = len(s.Budgets)
			budgets[scope] = b
			s.Budgets = append(s.Budgets, Budget{Scope: scope, Models: k.Limits})
		}
		s.Budgets[b].Keys = append(s.Budgets[b].Keys, k.ID)
		if len(s.Budgets[b].Models) == 0 {
			s.Budgets[b].Models = k.Limits
		}
	}
	s.Upstreams = ups
	s.Keys = keys[:min(len(keys), maxKeys)]
	if p.opts.InFlight != nil {
		inFlight = p.opts.InFlight()
	}
	s.InFlight = inFlight
	body, err := json.Marshal(&s)
	if err != nil {
		panic(err) // a Snapshot always marshals
	}
	return body
}

func (p *Page) upstreams() []UpstreamView {
	var ups []Upstream
	if p.opts.Upstreams != nil {
		ups = p.opts.Upstreams()
	}
	out := make([]UpstreamView, len(ups))
	for i, u := range ups {
		out[i] = UpstreamView{Upstream: u, States: map[string]int{}}
	}
	return out
}

// recordsCache is the charts as last read from the records store.
type recordsCache struct {
	at      time.Time
	minutes Minutes
	ok      bool
}

// minutes is the charts' data: from the records store when there is one
// and it answers (read again every RecordsEvery), else from memory.
// It requires that p.build is held.
func (p *Page) minutes(now time.Time) Minutes {
	if p.opts.Records == nil {
		return p.history.minutes(now)
	}
	c := &p.recs
	if c.at.IsZero() || now.Sub(c.at) >= RecordsEvery || now.Before(c.at) || unixMinute(now) != unixMinute(c.at) {
		m, err := p.readRecords(now)
		c.at, c.minutes, c.ok = now, m, err == nil
		if err != nil {
			p.opts.Logger.Warn("status page: the records store did not answer; the charts show this replica's requests since it started",
				"err", err)
		}
	}
	if !c.ok {
		return p.history.minutes(now)
	}
	return c.minutes
}

func (p *Page) readRecords(now time.Time) (Minutes, error) {
	out := newMinutes("records", now)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	groups, err := p.opts.Records.Aggregate(ctx, records.Query{Since: out.Start}, records.ByMinute)
	if err != nil {
		return Minutes{}, err
	}
	for _, g := range groups {
		t, err := time.Parse(time.RFC3339, g.Group)
		if err != nil {
			continue
		}
		if i, ok := out.index(t); ok {
			out.Requests[i], out.Errors[i], out.Tokens[i] = g.Requests, g.Errors, g.InputTokens+g.OutputTokens
		}
	}
	return out, nil
}
