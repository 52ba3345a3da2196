package fakeopenai

import (
	"strings"
	"testing"
)

func FuzzNegotiateCoding(f *testing.F) {
	for _, v := range []string{"", "gzip", "gzip, deflate, br", "gzip;q=0, deflate", "*;q=0.5", "*, gzip;q=0",
		"identity", "x-gzip;Q=1.0", "deflate;q=0.001", ",,;q=", "gzip;q=1.5", "gzip;q=;q=0", " GZIP ; q = 0 "} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := negotiateCoding([]string{v})
		switch got {
		case "", codingGzip, codingDeflate:
		default:
			t.Fatalf("negotiateCoding(%q) = %q", v, got)
		}
		if lower := strings.ToLower(v); got != "" && !strings.Contains(lower, got) && !strings.Contains(lower, "*") {
			t.Errorf("negotiateCoding(%q) = %q, which the request never named", v, got)
		}
		// A list split over several header lines means the same.
		if lines := negotiateCoding(strings.Split(v, ",")); lines != got {
			t.Errorf("negotiateCoding(%q) = %q, but %q over lines", v, got, lines)
		}
	})
}
