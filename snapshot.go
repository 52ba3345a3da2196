package keypool

import (
	"slices"
	"strings"
	"time"
)

// snapshotChunk bounds how long one snapshot holds the lock.
const snapshotChunk = 512

// Snapshot returns what the pool knows of every key now (by the pool's
// clock), in config order. It is safe to call while traffic flows: it takes
// the lock for a few hundred keys at a time.
func (p *Pool) Snapshot() []KeyInfo { return p.snapshot(p.cfg.now()) }

// snapshot is Snapshot at now.
func (p *Pool) snapshot(now time.Time) []KeyInfo {
	p.mu.Lock()
	n := len(p.keys)
	p.mu.Unlock()
	out := make([]KeyInfo, 0, n)
	for start := 0; start < n; start += snapshotChunk {
		p.mu.Lock()
		if start >= len(p.keys) {
			p.mu.Unlock() // Update removed keys meanwhile
			break
		}
		for _, k := range p.keys[start:min(start+snapshotChunk, len(p.keys))] {
			out = append(out, p.info(k, now))
		}
		p.mu.Unlock()
	}
	return out
}

// Key returns the snapshot of one key now (by the pool's clock), and false
// if the pool has no such key.
func (p *Pool) Key(id KeyID) (KeyInfo, bool) { return p.keyAt(id, p.cfg.now()) }

// keyAt is Key at now.
func (p *Pool) keyAt(id KeyID, now time.Time) (KeyInfo, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.byID[id]
	if k == nil {
		return KeyInfo{}, false
	}
	return p.info(k, now), true
}

// info builds one key's snapshot. Requires p.mu.
func (p *Pool) info(k *key, now time.Time) KeyInfo {
	st, until := p.derivedState(k, now)
	s := k.s
	ki := KeyInfo{
		ID: k.cred.id, Source: k.cred.source, Upstream: k.up.Name, Auth: k.up.Auth, Organization: k.org, Scope: s.name, Clone: k.clone,
		State: st, Reason: k.reason, Since: k.since, CoolingUntil: until, Trial: k.trial || s.trial,
		InFlight: k.inflight, LastUsed: k.lastUsed, LastChecked: k.checked,
		LimitRequests: k.probe.LimitRequests, LimitTokens: k.probe.LimitTokens,
	}
	if k.checked.IsZero() {
		ki.LimitRequests, ki.LimitTokens = Unknown, Unknown
	}
	if s.noStream != nil {
		ki.NoStream = sortedKeys(s.noStream)
	}
	if s.models != nil {
		ki.Models = sortedKeys(s.models)
	}
	ki.Lacks = s.lacks.names()
	for model, b := range k.up.buckets {
		bud := b.budgets[s.index]
		if bud == nil || bud.s != s || !bud.answered && bud.inflight == 0 && bud.until.IsZero() {
			continue
		}
		ml := ModelLimits{Model: model, LimitRequests: bud.limitReq, RemainingRequests: bud.estimate(now),
			LimitTokens: bud.limitTok, RemainingTokens: bud.remTok, InFlight: int(bud.inflight), Windowed: bud.windowed}
		if bud.until.After(now) {
			ml.CoolingUntil = bud.until
		}
		ki.Limits = append(ki.Limits, ml)
	}
	slices.SortFunc(ki.Limits, func(a, b ModelLimits) int { return strings.Compare(a.Model, b.Model) })
	for _, fam := range k.usageOrder {
		ki.Usage = append(ki.Usage, *k.usage[fam])
	}
	return ki
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k, ok := range m {
		if ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
