package keystates

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx ends; it reports whether d passed. The
// stores' writers wait with it between tries and for Linger.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
