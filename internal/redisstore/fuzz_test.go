package redisstore

import (
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/keystates"
)

// FuzzDecode feeds decode what Redis might hold under the store's keys:
// another program's data, an older format. It must never panic, and what it
// accepts is a state of a key ID, of a state keypool stores, with a time.
func FuzzDecode(f *testing.F) {
	f.Add("kp_0000000000000001", `{"id":"kp_0000000000000001","state":"revoked","updated":"2026-12-01T10:00:00Z"}`)
	f.Add("", `{"id":"kp_0000000000000001","state":"ready","models":["a"],"updated":"2026-12-01T10:00:00Z"}`)
	f.Add("kp_0000000000000001", `{"id":"kp_0000000000000001","state":7}`)
	f.Add("x", `[]`)
	f.Fuzz(func(t *testing.T, id, data string) {
		st, err := decode(id, []byte(data))
		if err != nil {
			return
		}
		if !keystates.ValidID(string(st.ID)) || id != "" && string(st.ID) != id {
			t.Errorf("decode(%q) accepted ID %q", id, st.ID)
		}
		if st.State == keypool.StateCooling || st.Updated.IsZero() || st.State.String()[0] == 's' {
			t.Errorf("decode accepted state %v at %v", st.State, st.Updated)
		}
	})
}
