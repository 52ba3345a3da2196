package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/browsertest"
)

// The status page, in a real browser, over keypool serve with an admin
// token: the operator gives the token, sees the keys, sees a key go
// revoked without reloading, and disables a key with its button.
func TestStatusPageInABrowser(t *testing.T) {
	b := browsertest.New(t, 90*time.Second)
	r := newStatusRig(t, app.Options{})
	for range 3 {
		if code := r.chat(t); code != 200 {
			t.Fatalf("a chat completion: %d", code)
		}
	}
	doomed, spare := keypool.NewKey(statusDoomed).ID(), keypool.NewKey(statusSpare).ID()
	state := func(id keypool.KeyID) string {
		return `document.querySelector('tr[data-key="` + string(id) + `"] [data-field="state"]')`
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(b.Ctx, actions...); err != nil {
			t.Fatalf("%s: %v (console: %q)", what, err, b.Errors())
		}
	}

	// The page asks for the admin token, and then shows every key.
	run("open the page", chromedp.Navigate(r.base+"/status/"), chromedp.WaitVisible("#token-form"))
	run("give the token",
		chromedp.SendKeys("#token", statusAdmin),
		chromedp.Click(`#token-form button[type="submit"]`),
		chromedp.WaitVisible(`#live[data-state="live"]`),
	)
	for _, s := range []string{statusGood, statusSpare, statusDoomed} {
		run("see key "+s[:18], chromedp.WaitVisible(`tr[data-key="`+string(keypool.NewKey(s).ID())+`"]`))
	}
	text, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](state(doomed)+`.textContent`))
	if err != nil || text == "revoked" {
		t.Fatalf("the doomed key is %q before it was revoked (%v)", text, err)
	}

	// A key goes revoked upstream: the open page shows it, not reloaded.
	run("mark the page", chromedp.Evaluate[chromedp.Void](`window.keypoolTestMark = 1`))
	r.revokeDoomed(t)
	run("see the key revoked", chromedp.Poll[chromedp.Void](state(doomed)+`?.textContent === "revoked"`,
		chromedp.WithPollingTimeout(15*time.Second)))
	if mark, err := chromedp.Run(b.Ctx, chromedp.Evaluate[int](`window.keypoolTestMark || 0`)); err != nil || mark != 1 {
		t.Fatalf("the page was reloaded (%v)", err)
	}

	// Disable, with the key's button: the pool takes the key out.
	run("disable a key", chromedp.Click(`button[data-action="disable"][data-key="`+string(spare)+`"]`),
		chromedp.Poll[chromedp.Void](state(spare)+`?.textContent === "disabled"`, chromedp.WithPollingTimeout(15*time.Second)))
	if k, _ := r.app.Transport().Pool().Key(spare); k.State != keypool.StateDisabled {
		t.Fatalf("the pool holds the key as %s", k.State)
	}
	run("see it can be enabled", chromedp.WaitVisible(`button[data-action="enable"][data-key="`+string(spare)+`"]`))

	shot, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100)) // 100: a PNG
	if err != nil || len(shot) < 1000 {
		t.Fatalf("screenshot: %d bytes, %v", len(shot), err)
	}
	file := filepath.Join(t.TempDir(), "status.png")
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", file)
	if keep := os.Getenv("KEYPOOL_TEST_SCREENSHOT"); keep != "" {
		os.WriteFile(keep, shot, 0o644)
	}

	// Nothing secret in what the page holds, nor in what it shows.
	html, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML + location.href + document.cookie`))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statusSecrets {
		if strings.Contains(strings.ToLower(html), strings.ToLower(s)) {
			t.Errorf("the page shows %q", s)
		}
	}
	// The browser notes the first, refused, request for the data; nothing
	// else may be on the console (a script error, a CSP violation).
	for _, e := range b.Errors() {
		if !strings.Contains(e, "status of 401 (Unauthorized)") {
			t.Errorf("the page's console: %s", e)
		}
	}
}
