package records

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/keypool/keypool"
)

// TestPendingClips: what a client chooses is kept up to its limit, cut at a
// rune boundary and marked with "…", and never more than the limit.
func TestPendingClips(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, field := range []struct {
		name  string
		limit int
		keep  func(p *Pending, s string) // sets the field to s
		kept  func(Record) string
	}{
		{"path", MaxPath, func(p *Pending, s string) { p.Reset(t0, "", "10.0.0.1", "GET", s) }, func(r Record) string { return r.Path }},
		{"method", MaxMethod, func(p *Pending, s string) { p.Reset(t0, "", "10.0.0.1", s, "/v1/models") }, func(r Record) string { return r.Method }},
		{"ip", MaxIP, func(p *Pending, s string) { p.Reset(t0, "", s, "GET", "/v1/models") }, func(r Record) string { return r.IP }},
		{"model of SetModel", MaxModel, func(p *Pending, s string) {
			p.Reset(t0, "", "10.0.0.1", "POST", "/v1/chat/completions")
			p.SetModel(s, false)
		}, func(r Record) string { return r.Model }},
		{"model of Attempt", MaxModel, func(p *Pending, s string) {
			p.Reset(t0, "", "10.0.0.1", "POST", "/v1/chat/completions")
			p.Attempt(keypool.AttemptEvent{Model: s, Key: "k1", Upstream: "openai", Status: 200, Final: true})
		}, func(r Record) string { return r.Model }},
	} {
		for _, tc := range []struct {
			name string
			in   string
			want int // the length kept
		}{
			{"short", "abc", 3},
			{"at the limit", strings.Repeat("a", field.limit), field.limit},
			{"a byte over", strings.Repeat("a", field.limit+1), field.limit},
			{"900 KiB", strings.Repeat("a", 900<<10), field.limit},
			// Each limit less the 3 bytes of "…" (1021, 253, 13, 61)
			// falls inside a rune of these inputs: the cut backs up to
			// its start. "ab" then 4-byte runes: boundaries at 2+4k,
			// 3 bytes back.
			{"4-byte runes", "ab" + strings.Repeat("😀", field.limit), field.limit - 3},
			// 2-byte runes: boundaries at 2k, 1 byte back.
			{"2-byte runes", strings.Repeat("é", field.limit), field.limit - 1},
			// 3-byte runes: boundaries at 3k, 1 byte back.
			{"3-byte runes", strings.Repeat("€", field.limit), field.limit - 1},
		} {
			t.Run(field.name+"/"+tc.name, func(t *testing.T) {
				var p Pending
				field.keep(&p, tc.in)
				got := field.kept(p.Finish(Outcome{Status: 200}))
				if len(got) != tc.want {
					t.Errorf("kept %d bytes, want %d", len(got), tc.want)
				}
				if !utf8.ValidString(got) {
					t.Errorf("kept invalid UTF-8: %q", got)
				}
				if len(tc.in) <= field.limit {
					if got != tc.in {
						t.Errorf("kept %q, want it whole", got)
					}
					return
				}
				head, ok := strings.CutSuffix(got, "…")
				if !ok || !strings.HasPrefix(tc.in, head) {
					t.Fatalf("kept %q: not the start of the input and \"…\"", got)
				}
				// The cut is as late as it can be: the next rune would not fit.
				if _, size := utf8.DecodeRuneInString(tc.in[len(head):]); len(head)+size+len("…") <= field.limit {
					t.Errorf("cut at %d, before a rune that fits", len(head))
				}
				// The record holds its own bytes, not the client's string.
				in, out := uintptr(unsafe.Pointer(unsafe.StringData(tc.in))), uintptr(unsafe.Pointer(unsafe.StringData(got)))
				if out >= in && out < in+uintptr(len(tc.in)) {
					t.Error("the clipped string keeps the input alive")
				}
			})
		}
	}
}

// TestClipInvalidUTF8: bytes that are not UTF-8 are cut all the same, within
// the limit (the store turns them into U+FFFD).
func TestClipInvalidUTF8(t *testing.T) {
	for _, in := range []string{strings.Repeat("\xff", 100), strings.Repeat("\x80", 100), "a" + strings.Repeat("\xf0\x9f", 50)} {
		got := clip(in, 16)
		if len(got) > 16 || len(got) < 16-utf8.UTFMax || !strings.HasSuffix(got, "…") {
			t.Errorf("clip(%q, 16) = %q", in, got)
		}
	}
}

// TestPendingDoesNotAllocate: a record of a request within the limits costs
// what it did before they were: one copy of its attempts at Finish.
func TestPendingDoesNotAllocate(t *testing.T) {
	var p Pending
	e := keypool.AttemptEvent{Model: "gpt-4o-mini", Key: "k1", Upstream: "openai", Status: 200, Final: true}
	n := testing.AllocsPerRun(100, func() {
		p.Reset(time.Time{}, "ct_0123456789abcdef", "10.0.0.1", "POST", "/v1/chat/completions")
		p.SetModel("gpt-4o-mini", false)
		p.Attempt(e)
		p.Finish(Outcome{Status: 200})
	})
	if n != 1 {
		t.Errorf("%v allocations per record, want 1", n)
	}
}
