package keypool

import (
	"errors"
	"strconv"
	"time"
)

// State is where a key stands. A key is selectable while unchecked, ready or
// cooling (cooling only for the models, or until the time, it is cooling for);
// over quota and revoked keys wait for a recheck, disabled keys for the
// operator. The zero State is StateUnchecked.
type State uint8

const (
	StateUnchecked State = iota // not yet answered; usable
	StateReady                  // answered well
	StateCooling                // rate-limited or failing: unusable until a time, for one model or all
	StateOverQuota              // insufficient_quota, billing_not_active: until recheck
	StateRevoked                // invalid key, access terminated: until recheck
	StateDisabled               // by the operator
)

var stateNames = [...]string{
	StateUnchecked: "unchecked",
	StateReady:     "ready",
	StateCooling:   "cooling",
	StateOverQuota: "over_quota",
	StateRevoked:   "revoked",
	StateDisabled:  "disabled",
}

// String returns the state's snake_case name.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText encodes the state as its name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText sets s to the state text names, as MarshalText writes it,
// so that a KeyState or KeyInfo decodes from its JSON. A name this package
// does not define is an error, which does not repeat it.
func (s *State) UnmarshalText(text []byte) error {
	for i, name := range stateNames {
		if string(text) == name {
			*s = State(i)
			return nil
		}
	}
	return errors.New("keypool: unknown state name")
}

// Usable reports whether a key in state s may take requests, now or once a
// cooldown ends by itself: unchecked, ready or cooling. Over-quota and
// revoked keys wait for a recheck or Enable, disabled ones for Enable. A
// pool built with WithCheckedKeysOnly(true) also holds back the unchecked
// keys it never checked; Pool.Counts counts what it will select.
func (s State) Usable() bool {
	return s == StateUnchecked || s == StateReady || s == StateCooling
}

// FamilyUsage is a key's usage of one model family since the pool started.
type FamilyUsage struct {
	Family   string `json:"family"`
	Requests int64  `json:"requests"`
	Usage
}

// ModelLimits is what the answers of a key's scope said of one model's rate
// limits: the budget every key of its organization (or project) spends.
// Counts are Unknown (-1) until an answer states them; remaining counts are
// estimates at the snapshot's time (refilled at the rate the headers imply,
// or at the window's end for a windowed budget).
type ModelLimits struct {
	Model             string    `json:"model"`
	LimitRequests     int64     `json:"limit_requests"`
	RemainingRequests int64     `json:"remaining_requests"`
	LimitTokens       int64     `json:"limit_tokens"`
	RemainingTokens   int64     `json:"remaining_tokens"`
	InFlight          int       `json:"in_flight"`
	CoolingUntil      time.Time `json:"cooling_until,omitzero"`
	// Windowed reports a budget whose limit resets in fixed windows rather
	// than refilling continuously, as its answers showed.
	Windowed bool `json:"windowed,omitempty"`
}

// KeyInfo is a snapshot of one key: its ID and what the pool knows of it,
// never its secret.
type KeyInfo struct {
	ID KeyID `json:"id"`
	// Source is where the key came from ("keys.txt:12", "OPENAI_KEY[3]",
	// "config.yaml:8"; see Key.WithSource), "" when not known. A clone
	// has its key's. Never a secret.
	Source   string `json:"source,omitempty"`
	Upstream string `json:"upstream"`
	// Auth is the upstream's: a key of AuthNone or AuthCaller stands in for
	// an upstream without keys of its own.
	Auth UpstreamAuth `json:"auth,omitzero"`
	// Organization is the one the key is sent with, or for a key sent with
	// none, its default organization as the checker found it.
	Organization string `json:"organization,omitempty"`
	// Scope names the budget the key spends: its organization (and
	// project) as answers name them ("acme", "acme/proj_…"), "id:org-…" for
	// a configured organization not yet named by an answer, and "" for a
	// key whose organization is not known (a budget of its own).
	Scope string `json:"scope,omitempty"`
	// Clone marks an organization clone: the checker found the key in
	// several organizations and made one key per extra organization.
	Clone  bool      `json:"clone,omitempty"`
	State  State     `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
	// CoolingUntil is when the last cooldown of the key (for any model) ends.
	CoolingUntil time.Time `json:"cooling_until,omitzero"`
	Trial        bool      `json:"trial"`
	// Models the key may serve; nil when not known (any model is tried).
	Models []string `json:"models,omitempty"`
	Lacks  []string `json:"lacks,omitempty"`
	// NoStream lists models the key may not stream (an unverified
	// organization).
	NoStream []string `json:"no_stream,omitempty"`
	// LimitRequests and LimitTokens are the limits the last check's probe
	// answer stated (Unknown until checked).
	LimitRequests int64         `json:"limit_requests"`
	LimitTokens   int64         `json:"limit_tokens"`
	LastChecked   time.Time     `json:"last_checked,omitzero"`
	InFlight      int           `json:"in_flight"`
	LastUsed      time.Time     `json:"last_used,omitzero"`
	Limits        []ModelLimits `json:"limits,omitempty"`
	Usage         []FamilyUsage `json:"usage,omitempty"`
}

// AttemptEvent describes one attempt of one request, sent when the attempt's
// outcome is known: at once for a failed attempt, and at the end of the body
// (EOF or Close) for the answer handed to the caller.
type AttemptEvent struct {
	Request  uint64 // numbers the RoundTrip, so the attempts of a request group together
	Attempt  int    // 1 for the first attempt
	Key      KeyID
	Upstream string
	// Model is the request's JSON model, or for a request without one its
	// route (/v1/files for /v1/files/file-abc/content).
	Model   string
	Stream  bool
	Status  int // 0 when no response arrived
	Outcome Outcome
	Err     error // transport error, if any; never holds a secret
	Start   time.Time
	// TimeToHeaders is the time until response headers (and, for a stream,
	// its first event) arrived.
	TimeToHeaders time.Duration
	// Duration runs until the attempt ended: for the answer handed back,
	// until its body was read to the end or closed.
	Duration time.Duration
	// Final marks the attempt whose answer went back to the caller.
	Final bool
	Usage Usage

	reqObs Observer // the request's own observer (ContextWithObserver)
}

// StateEvent describes one change of a key's state. A change heard from
// another replica through a StateSubscriber (see WithStateStore) is sent
// on every replica that applies it, marked Heard, as well as on the one
// that made it: counters and notifications that must not repeat per
// replica pass over heard ones.
type StateEvent struct {
	Key      KeyID
	Upstream string
	From, To State
	Reason   string
	Model    string    // set when a cooldown holds for one model only
	Until    time.Time // when a cooldown ends
	At       time.Time
	Heard    bool // made on another replica, and applied here
}

// Observer receives events from the transport, the pool and the checker:
// every attempt, every change of a key's state, and every key's check. Its
// methods are called synchronously from request and checking goroutines,
// concurrently, never with a lock held: they must be quick and must not
// block. Metrics, request records and notifications are observers. Embed
// ObserverFuncs to implement only some of the methods.
type Observer interface {
	Attempt(AttemptEvent)
	StateChange(StateEvent)
	Checked(CheckResult)
}

// ObserverFuncs adapts functions to Observer; a nil field ignores its events.
type ObserverFuncs struct {
	OnAttempt     func(AttemptEvent)
	OnStateChange func(StateEvent)
	OnChecked     func(CheckResult)
}

// Attempt calls f.OnAttempt if set.
func (f ObserverFuncs) Attempt(e AttemptEvent) {
	if f.OnAttempt != nil {
		f.OnAttempt(e)
	}
}

// StateChange calls f.OnStateChange if set.
func (f ObserverFuncs) StateChange(e StateEvent) {
	if f.OnStateChange != nil {
		f.OnStateChange(e)
	}
}

// Checked calls f.OnChecked if set.
func (f ObserverFuncs) Checked(r CheckResult) {
	if f.OnChecked != nil {
		f.OnChecked(r)
	}
}

// observers fans events out to several observers.
type observers []Observer

func (o observers) Attempt(e AttemptEvent) {
	for _, x := range o {
		x.Attempt(e)
	}
}

func (o observers) StateChange(e StateEvent) {
	for _, x := range o {
		x.StateChange(e)
	}
}

func (o observers) Checked(r CheckResult) {
	for _, x := range o {
		x.Checked(r)
	}
}
