package keypool

import (
	"context"
	"time"
)

// KeyState is what a pool knows of one key that outlives a process: its
// lifecycle state and why, and what its checks and answers found. It never
// holds the key's secret. A StateStore keeps KeyStates so that a restarted
// pool, or another replica over the same keys, starts from them.
type KeyState struct {
	ID       KeyID  `json:"id"`
	Upstream string `json:"upstream"`
	// State is the key's lifecycle state (never StateCooling, which is
	// derived from Cooldown) and Reason why, since Since.
	State  State     `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
	// Checked is when the key was last checked; zero: never.
	Checked time.Time `json:"checked,omitzero"`
	// ProbeRequests and ProbeTokens are the limits that check's probe
	// answer stated (KeyInfo.LimitRequests and LimitTokens); 0: none.
	ProbeRequests int64 `json:"probe_requests,omitempty"`
	ProbeTokens   int64 `json:"probe_tokens,omitempty"`
	// Trial, Organization and Scope are as in KeyInfo.
	Trial        bool   `json:"trial,omitempty"`
	Organization string `json:"organization,omitempty"`
	Scope        string `json:"scope,omitempty"`
	// Models the key may serve (nil: not known), and those it may not
	// stream.
	Models   []string `json:"models,omitempty"`
	NoStream []string `json:"no_stream,omitempty"`
	// Cooldown is when the key's rest after failures ends.
	Cooldown time.Time `json:"cooldown,omitzero"`
	// Clones names the organizations the checker found the key in beyond
	// its own, one organization clone each; OrgsKnown says the key's
	// organizations were listed (or found unlistable).
	Clones    []string `json:"clones,omitempty"`
	OrgsKnown bool     `json:"orgs_known,omitempty"`
	// Updated is when this state was made, by the pool's clock: of two
	// states of one key, the later one wins.
	Updated time.Time `json:"updated"`
}

// A StateStore keeps the KeyStates of a pool beyond its process: a
// database for restarts, or a service shared by replicas.
type StateStore interface {
	// Load returns the states saved before. New calls it once, and starts
	// without them when it fails or takes too long.
	Load(ctx context.Context) ([]KeyState, error)
	// Save is given a key's state each time it changes, from the goroutine
	// that changed it, without the pool's lock held. It must not block:
	// a store queues states (the latest per key is enough) and writes them
	// in the background.
	Save(KeyState)
}

// A StateSubscriber is a StateStore that also hears of the states other
// pools over the same keys save (other replicas). New calls Subscribe once,
// after Load, with apply; the store calls apply from its own goroutines for
// each state it hears of, in any order, possibly more than once, and for every
// state again after it reconnects.
type StateSubscriber interface {
	StateStore
	Subscribe(apply func(KeyState))
}
