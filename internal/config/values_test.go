package config

import (
	"errors"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestValuesReadThemselves: each kind of value reads itself through
// yaml.v3's decoder, and a bad one is a problem at its own line.
func TestValuesReadThemselves(t *testing.T) {
	var (
		d    time.Duration
		dOff time.Duration
		z    int64
		n    int
		b    bool
		chk  Checker
	)
	for _, tc := range []struct {
		in   string
		into yaml.Unmarshaler
		want func() bool
	}{
		{"90", (*duration)(&d), func() bool { return d == 90*time.Second }},
		{"1h30m", (*duration)(&d), func() bool { return d == 90*time.Minute }},
		{"off", (*durationOrOff)(&dOff), func() bool { return dOff == Off }},
		{"64MiB", (*size)(&z), func() bool { return z == 64<<20 }},
		{"12", (*count)(&n), func() bool { return n == 12 }},
		{"yes", (*boolean)(&b), func() bool { return b }},
		{"0", (*recheck)(&chk), func() bool { return chk.NoRecheck }},
	} {
		if err := yaml.Unmarshal([]byte(tc.in), tc.into); err != nil || !tc.want() {
			t.Errorf("%q into %T: %v", tc.in, tc.into, err)
		}
	}

	for _, tc := range []struct {
		in   string
		into yaml.Unmarshaler
		want string
	}{
		{"\n\nsoon", new(duration), "line 3: value must be seconds, such as 120, or a duration, such as 2m or 1h30m"},
		{"[1]", new(size), "line 1: value must be a single value, not a list or mapping"},
		{"maybe", new(boolean), "line 1: value must be true or false"},
		{"- a\n- [b]", new(patterns), "line 2: value: entry 2 must be a single value, not a list or mapping"},
	} {
		err := yaml.Unmarshal([]byte(tc.in), tc.into)
		var pr *problem
		if !errors.As(err, &pr) || err.Error() != tc.want {
			t.Errorf("%q into %T: error %v, want %q", tc.in, tc.into, err, tc.want)
		}
	}
}
