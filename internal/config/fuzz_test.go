package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/keypool/keypool/internal/config"
)

// secretFields hold secrets; their values must never reach an error.
var secretFields = map[string]bool{"sk": true, "keys": true, "authorization": true, "admin_token": true,
	"dbaddr": true, "store": true, "token": true, "webhook": true, "secret": true, "url": true, "headers": true}

// keyShaped finds key-like text anywhere in an input, even one YAML cannot parse.
var keyShaped = regexp.MustCompile(`sk-[A-Za-z0-9_-]{8,}`)

// secretsIn lists what an input holds in secret fields (each comma-separated
// part, and the whole), plus anything shaped like a key.
func secretsIn(data []byte) []string {
	out := keyShaped.FindAllString(string(data), -1)
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return out
	}
	seen := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node, secret bool)
	walk = func(n *yaml.Node, secret bool) {
		if n == nil || seen[n] {
			return
		}
		seen[n] = true
		switch n.Kind {
		case yaml.AliasNode:
			walk(n.Alias, secret)
		case yaml.ScalarNode:
			if secret {
				out = append(out, n.Value)
				for _, part := range strings.Split(n.Value, ",") {
					out = append(out, strings.TrimSpace(part))
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], secretFields[n.Content[i].Value])
			}
		default:
			for _, c := range n.Content {
				walk(c, secret)
			}
		}
	}
	walk(&doc, false)
	return out
}

func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "openai-api-route", "*.yaml"))
	for _, name := range append(seeds, filepath.Join("testdata", "keypool.yaml")) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"upstreams:\n  - sk: \"sk-abcdefghijkl x\"\n    endpoint: https://a.example\n",
		"upstreams:\n  - sk-abcdefghijkl: 1\n",
		"lb_policy: random\nupstreams:\n  - sk: asis\n    noauth: true\n  - sk:\n    authorization: \" , \"\n",
		"authorization: tok-abcdefgh\ntok-abcdefgh: 1\n",
		"admin_token: ${sk-abcdefghij}\n",
		"upstreams:\n  - sk: sk-abcdefghijkl\n    endpoint: sk-abcdefghijkl\n    timeout: sk-abcdefghijkl\n",
		"authorization: *sk-abcdefghijkl\n",
		"upstreams:\n  - &a {sk: sk-abcdefghijkl, endpoint: 'http://h'}\n  - <<: *a\n  - *a\n",
		"checker: {rate: 1e400, concurrency: 99999999999999999999, recheck: -1h}\n",
		"upstreams: [{keys: [sk-abcdefghijkl, [x]], endpoint: 'http://h', type: azure}]\n",
		"timeout: 9223372036\nstream_timeout: 0x10\n",
		"upstreams:\n  - {sk: sk-abcdefghijkl, type: azure, endpoint: 'https://r.openai.azure.com', api_version: sk-abcdefghijkl, deployments: {sk-abcdefghijkl: sk-abcdefghijkl, a: [b], ? [c] : d, e: ../f}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data, "fuzz.yaml", "")
		if err != nil {
			secrets := secretsIn(data)
			for _, e := range problems(err) {
				if e.File != "fuzz.yaml" {
					t.Fatalf("error without the file's name: %q", e)
				}
				for _, s := range secrets {
					if len(s) >= 8 && strings.Contains(e.Msg, s) {
						t.Fatalf("error shows secret %q:\n%s\ninput:\n%s", s, e, data)
					}
				}
			}
			return
		}
		// A key prints as its ID, a token as [redacted]; the same text may
		// still be the value of a field that is not secret.
		printed := fmt.Sprintf("%v %+v", cfg, cfg)
		for _, s := range keyShaped.FindAllString(string(data), -1) {
			if strings.Contains(printed, s) && !inPlainField(cfg, s) {
				t.Fatalf("printed config shows secret %q:\n%s", s, printed)
			}
		}
		// A parsed config converts without panicking (keys files aside: no
		// file is read here).
		if !slices.ContainsFunc(cfg.Upstream, func(u config.Upstream) bool { return u.KeysFile != "" }) {
			cfg.Upstreams()
		}
	})
}

// problems lists the *config.Error values in err.
func problems(err error) []*config.Error {
	var out []*config.Error
	var ce *config.Error
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range multi.Unwrap() {
			out = append(out, problems(e)...)
		}
	} else if errors.As(err, &ce) {
		out = append(out, ce)
	} else {
		out = append(out, &config.Error{Msg: err.Error()})
	}
	return out
}

// inPlainField reports whether s is (part of) a field that is not secret.
func inPlainField(c *config.Config, s string) bool {
	plain := []string{c.Listen, c.DBType, c.KeysFile}
	if m := c.Notify.Matrix; m != nil {
		plain = append(plain, m.Homeserver, m.Room)
	}
	for _, u := range c.Upstream {
		plain = append(plain, u.Name, u.Type, u.Endpoint, u.KeysFile)
		plain = append(plain, u.Allow...)
		plain = append(plain, u.Deny...)
	}
	for _, p := range plain {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}

// FuzzSecretsInErrors puts fuzzed secrets in sk and authorization (quoted, so
// they stay values) next to a fuzzed line anywhere in an otherwise good
// file: whatever the line breaks, no error may show either secret.
func FuzzSecretsInErrors(f *testing.F) {
	for _, seed := range []struct {
		sk, token, junk string
		at              uint8
	}{
		{"sk-proj-abcdefgh12345678", "client-token-1", "endpiont: x", 4},
		{"sk-proj-abcdefgh12345678", "client-token-1", "sk-proj-abcdefgh12345678: 1", 4},
		{"sk-proj-abcdefgh12345678", "client-token-1", "client-token-1: 1", 0},
		{"sk-a,sk-bbbbbbbbbbbb", "tok1,tok2-long-token", "    keys: [sk-bbbbbbbbbbbb x]", 5},
		{"sk-proj-abcdefgh12345678", "client-token-1", "    endpoint: ${sk-proj-abcdefgh12345678}", 5},
		{"sk-proj-abcdefgh12345678$NOPE", "client$token$1", "timeout: soon", 1},
		{"${sk-proj-abcdefgh12345678}", "${client-token-1}", "listen: ${client-token-1}", 1},
		{"sk-proj-abcdefgh12345678", "client-token-1", "authorization: *sk-proj-abcdefgh12345678", 0},
		{"sk-proj-abcdefgh12345678", "client-token-1", "  - sk: [", 3},
		{"asis", "t", "type: replicate", 5},
	} {
		f.Add(seed.sk, seed.token, seed.junk, seed.at)
	}
	f.Fuzz(func(t *testing.T, sk, token, junk string, at uint8) {
		q := func(s string) string {
			b, _ := json.Marshal(s) // a JSON string is a YAML double-quoted scalar
			return string(b)
		}
		lines := []string{
			"authorization: " + q(token),
			"timeout: 30",
			"upstreams:",
			"  - sk: " + q(sk),
			"    endpoint: https://a.example/v1",
			"    allow: [gpt-4o]",
		}
		i := int(at) % (len(lines) + 1)
		lines = slices.Insert(lines, i, junk)
		data := []byte(strings.Join(lines, "\n") + "\n")
		_, err := config.Parse(data, "fuzz.yaml", "")
		if err == nil {
			return
		}
		var secrets []string
		for _, s := range []string{sk, token} {
			secrets = append(secrets, strings.TrimSpace(s))
			for _, part := range strings.Split(s, ",") {
				secrets = append(secrets, strings.TrimSpace(part))
			}
		}
		for _, e := range problems(err) {
			for _, s := range secrets {
				if len(s) >= 8 && strings.Contains(e.Msg, s) {
					t.Fatalf("error shows secret %q:\n%s\ninput:\n%s", s, e, data)
				}
			}
		}
	})
}
