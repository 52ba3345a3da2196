package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"

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
	want := buildVersion(nil).Module // devel: test binaries have no module version
	if bi, ok := debug.ReadBuildInfo(); ok {
		want = buildVersion(bi).Module
	}
	out, errOut, code := cli(t, nil, "version")
	lines := strings.Split(out, "\n")
	if code != 0 || len(lines) != 5 || lines[0] != "keypool "+want || !strings.HasPrefix(lines[1], "commit:   ") ||
		lines[2] != "go:       "+runtime.Version() || lines[3] != "platform: "+runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("exit %d, output %q%s", code, out, errOut)
	}
	out, _, code = cli(t, nil, "--version")
	if code != 0 || out != "keypool "+want+"\n" {
		t.Errorf("--version: exit %d, output %q", code, out)
	}
	// -v is not --version: most tools read it as "verbose".
	if _, errOut, code := cli(t, nil, "-v"); code != 2 || !strings.Contains(errOut, "unknown shorthand flag: 'v'") {
		t.Errorf("-v: exit %d, stderr %q", code, errOut)
	}
}

// TestBuildVersion reads the module version, commit, its time and whether
// the checkout had changes from build info as go build records it.
func TestBuildVersion(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "keypool devel\ncommit:   unknown (built without VCS information)\ngo:       " + runtime.Version() + "\nplatform: " + platform + "\n"},
		{"release", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.4.0"}},
			"keypool v1.4.0\ncommit:   unknown (built without VCS information)\ngo:       go1.26.0\nplatform: " + platform + "\n"},
		{"checkout with changes", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "c08cb17a0b1c2d3e4f5061728394a5b6c7d8e9f0"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}},
			"keypool devel\ncommit:   c08cb17a0b1c2d3e4f5061728394a5b6c7d8e9f0 (2026-12-01T10:00:00Z), with changes not committed (dirty)\ngo:       go1.26.8\nplatform: " + platform + "\n"},
		{"clean checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201100000-c08cb17a0b1c"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "c08cb17a0b1c"}, {Key: "vcs.modified", Value: "false"}}},
			"keypool v0.0.0-20261201100000-c08cb17a0b1c\ncommit:   c08cb17a0b1c\ngo:       go1.26.8\nplatform: " + platform + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := buildVersion(tc.bi).write(&buf); err != nil || buf.String() != tc.want {
				t.Errorf("got %q (%v)\nwant %q", buf.String(), err, tc.want)
			}
		})
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

// TestCompletionValues: shells are offered the values of flags that take
// one of a fixed list, and no file names for them.
func TestCompletionValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"records", "--by", ""}, []string{"key", "model", "status", "client", "upstream", "error", "minute", "hour", "day"}},
		{[]string{"records", "--dbtype", ""}, []string{"sqlite", "postgres"}},
		{[]string{"serve", "--dbtype", ""}, []string{"sqlite", "postgres", "none"}},
		{[]string{"records", "--by", "h"}, []string{"key", "model", "status", "client", "upstream", "error", "minute", "hour", "day"}}, // the shell filters
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := cli(t, nil, append([]string{cobra.ShellCompRequestCmd}, tc.args...)...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 0 || len(lines) == 0 {
				t.Fatalf("exit %d\n%s%s", code, out, errOut)
			}
			directive := lines[len(lines)-1]
			if got := lines[:len(lines)-1]; !slices.Equal(got, tc.want) {
				t.Errorf("values %q, want %q", got, tc.want)
			}
			if want := ":" + strconv.Itoa(int(cobra.ShellCompDirectiveNoFileComp)); directive != want {
				t.Errorf("directive %q, want %q (no file names)", directive, want)
			}
		})
	}
}

// TestExitCodes: a mistake in the command line exits 2, a command that
// ran and failed 1, as scripts expect.
func TestExitCodes(t *testing.T) {
	noEnv(t)
	t.Setenv("KEYPOOL_SERVER", "")
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no arguments: help", nil, 0, ""},
		{"unknown command", []string{"chek"}, 2, `unknown command "chek" for "keypool"; did you mean check?`},
		{"unknown flag", []string{"check", "--colour"}, 2, "unknown flag: --colour"},
		{"unknown flag of root", []string{"--colour"}, 2, "unknown flag: --colour"},
		{"bad flag value", []string{"records", "--limit", "many"}, 2, `invalid argument "many" for "--limit" flag`},
		{"bad enum value", []string{"records", "--by", "colour"}, 2, "must be one of key, model"},
		{"bad enum value of serve", []string{"serve", "--dbtype", "mysql"}, 2, "must be one of sqlite, postgres, none"},
		{"out of range", []string{"records", "--limit", "0"}, 2, "--limit must be between 1 and 10000"},
		{"flags that exclude each other", []string{"check", "--config", "a.yaml", "--keys-file", "k.txt"}, 2, "[config keys-file]"},
		{"stray argument", []string{"version", "now"}, 2, `unknown command "now" for "keypool version"`},
		{"completion of no shell", []string{"completion", "tcsh"}, 2, "unknown command"},
		{"no records", []string{"records", "--dbaddr", filepath.Join(dir, "none.sqlite")}, 1, "no records at"},
		{"no keys", []string{"check"}, 1, "no keys to check"},
		{"no server", []string{"keys", "--server", "http://127.0.0.1:1"}, 1, "cannot reach keypool serve"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := cli(t, nil, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q, want %d and %q", code, errOut, tc.code, tc.want)
			}
			if tc.code == 2 && !strings.Contains(errOut, "--help' for usage.") {
				t.Errorf("a usage error without the way to the usage: %q", errOut)
			}
			if tc.code == 0 && !strings.Contains(out, "Available Commands:") {
				t.Errorf("no help:\n%s", out)
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	_, errOut, code := cli(t, []string{"sk-typed-0123456789abcdef"}, "sk-typed-0123456789abcdef")
	if code != 2 || !strings.Contains(errOut, "unknown command") {
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
		{"--admin-token's value", []string{"tok-flag-0123456789"}, []string{"keys", "--admin-token", "tok-flag-0123456789", "tok-flag-0123456789"}, "argument 1 is not a key ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := cli(t, tc.secrets, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q, want 2 and %q", code, errOut, tc.want)
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
