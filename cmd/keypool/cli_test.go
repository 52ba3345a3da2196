package main

import (
	"bytes"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/keypool/keypool"
)

func TestDemo(t *testing.T) {
	var secrets []string
	for _, k := range demoKeys {
		secrets = append(secrets, k.key.Secret)
	}
	out, errOut, code := cli(t, secrets, "demo")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"fake OpenAI API on http://127.0.0.1:", "request 20", "failing over", "what the pool learned:", "KEY", "revoked", "over_quota"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// The records: every request of the demo, grouped by the key that
	// served it (a request no key served has none).
	_, recs, ok := strings.Cut(out, "request records by key")
	if !ok {
		t.Fatalf("no records table:\n%s", out)
	}
	total := 0
	for _, m := range regexp.MustCompile(`(?m)^(\S+)\s+(\d+)\s+\d+\s`).FindAllStringSubmatch(recs, -1) {
		n, _ := strconv.Atoi(m[2])
		total += n
	}
	if total != demoRequests {
		t.Errorf("records count %d requests, the demo sent %d:\n%s", total, demoRequests, recs)
	}
	// The state table has a row per key, by name and ID.
	for _, k := range demoKeys {
		if !strings.Contains(out, string(keypool.NewKey(k.key.Secret).ID())) {
			t.Errorf("no row for %s", k.name)
		}
	}
}

func TestVersion(t *testing.T) {
	want := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		want = bi.Main.Version
	}
	out, _, code := cli(t, nil, "version")
	if code != 0 || out != "keypool "+want+"\n" {
		t.Errorf("exit %d, output %q", code, out)
	}
	out, _, code = cli(t, nil, "--version")
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("--version: exit %d, output %q", code, out)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		out, errOut, code := cli(t, nil, "completion", shell)
		if code != 0 || !strings.Contains(out, "keypool") {
			t.Errorf("%s: exit %d, %d bytes\n%s", shell, code, len(out), errOut)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	_, errOut, code := cli(t, []string{"sk-typed-0123456789abcdef"}, "sk-typed-0123456789abcdef")
	if code != 1 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestErrorsHideGivenSecrets: cobra's messages repeat what was typed; the
// secrets a run was given (keys among the arguments, the environment's
// keys and tokens) are scrubbed from them.
func TestErrorsHideGivenSecrets(t *testing.T) {
	const envKey, envToken = "env-key-0123456789abcdef", "env-admin-0123456789abcdef"
	t.Setenv("OPENAI_KEY", "sk-other-0123456789, "+envKey)
	t.Setenv("KEYPOOL_ADMIN_TOKEN", envToken)
	for _, tc := range []struct {
		name    string
		secrets []string
		args    []string
		want    string
	}{
		{"key as a flag value", []string{"sk-typed-0123456789abcdef"}, []string{"check", "--rate", "sk-typed-0123456789abcdef"}, `invalid argument "[redacted]" for "--rate" flag`},
		{"keys after =", []string{"sk-typed-aaaaaaaaaaaa", "sk-typed-bbbbbbbbbbbb"}, []string{"check", "--rate=sk-typed-aaaaaaaaaaaa,sk-typed-bbbbbbbbbbbb"}, `invalid argument "[redacted],[redacted]"`},
		{"the environment's key", []string{envKey}, []string{envKey}, `unknown command "[redacted]"`},
		{"the environment's admin token", []string{envToken}, []string{"keys", "--json=" + envToken}, `invalid argument "[redacted]" for "--json" flag`},
		{"--admin-token's value", []string{"tok-flag-0123456789"}, []string{"keys", "--admin-token", "tok-flag-0123456789", "tok-flag-0123456789"}, `unknown command "[redacted]"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := cli(t, tc.secrets, tc.args...)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q, want it to hold %q", code, errOut, tc.want)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	size := 2
	for _, tc := range []struct {
		name string
		tty  bool
		want []string
	}{
		{"plain", false, []string{"checked kp_a ready (1/2)\n", "checked kp_b revoked (2/3)\n", "checked kp_c unreachable (3/3)\n", "checked 3 keys: 1 ready, 1 revoked, 1 unreachable\n"}},
		{"terminal", true, []string{"\r\x1b[Kchecking keys [############............] 1/2  1 ready", "] 2/3  1 ready, 1 revoked", "[########################] 3/3  1 ready, 1 revoked, 1 unreachable\nchecked 3 keys: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size = 2
			var buf bytes.Buffer
			p := newProgress(&buf, func() int { return size })
			p.tty = tc.tty
			results := []keypool.CheckResult{
				{Key: "kp_a", State: keypool.StateReady},
				{Key: "kp_b", State: keypool.StateRevoked, Clones: []keypool.KeyID{"kp_c"}},
				{Key: "kp_c", Err: errNetwork},
			}
			for i, r := range results {
				if i == 1 {
					size = 3 // the clone joined the pool
				}
				p.observe(r)
			}
			p.finish(results)
			for _, want := range tc.want {
				if !strings.Contains(buf.String(), want) {
					t.Errorf("progress %q lacks %q", buf.String(), want)
				}
			}
		})
	}
}

var errNetwork = &netError{}

type netError struct{}

func (*netError) Error() string { return "dial tcp 127.0.0.1:1: connection refused" }
