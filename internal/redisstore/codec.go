package redisstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/keypool/keypool"
)

// storedState decodes a state's JSON. Its State, a name, hides the embedded
// KeyState's: the name is checked against keypool's states here, so that a
// name this keypool does not know is an entry skipped, not a guess.
type storedState struct {
	keypool.KeyState
	State string `json:"state"`
}

// decode decodes the JSON of a state. id is the hash field it was read from
// ("" for a message, which names its key only inside). Its error names the
// key by its ID when the entry has one, never by anything else it holds,
// which might be another program's secret: not JSON of a KeyState, an ID
// that is not a key's (or not id), a state name it does not know (or
// cooling, never stored), no Updated time.
func decode(id string, data []byte) (keypool.KeyState, error) {
	name := "an entry whose name is not a key ID"
	if id == "" {
		name = "a message"
	} else if isKeyID(id) {
		name = "key state " + id
	}
	bad := func(why string) (keypool.KeyState, error) {
		return keypool.KeyState{}, fmt.Errorf("redisstore: %s: %s", name, why)
	}
	if id != "" && !isKeyID(id) {
		return bad("skipped")
	}
	var stored storedState
	if err := json.Unmarshal(data, &stored); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return bad(strings.TrimPrefix(typ.Field, "KeyState.") + ": want " + typ.Type.String())
		}
		return bad("not JSON of a key state")
	}
	st := stored.KeyState
	switch {
	case id == "" && !isKeyID(string(st.ID)):
		return bad("no key ID")
	case id != "" && string(st.ID) != id:
		return bad("holds the state of another ID")
	}
	if id == "" {
		name = "key state " + string(st.ID) + " (a message)"
	}
	state, ok := parseState(stored.State)
	switch {
	case !ok:
		return bad("unknown state")
	case state == keypool.StateCooling:
		return bad("cooling, which is never stored (a cooldown is)")
	case st.Updated.IsZero():
		return bad("no updated time")
	}
	st.State = state
	return st, nil
}

// parseState returns the State named name. keypool's states are numbered
// from 0 up, and String names those past the last "state(N)".
func parseState(name string) (keypool.State, bool) {
	for i := range 256 {
		s := keypool.State(i)
		n := s.String()
		if strings.HasPrefix(n, "state(") {
			break
		}
		if n == name {
			return s, true
		}
	}
	return 0, false
}

// isKeyID reports whether id has the form of a keypool.KeyID: "kp_" and 16
// lowercase hex digits.
func isKeyID(id string) bool {
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
