package keystates

import (
	"strings"
	"testing"

	"github.com/keypool/keypool"
)

func TestStoredCheck(t *testing.T) {
	for i := range 256 {
		s := keypool.State(i)
		if strings.HasPrefix(s.String(), "state(") {
			break
		}
		got, err := Stored{KeyState: st("a", 1), State: s.String()}.Check()
		if s == keypool.StateCooling {
			if err == nil || err.Error() != "cooling, which is never stored (a cooldown is)" {
				t.Errorf("Check of cooling: %v", err)
			}
			continue
		}
		if err != nil || got.State != s || got.ID != "a" {
			t.Errorf("Check of %q = %+v, %v", s, got, err)
		}
	}
	tests := []struct {
		name, state string
		updated     bool
		want        string
	}{
		{"empty name", "", true, "unknown state"},
		{"past the last", "state(9)", true, "unknown state"},
		{"capitalised", "Revoked", true, "unknown state"},
		{"trailing space", "revoked ", true, "unknown state"},
		{"no time", "revoked", false, "no updated time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Stored{KeyState: keypool.KeyState{ID: "a"}, State: tt.state}
			if tt.updated {
				s.Updated = t0
			}
			if _, err := s.Check(); err == nil || err.Error() != tt.want {
				t.Errorf("Check = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"kp_0123456789abcdef": true, "kp_0123456789ABCDEF": false, "kp_0123456789abcde": false,
		"kp_0123456789abcdef0": false, "sk_0123456789abcdef": false, "": false,
	} {
		if ValidID(id) != want {
			t.Errorf("ValidID(%q) = %v", id, !want)
		}
	}
}
