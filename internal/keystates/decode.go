package keystates

import (
	"errors"
	"strings"

	"github.com/keypool/keypool"
)

// Stored decodes a stored state's JSON. Its State, a name, hides the
// embedded KeyState's: Check checks the name against keypool's states, so
// that a name this keypool does not know is a state skipped, not a guess.
type Stored struct {
	keypool.KeyState
	State string `json:"state"`
}

// Check returns the KeyState s holds, its State set from the name, or why
// it may not be applied: a state name this keypool does not know, cooling
// (never stored: a cooldown is), or no Updated time. Its error says only
// that, for the store to wrap with what names the state; it never repeats
// what the state holds, which might be another program's secret.
func (s Stored) Check() (keypool.KeyState, error) {
	var state keypool.State
	switch {
	case state.UnmarshalText([]byte(s.State)) != nil:
		return keypool.KeyState{}, errors.New("unknown state")
	case state == keypool.StateCooling:
		return keypool.KeyState{}, errors.New("cooling, which is never stored (a cooldown is)")
	case s.Updated.IsZero():
		return keypool.KeyState{}, errors.New("no updated time")
	}
	st := s.KeyState
	st.State = state
	return st, nil
}

// ValidID reports whether id has the form of a keypool.KeyID: "kp_" and
// 16 lowercase hex digits. (keypool checks the same, unexported.)
func ValidID(id string) bool {
	rest, ok := strings.CutPrefix(id, "kp_")
	if !ok || len(rest) != 16 {
		return false
	}
	for _, c := range []byte(rest) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
