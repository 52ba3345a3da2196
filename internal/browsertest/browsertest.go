// Package browsertest starts a headless Chromium for tests, driven with
// chromedp: Debian's chromium, at $KEYPOOL_TEST_CHROMIUM or on the PATH
// (.ci/chromium installs it in CI). A test that finds none skips, and says
// so; so does one run with -short, as a browser takes seconds to start.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is a headless Chromium tab for one test, and what its pages
// wrote to the console.
type Browser struct {
	// Ctx runs chromedp actions in the tab; it ends with the test, or
	// after the timeout New was given.
	Ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

// New starts Chromium with a fresh profile in t's temporary directory, on
// a 1280×1000 window, and returns its tab; it closes when t ends. Without
// Chromium, or with -short, t skips.
func New(t *testing.T, timeout time.Duration) *Browser {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIPPED: the browser test runs without -short")
	}
	path := os.Getenv("KEYPOOL_TEST_CHROMIUM")
	if path == "" {
		path, _ = exec.LookPath("chromium")
	}
	if path == "" {
		t.Skip("SKIPPED: no Chromium: install Debian's chromium or set KEYPOOL_TEST_CHROMIUM (.ci/run does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox will not start
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
		// This machine's network is closed: nothing may try to reach out.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		// For memory measurements: gc(), and heap sizes that are exact.
		chromedp.Flag("js-flags", "--expose-gc"),
		chromedp.Flag("enable-precise-memory-info", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	b := &Browser{Ctx: ctx}
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
		<-done
	})
	return b
}

// Errors returns the uncaught exceptions and console errors the pages
// wrote so far.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.console {
		if m.IsException() || m.Type == chromedp.ConsoleError {
			out = append(out, m.String())
		}
	}
	return out
}
