package metrics

import (
	"sync"
	"unicode/utf8"
)

// MaxModelLabels bounds the distinct values of the model label, and apart
// from it those of the family label. Model names come from clients, so
// without a bound a client could create series without end. The first
// MaxModelLabels values seen keep their name for the life of the Metrics;
// any later one is counted as [OtherLabel].
const MaxModelLabels = 100

// maxLabelLen bounds the bytes of one capped label value; a longer name is
// no model anybody serves and is counted as OtherLabel.
const maxLabelLen = 128

// OtherLabel is the label value that stands for every model (or family) past
// the cap, and for names that are too long or not valid UTF-8.
const OtherLabel = "other"

// labelCap admits at most max distinct label values; later ones map to
// OtherLabel. It is safe for simultaneous use by multiple goroutines; once
// full, lookups only take the read lock.
type labelCap struct {
	max  int
	mu   sync.RWMutex
	seen map[string]struct{}
}

func newLabelCap(max int) *labelCap {
	return &labelCap{max: max, seen: make(map[string]struct{}, max)}
}

// value returns v if it is, or may become, one of the admitted values, and
// OtherLabel otherwise. Invalid UTF-8 would make the Prometheus client panic.
func (c *labelCap) value(v string) string {
	if len(v) > maxLabelLen || !utf8.ValidString(v) {
		return OtherLabel
	}
	c.mu.RLock()
	_, ok := c.seen[v]
	full := len(c.seen) >= c.max
	c.mu.RUnlock()
	if ok {
		return v
	}
	if full {
		return OtherLabel
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[v]; ok {
		return v
	}
	if len(c.seen) >= c.max {
		return OtherLabel
	}
	c.seen[v] = struct{}{}
	return v
}
