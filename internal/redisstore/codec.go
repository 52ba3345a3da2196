package redisstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/keystates"
)

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
	} else if keystates.ValidID(id) {
		name = "key state " + id
	}
	bad := func(why string) (keypool.KeyState, error) {
		return keypool.KeyState{}, fmt.Errorf("redisstore: %s: %s", name, why)
	}
	if id != "" && !keystates.ValidID(id) {
		return bad("skipped")
	}
	var stored keystates.Stored
	if err := json.Unmarshal(data, &stored); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field != "" {
			return bad(strings.TrimPrefix(typ.Field, "KeyState.") + ": want " + typ.Type.String())
		}
		return bad("not JSON of a key state")
	}
	switch {
	case id == "" && !keystates.ValidID(string(stored.ID)):
		return bad("no key ID")
	case id != "" && string(stored.ID) != id:
		return bad("holds the state of another ID")
	}
	if id == "" {
		name = "key state " + string(stored.ID) + " (a message)"
	}
	st, err := stored.Check()
	if err != nil {
		return bad(err.Error())
	}
	return st, nil
}
