//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/keypool/keypool/internal/fakeopenai"
)

// TestServeSIGHUPReloads sends the test process a real SIGHUP while serve
// runs: serve reloads its config (the added key serves) and goes on; the
// signal does not end the process, as it did before serve caught it.
func TestServeSIGHUPReloads(t *testing.T) {
	key1, key2, token := "sk-hup-one-111111111111111", "sk-hup-two-222222222222222", "tok-hup-333333333333333"
	fake, url := fakeopenai.NewTestServer(t, fakeopenai.Config{}, fakeopenai.Key{Secret: key1}, fakeopenai.Key{Secret: key2})
	noEnv(t)
	file := filepath.Join(t.TempDir(), "config.yaml")
	write := func(keys string) {
		yaml := "authorization: \"" + token + "\"\nlisten: 127.0.0.1:0\nupstreams:\n  - sk: \"" + keys + "\"\n    endpoint: " + url + "\n"
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(key1)
	stderr := &lockedBuffer{}
	base, stop := startServe(t, stderr, "--config", file)

	write(key2)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr, `msg="config reloaded" added=1 removed=1 kept=0`)
	if code, body := post(t, base+"/v1/chat/completions", token, chatRequest); code != 200 {
		t.Fatalf("after SIGHUP: %d %s", code, body)
	}
	if fake.Count(key2) == 0 {
		t.Fatal("the key the reload added served nothing")
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	log := stderr.String()
	if !strings.Contains(log, "msg=stopped") {
		t.Fatalf("serve did not stop cleanly:\n%s", log)
	}
	assertNoSecret(t, log, key1, key2, token)
}
