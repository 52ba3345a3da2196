package main

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"golang.org/x/term"

	"github.com/keypool/keypool"
)

// progress shows key checks as they finish: on a terminal, one bar line
// redrawn in place; otherwise one plain line per key, fit for logs. Its
// observe method is the checker's observer, so it is called concurrently.
type progress struct {
	w        io.Writer
	tty      bool
	poolSize func() int // keys in the pool; it grows as clones are found

	mu     sync.Mutex
	total  int
	done   int
	drawn  bool // a bar is on screen
	counts map[string]int
}

func newProgress(w io.Writer, poolSize func() int) *progress {
	return &progress{w: w, tty: isTerminal(w), poolSize: poolSize, total: poolSize(), counts: map[string]int{}}
}

// isTerminal reports whether w is a terminal (a file whose descriptor is one).
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

func (p *progress) observe(r keypool.CheckResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	if len(r.Clones) > 0 {
		// New keys only come with clones; the pool's size is read only then.
		p.total = p.poolSize()
	}
	p.total = max(p.total, p.done)
	state := r.State.String()
	if r.Err != nil {
		state = "unreachable"
	}
	p.counts[state]++
	if !p.tty {
		fmt.Fprintf(p.w, "checked %s %s (%d/%d)\n", r.Key, state, p.done, p.total)
		return
	}
	const width = 24
	fill := width * p.done / p.total
	fmt.Fprintf(p.w, "\r\x1b[Kchecking keys [%s%s] %d/%d  %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		p.done, p.total, p.countsText())
	p.drawn = true
}

// countsText is "2 ready, 1 revoked", in a fixed order.
func (p *progress) countsText() string {
	var parts []string
	for _, s := range []string{"ready", "cooling", "unchecked", "over_quota", "revoked", "disabled", "unreachable"} {
		if n := p.counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	return strings.Join(parts, ", ")
}

// finish ends the bar's line and sums the run up.
func (p *progress) finish(results []keypool.CheckResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
	}
	fmt.Fprintf(p.w, "checked %s\n", summary(results))
}
