package config_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/secret"
)

func ids(keys []keypool.Key) []keypool.KeyID {
	var out []keypool.KeyID
	for _, k := range keys {
		out = append(out, k.ID())
	}
	return out
}

func idsOf(secrets ...string) []keypool.KeyID {
	var out []keypool.KeyID
	for _, s := range secrets {
		out = append(out, keypool.NewKey(s).ID())
	}
	return out
}

func tokens(ss []secret.String) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Reveal())
	}
	return out
}

// upstreamWant is what one loaded upstream should be.
type upstreamWant struct {
	base         string
	auth         keypool.UpstreamAuth
	keys         []string
	timeout, sto time.Duration
	allow, deny  []string
	tokens       []string
	noauth       bool
	typ          keypool.UpstreamType
}

func checkUpstreams(t *testing.T, cfg *config.Config, want []upstreamWant) {
	t.Helper()
	ups, err := cfg.Upstreams()
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != len(want) || len(cfg.Upstream) != len(want) {
		t.Fatalf("%d upstreams, want %d", len(ups), len(want))
	}
	for i, w := range want {
		u, c := ups[i], cfg.Upstream[i]
		if u.BaseURL != w.base || u.Auth != w.auth || !slices.Equal(ids(u.Keys), idsOf(w.keys...)) || u.Timeout != w.timeout ||
			u.StreamTimeout != w.sto || !slices.Equal(u.Allow, w.allow) || !slices.Equal(u.Deny, w.deny) ||
			!slices.Equal(tokens(c.Authorization), w.tokens) || c.NoAuth != w.noauth || u.Type != w.typ {
			t.Errorf("upstream %d = %+v (tokens %q, noauth %v), want %+v", i+1, u, tokens(c.Authorization), c.NoAuth, w)
		}
	}
	if _, err := keypool.New(keypool.WithUpstreams(ups...)); err != nil {
		t.Fatalf("keypool.New: %v", err)
	}
}

// TestOpenAIAPIRouteFixtures loads openai-api-route's own config examples,
// unchanged (testdata/openai-api-route), and checks what each says: tokens,
// the upstreams in order with their keys, endpoints, timeouts and model
// lists, and the warnings for what keypool does not act on.
func TestOpenAIAPIRouteFixtures(t *testing.T) {
	const official = "https://api.openai.com/v1"
	for _, tc := range []struct {
		file     string
		tokens   []string
		timeout  time.Duration
		sto      time.Duration
		lb       string
		ups      []upstreamWant
		warnings []string
	}{
		{file: "config.sample.yaml", tokens: []string{"woshimima"}, lb: "order",
			ups: []upstreamWant{
				{base: "https://api.openai.com/v2", keys: []string{"secret_key_1"}, allow: []string{"gpt-3.5-trubo"}},
				{base: "https://api.openai.com/v1", keys: []string{"secret_key_2"}, timeout: 30 * time.Second,
					allow: []string{"gpt-3.5-trubo"}, deny: []string{"gpt-4"}},
				{base: "https://api.replicate.com/v1", keys: []string{"key_for_replicate"}, typ: keypool.TypeReplicate,
					allow: []string{"mistralai/mixtral-8x7b-instruct-v0.1"}},
			}},
		{file: "readme-config.yaml", tokens: []string{"woshimima"}, timeout: 120 * time.Second, sto: 10 * time.Second,
			ups: []upstreamWant{
				{base: "https://localhost:8888/v1", keys: []string{"hahaha"}, timeout: 120 * time.Second, sto: 10 * time.Second,
					allow: []string{"/v1/audio/transcriptions"}},
				{base: "https://api.openai.com/v2", keys: []string{"secret_key_1"}, timeout: 120 * time.Second, sto: 10 * time.Second,
					allow: []string{"gpt-3.5-trubo", "gpt-3.5-trubo-0613"}},
				{base: "https://api.openai.com/v1", keys: []string{"secret_key_2"}, timeout: 30 * time.Second, sto: 10 * time.Second,
					deny: []string{"gpt-4"}},
				{base: "https://api.replicate.com/v1", keys: []string{"key_for_replicate"}, typ: keypool.TypeReplicate,
					timeout: 120 * time.Second, sto: 10 * time.Second, allow: []string{"mistralai/mixtral-8x7b-instruct-v0.1"}},
			}},
		{file: "readme-authorization.yaml", tokens: []string{"woshimima", "iampassword"}},
		{file: "readme-authorization-upstream.yaml", tokens: []string{"woshimima", "iampassword"},
			ups: []upstreamWant{{base: official, keys: []string{"key"}, tokens: []string{"woshimima"}}}},
		{file: "readme-complex.yaml", tokens: []string{"woshimima"},
			ups: []upstreamWant{
				{base: "http://localhost:5000/v1", keys: []string{"xxx"}, noauth: true, allow: []string{"/v1/audio/transcriptions"}},
				{base: "https://api.xxx.local/v1", auth: keypool.AuthNone, tokens: []string{"guest"}, allow: []string{"gpt-3.5-turbo-0125"}},
			}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			cfg, err := config.Load(filepath.Join("testdata", "openai-api-route", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := tokens(cfg.Authorization); !slices.Equal(got, tc.tokens) {
				t.Errorf("authorization = %q, want %q", got, tc.tokens)
			}
			if cfg.Timeout != tc.timeout || cfg.StreamTimeout != tc.sto || cfg.LBPolicy != tc.lb {
				t.Errorf("timeouts %v, %v, lb_policy %q", cfg.Timeout, cfg.StreamTimeout, cfg.LBPolicy)
			}
			var warnings []string
			for _, w := range cfg.Warnings {
				warnings = append(warnings, filepath.Base(w))
			}
			if !slices.Equal(warnings, tc.warnings) {
				t.Errorf("warnings %q, want %q", warnings, tc.warnings)
			}
			if len(tc.ups) == 0 {
				if len(cfg.Upstream) != 0 {
					t.Fatalf("%d upstreams, want none", len(cfg.Upstream))
				}
				return
			}
			checkUpstreams(t, cfg, tc.ups)
		})
	}
}

// TestMigrationFields reads what openai-api-route's config has beyond the
// samples: lb_policy random, sk: asis, hostname and keep_header.
func TestMigrationFields(t *testing.T) {
	in := `lb_policy: random
hostname: node-1
upstreams:
  - sk: asis
    endpoint: https://api.openai.com/v1
    noauth: true
    keep_header: true
  - endpoint: http://127.0.0.1:11434/v1
    authorization: team
    inherit_authorization: true
`
	cfg, err := config.Parse([]byte(in), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LBPolicy != "random" || !cfg.Upstream[1].InheritAuthorization {
		t.Errorf("lb_policy %q, inherit %v", cfg.LBPolicy, cfg.Upstream[1].InheritAuthorization)
	}
	want := []string{
		"c.yaml:2: hostname is not used: keypool's records have no hostname column",
		"c.yaml:7: upstream 1: keep_header is not used: keypool forwards the request headers the API reads, never the client's credentials",
	}
	if !slices.Equal(cfg.Warnings, want) {
		t.Errorf("warnings %q, want %q", cfg.Warnings, want)
	}
	checkUpstreams(t, cfg, []upstreamWant{
		{base: "https://api.openai.com/v1", auth: keypool.AuthCaller, noauth: true},
		{base: "http://127.0.0.1:11434/v1", auth: keypool.AuthNone, tokens: []string{"team"}},
	})
	cfg, err = config.Parse([]byte("retry_time: 90\n"), "c.yaml", "")
	if err != nil || cfg.RetryTime != 90*time.Second {
		t.Fatalf("retry_time: %v, %v", cfg.RetryTime, err)
	}
}

func TestExtensions(t *testing.T) {
	cfg, err := config.Load(filepath.Join("testdata", "keypool.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := tokens(cfg.Authorization); !slices.Equal(got, []string{"tok-alpha-1", "tok-beta-2"}) {
		t.Errorf("authorization = %q", got)
	}
	if cfg.Timeout != 2*time.Minute || cfg.StreamTimeout != 15*time.Second {
		t.Errorf("timeouts = %v %v", cfg.Timeout, cfg.StreamTimeout)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.AdminToken.Reveal() != "adm-secret-token" || cfg.DBType != "postgres" {
		t.Errorf("listen %q, admin token, dbtype %q", cfg.Listen, cfg.DBType)
	}
	wantChecker := config.Checker{Rate: 2.5, Concurrency: 8, Recheck: 30 * time.Minute, WaitForCheck: true}
	if cfg.Checker != wantChecker {
		t.Errorf("checker = %+v, want %+v", cfg.Checker, wantChecker)
	}
	main, backup := cfg.Upstream[0], cfg.Upstream[1]
	// sk's comma list and the keys list, duplicates dropped.
	if got, want := ids(main.Keys), idsOf("sk-main-aaaaaaaa", "sk-main-bbbbbbbb", "sk-main-cccccccc"); !slices.Equal(got, want) {
		t.Errorf("main keys = %v, want %v", got, want)
	}
	if main.KeysFile != filepath.Join("testdata", "keys.txt") {
		t.Errorf("keys_file = %q, want it next to the config", main.KeysFile)
	}
	if !backup.NoAuth || !slices.Equal(backup.Deny, []string{"o1*"}) || backup.Name != "backup" {
		t.Errorf("backup = %+v", backup)
	}

	ups, err := cfg.Upstreams()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(ups[0].Keys), idsOf("sk-main-aaaaaaaa", "sk-main-bbbbbbbb", "sk-main-cccccccc", "sk-file-eeeeeeee"); !slices.Equal(got, want) {
		t.Errorf("main keys with the file = %v, want %v", got, want)
	}
	if ups[0].Timeout != 2*time.Minute || ups[1].Timeout != 45*time.Second || ups[1].StreamTimeout != 5*time.Second {
		t.Errorf("timeouts: %v, %v %v", ups[0].Timeout, ups[1].Timeout, ups[1].StreamTimeout)
	}
}

func TestCheckerSection(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config.Checker
	}{
		{"", config.Checker{}},
		{"checker:\n", config.Checker{}},
		{"checker: {recheck: off}", config.Checker{NoRecheck: true}},
		{"checker: {recheck: 0}", config.Checker{NoRecheck: true}},
		{"checker: {recheck: 0s}", config.Checker{NoRecheck: true}},
		{"checker: {recheck: 90}", config.Checker{Recheck: 90 * time.Second}},
		{"checker: {rate: 0.5, concurrency: 1}", config.Checker{Rate: 0.5, Concurrency: 1}},
		{"checker: {wait_for_check: on}", config.Checker{WaitForCheck: true}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tc.in), "c.yaml", "")
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Checker != tc.want {
				t.Errorf("checker = %+v, want %+v", cfg.Checker, tc.want)
			}
		})
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"120", 120 * time.Second},
		{"1.5", 1500 * time.Millisecond},
		{`"120"`, 120 * time.Second},
		{"2m", 2 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"0", 0},
		{"~", 0},
	} {
		cfg, err := config.Parse([]byte("timeout: "+tc.in), "c.yaml", "")
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if cfg.Timeout != tc.want {
			t.Errorf("timeout: %s = %v, want %v", tc.in, cfg.Timeout, tc.want)
		}
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("KP_TEST_KEYS", "sk-env-11111111,sk-env-22222222")
	t.Setenv("KP_TEST_HOST", "127.0.0.1:7000")
	t.Setenv("KP_TEST_TOKEN", "tok-from-env")
	in := `
authorization: ${KP_TEST_TOKEN}
admin_token: "pa$$word"
upstreams:
  - sk: $KP_TEST_KEYS
    endpoint: http://${KP_TEST_HOST}/v1
`
	cfg, err := config.Parse([]byte(in), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := tokens(cfg.Authorization); !slices.Equal(got, []string{"tok-from-env"}) {
		t.Errorf("authorization = %q", got)
	}
	if cfg.AdminToken.Reveal() != "pa$word" {
		t.Errorf("$$ is not a literal $")
	}
	u := cfg.Upstream[0]
	if u.Endpoint != "http://127.0.0.1:7000/v1" || !slices.Equal(ids(u.Keys), idsOf("sk-env-11111111", "sk-env-22222222")) {
		t.Errorf("upstream = %+v", u)
	}
}

func TestTopLevelKeysFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "k.txt"), []byte("sk-top-11111111\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("keys_file: k.txt\n"), "c.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	ups, err := cfg.Upstreams()
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 1 || ups[0].BaseURL != config.DefaultEndpoint || !slices.Equal(ids(ups[0].Keys), idsOf("sk-top-11111111")) {
		t.Errorf("upstreams = %+v", ups)
	}
}

func TestUpstreamsErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("empty.txt", "# nothing yet\n")
	write("bad.txt", "sk-fine-11111111\nsk-two words-2222\n")
	write("dup.txt", "sk-shared-33333333\n")
	for _, tc := range []struct {
		name, in, want string
	}{
		{"missing file", "upstreams:\n  - endpoint: https://a.example/v1\n    keys_file: nope.txt\n", "c.yaml:3: upstream 1: keys_file: keypool: keys file: open "},
		{"empty file", "upstreams:\n  - endpoint: https://a.example/v1\n    keys_file: empty.txt\n", "c.yaml:3: upstream 1: keys_file holds no key"},
		{"bad line", "upstreams:\n  - endpoint: https://a.example/v1\n    keys_file: bad.txt\n", "c.yaml:3: upstream 1: keys_file: keypool: keys line 2: one key per line expected"},
		{"shared key", "upstreams:\n  - endpoint: https://a.example/v1\n    sk: sk-shared-33333333\n  - endpoint: https://b.example/v1\n    keys_file: dup.txt\n",
			"c.yaml:4: upstream 2: key " + string(keypool.NewKey("sk-shared-33333333").ID()) + " is listed in upstream 1 too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tc.in), "c.yaml", dir)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cfg.Upstreams()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "sk-") {
				t.Errorf("error shows a key: %v", err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Setenv("KP_TEST_EMPTY", "")
	for _, tc := range []struct {
		name, in, want string
	}{
		{"unknown field", "upstreams:\n  - endpoint: https://a.example/v1\n    sk: k1\n  - sk: k2\n    endpiont: https://b.example/v1\n",
			`c.yaml:5: unknown field "endpiont" in upstream 2 (did you mean "endpoint"?)`},
		{"unknown top field", "listen: :8080\ntimeuot: 3\n", `c.yaml:2: unknown field "timeuot" (did you mean "timeout"?)`},
		{"unknown checker field", "checker:\n  rates: 3\n", `c.yaml:2: unknown field "rates" in checker`},
		{"bad endpoint", "upstreams:\n  - sk: k1\n    endpoint: api.openai.com/v1\n", "c.yaml:3: upstream 1: endpoint must be an http:// or https:// URL with a host"},
		{"ftp endpoint", "upstreams:\n  - sk: k1\n    endpoint: ftp://x/v1\n", "c.yaml:3: upstream 1: endpoint must be an http://"},
		{"empty keys after sk", "upstreams:\n  - endpoint: https://a.example/v1\n    sk: \" , \"\n    keys: []\n", "c.yaml:4: upstream 1: keys holds no key"},
		{"sk from an empty variable", "upstreams:\n  - endpoint: https://a.example/v1\n    sk: ${KP_TEST_EMPTY}\n", "c.yaml:3: upstream 1: sk is empty once its environment variables are expanded"},
		{"asis with keys", "upstreams:\n  - endpoint: https://a.example/v1\n    sk: asis\n    keys: [k1]\n", "c.yaml:3: upstream 1: sk: asis passes each client's own key on; it cannot be given with keys or keys_file"},
		{"asis with keys_file", "upstreams:\n  - endpoint: https://a.example/v1\n    keys_file: k.txt\n    sk: asis\n", "c.yaml:4: upstream 1: sk: asis passes"},
		{"asis in a list", "upstreams:\n  - endpoint: https://a.example/v1\n    sk: k1,asis\n", "c.yaml:3: upstream 1: sk: asis must be alone"},
		{"lb_policy", "lb_policy: round_robin\n", "c.yaml:1: lb_policy must be order or random"},
		{"lb_policy list", "lb_policy: [order]\n", "c.yaml:1: lb_policy must be a single value"},
		{"empty token list", "authorization: \" , ,\"\n", "c.yaml:1: authorization holds no token once spaces and commas are trimmed"},
		{"empty upstream token list", "upstreams:\n  - sk: k\n    authorization: [\" \", \"\"]\n", "c.yaml:3: upstream 1: authorization holds no token"},
		{"token from an empty variable", "upstreams:\n  - sk: k\n    authorization: ${KP_TEST_EMPTY}\n", "c.yaml:3: upstream 1: authorization holds no token"},
		{"inherit without own tokens", "upstreams:\n  - sk: k\n    inherit_authorization: true\n", "c.yaml:2: upstream 1: inherit_authorization needs an authorization of the upstream's own"},
		{"cors", "cors: sometimes\n", "c.yaml:1: cors must be true or false"},
		{"key with space", "upstreams:\n  - endpoint: https://a.example/v1\n    sk: \"ab cd\"\n", "c.yaml:3: upstream 1: sk: keypool: key 1 has white space"},
		{"keys entry with space", "upstreams:\n  - endpoint: https://a.example/v1\n    keys:\n      - k1\n      - \"ab cd\"\n", "c.yaml:5: upstream 1: keys: entry 2 has white space"},
		{"keys not a list", "upstreams:\n  - endpoint: https://a.example/v1\n    keys: k1\n", "c.yaml:3: upstream 1: keys must be a list"},
		{"bad duration", "timeout: soon\n", "c.yaml:1: timeout must be seconds, such as 120, or a duration"},
		{"negative duration", "upstreams:\n  - sk: k\n    endpoint: https://a.example/v1\n    stream_timeout: -5\n", "c.yaml:4: upstream 1: stream_timeout must not be negative"},
		{"negative Go duration", "stream_timeout: -1m\n", "c.yaml:1: stream_timeout must not be negative"},
		{"huge duration", "timeout: 1e30\n", "c.yaml:1: timeout is too long"},
		{"negative rate", "checker:\n  rate: -1\n", "c.yaml:2: checker: rate must be a number"},
		{"negative concurrency", "checker:\n  concurrency: -3\n", "c.yaml:2: checker: concurrency must be a whole number, 0 or more"},
		{"bad recheck", "checker:\n  recheck: sometimes\n", "c.yaml:2: checker: recheck must be seconds"},
		{"bad bool", "upstreams:\n  - sk: k\n    endpoint: https://a.example/v1\n    noauth: maybe\n", "c.yaml:4: upstream 1: noauth must be true or false"},
		{"dbtype", "dbtype: mysql\n", "c.yaml:1: dbtype must be sqlite, postgres or none"},
		{"listen", "listen: 8080\n", "c.yaml:1: listen must be host:port"},
		{"listen and address", "listen: :1\naddress: :2\n", "c.yaml:2: listen and address are the same setting"},
		{"bad yaml", "upstreams:\n  - sk: k\n   endpoint: x\n", "c.yaml:1: yaml: did not find expected '-' indicator"},
		{"tab yaml", "upstreams:\n\t- sk: k\n", "c.yaml:2: yaml: "},
		{"not a mapping", "- a\n- b\n", "c.yaml:1: the file must be a mapping"},
		{"upstreams not a list", "upstreams: {sk: k}\n", "c.yaml:1: upstreams must be a list"},
		{"upstream not a mapping", "upstreams:\n  - just-a-string\n", "c.yaml:2: upstream 1 must be a mapping"},
		{"duplicate field", "timeout: 1\ntimeout: 2\n", `c.yaml:2: "timeout" is given twice (first at line 1)`},
		{"unknown type", "upstreams:\n  - sk: k\n    endpoint: https://a.example/v1\n    type: gemini\n", "c.yaml:4: upstream 1: type must be openai, azure or replicate"},
		{"azure without endpoint", "upstreams:\n  - sk: k\n    type: azure\n", "c.yaml:2: upstream 1: type azure needs an endpoint"},
		{"azure deployment URL", "upstreams:\n  - sk: k\n    type: azure\n    endpoint: https://r.openai.azure.com/openai/deployments/d\n", "c.yaml:4: upstream 1: an azure endpoint is the resource"},
		{"deployments on openai", "upstreams:\n  - sk: k\n    endpoint: https://a.example/v1\n    deployments: {gpt-4o: d}\n", "c.yaml:4: upstream 1: deployments is for type: azure upstreams only"},
		{"api_version on openai", "upstreams:\n  - sk: k\n    api_version: 2024-10-21\n", "c.yaml:3: upstream 1: api_version is for type: azure upstreams only"},
		{"deployments not a mapping", "upstreams:\n  - sk: k\n    type: azure\n    endpoint: https://r.openai.azure.com\n    deployments: [a]\n", "c.yaml:5: upstream 1: deployments must be a mapping of model names to deployment names"},
		{"bad deployment name", "upstreams:\n  - sk: k\n    type: azure\n    endpoint: https://r.openai.azure.com\n    deployments:\n      gpt-4o: ok\n      o3: \"../x\"\n", `c.yaml:7: upstream 1: deployments: the deployment of "o3" must be a name of letters`},
		{"empty deployment", "upstreams:\n  - sk: k\n    type: azure\n    endpoint: https://r.openai.azure.com\n    deployments:\n      gpt-4o:\n", `c.yaml:6: upstream 1: deployments: the deployment of "gpt-4o" must be`},
		{"bad api_version", "upstreams:\n  - sk: k\n    type: azure\n    endpoint: https://r.openai.azure.com\n    api_version: latest\n", "c.yaml:5: upstream 1: api_version must be an Azure api-version such as"},
		{"duplicate name", "upstreams:\n  - {sk: a, endpoint: 'https://a.example', name: x}\n  - {sk: b, endpoint: 'https://b.example', name: x}\n", "c.yaml:3: upstream 2: upstream 1 has the same name"},
		{"keys_file with upstreams", "keys_file: k.txt\nupstreams:\n  - {sk: a, endpoint: 'https://a.example'}\n", "c.yaml:1: a top-level keys_file is for a config without upstreams"},
		{"empty allow entry", "upstreams:\n  - sk: k\n    endpoint: https://a.example/v1\n    allow: [\"\"]\n", "c.yaml:4: upstream 1: allow: entry 1 is empty"},
		{"unset variable", "upstreams:\n  - sk: k\n    endpoint: https://${KP_TEST_UNSET_HOST}/v1\n", "c.yaml:3: upstream 1: endpoint: environment variable KP_TEST_UNSET_HOST is not set"},
		{"unset variable in a secret, braces", "upstreams:\n  - sk: ${KP_TEST_UNSET_KEY}\n    endpoint: https://a.example/v1\n", "c.yaml:2: upstream 1: sk: environment variable KP_TEST_UNSET_KEY is not set"},
		{"unset variable in a secret, bare", "authorization: pa$KP_TEST_UNSET\n", "c.yaml:1: authorization refers to an environment variable that is not set"},
		{"merge of a scalar", "upstreams:\n  - <<: x\n    sk: k\n    endpoint: https://a.example/v1\n", "c.yaml:2: upstream 1: << must merge a mapping"},
		{"token entry not a value", "authorization:\n  - tok-1\n  - [tok-2]\n", "c.yaml:3: authorization: entry 2 must be a single value, not a list or mapping"},
		{"address", "address: 8080\n", "c.yaml:1: address must be host:port"},
		{"checker not a mapping", "checker: 5\n", `c.yaml:1: checker must be a mapping of fields, such as "rate: 5"`},
		{"bad idle_timeout", "upstreams:\n  - sk: k\n    idle_timeout: sometimes\n", "c.yaml:3: upstream 1: idle_timeout must be seconds"},
		{"size not a value", "max_body: [1]\n", "c.yaml:1: max_body must be a single value"},
		{"unset variable in a list", "upstreams:\n  - sk: k\n    deny: [\"${KP_TEST_UNSET_MODEL}\"]\n", "c.yaml:3: upstream 1: deny: entry 1: environment variable KP_TEST_UNSET_MODEL is not set"},
		// Every entry of a list is checked, and numbered by its place in the list.
		{"keys entry after a nested one", "upstreams:\n  - keys:\n      - [k1]\n      - \"ab cd\"\n", "c.yaml:4: upstream 1: keys: entry 2 has white space"},
		{"allow entry after a nested one", "upstreams:\n  - sk: k\n    allow: [[a], \"\"]\n", "c.yaml:3: upstream 1: allow: entry 2 is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.in), "c.yaml", "")
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.File != "c.yaml" {
				t.Errorf("not a *config.Error: %#v", err)
			}
		})
	}
}

// TestAliasBudget: a file whose aliases make it refer to the same nodes
// too often is refused, not read for minutes.
func TestAliasBudget(t *testing.T) {
	var b strings.Builder
	b.WriteString("upstreams:\n  - deny: &a [" + strings.Repeat("k, ", 1023) + "k]\n")
	for range 1100 {
		b.WriteString("  - deny: *a\n")
	}
	_, err := config.Parse([]byte(b.String()), "c.yaml", "")
	if err == nil || !strings.Contains(err.Error(), "the file refers to the same nodes too many times (aliases)") {
		t.Fatalf("error %v", err)
	}
}

// TestErrorsHideExpandedSecrets: a secret that comes from the environment
// is kept out of messages too, even from a field that is not secret.
func TestErrorsHideExpandedSecrets(t *testing.T) {
	t.Setenv("KP_TEST_SECRET", "mx-SECRET-token")
	in := "notify:\n  matrix:\n    homeserver: ${KP_TEST_SECRET}\n    room: r\n    token: ${KP_TEST_SECRET}\n"
	_, err := config.Parse([]byte(in), "c.yaml", "")
	if err == nil || !strings.Contains(err.Error(), "c.yaml:3: notify: matrix: homeserver must be an http or https URL") {
		t.Fatalf("error %v", err)
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("error shows a secret: %v", err)
	}
}

// TestParseReportsEveryProblem: a user fixes a file in one go.
func TestParseReportsEveryProblem(t *testing.T) {
	in := "timeout: x\nupstreams:\n  - sk: k\n    endpoint: x\n  - endpoint: https://a.example\n    keys: []\n"
	_, err := config.Parse([]byte(in), "c.yaml", "")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"c.yaml:1: timeout", "c.yaml:4: upstream 1: endpoint must be", "c.yaml:6: upstream 2: keys holds no key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestErrorsHideSecrets: no key, token or secret-field value reaches an error,
// whatever went wrong around it.
func TestErrorsHideSecrets(t *testing.T) {
	const key, tok = "sk-proj-SECRETsecret0123456789", "tok-SECRET-client-42"
	for _, tc := range []struct {
		name, in string
	}{
		{"key with a space", "upstreams:\n  - sk: \"" + key + " x\"\n    endpoint: https://a.example\n"},
		{"key as a field name", "upstreams:\n  - " + key + ": 1\n    endpoint: https://a.example\n"},
		{"key as a top field name", key + ": 1\n"},
		{"key in the endpoint", "upstreams:\n  - sk: k\n    endpoint: " + key + "\n"},
		{"key in a URL", "upstreams:\n  - sk: k\n    endpoint: \"https://user:" + key + "@/v1\"\n"},
		{"key in the wrong place", "upstreams:\n  - sk: {" + key + ": 1}\n    endpoint: https://a.example\n"},
		{"key as a duration", "timeout: " + key + "\n"},
		{"key as a type", "upstreams:\n  - sk: k\n    endpoint: https://a.example\n    type: " + key + "\n"},
		{"key as a dbtype", "dbtype: " + key + "\n"},
		{"key as a bool", "upstreams:\n  - sk: k\n    endpoint: https://a.example\n    noauth: " + key + "\n"},
		{"key in broken YAML", "upstreams:\n  - sk: \"" + key + "\n   endpoint: [\n"},
		{"key as an anchor", "authorization: *" + key + "\n"},
		{"key as a variable", "upstreams:\n  - sk: \"${" + key + "}\"\n    endpoint: https://a.example\n"},
		{"key with a bare variable", "upstreams:\n  - sk: \"" + key + "$KP_TEST_UNSET\"\n    endpoint: https://a.example\n"},
		{"token as a field name", "authorization: " + tok + "\n" + tok + ": 1\n"},
		{"token with a bare variable", "authorization: " + tok + "$X_UNSET_42\n"},
		{"token in a listen", "authorization: " + tok + "\nlisten: " + tok + "\n"},
		{"admin token as a field", "admin_token: " + tok + "\nchecker:\n  " + tok + ": 1\n"},
		{"token listed as a mapping", "authorization:\n  - {" + tok + ": 1}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.in), "c.yaml", "")
			if err == nil {
				t.Fatalf("no error for %q", tc.in)
			}
			if msg := err.Error(); strings.Contains(msg, "SECRET") {
				t.Errorf("error shows a secret:\n%s", msg)
			}
		})
	}
}

// TestPrintingHidesSecrets: a Config may be printed or logged whole.
func TestPrintingHidesSecrets(t *testing.T) {
	in := "authorization: tok-SECRET-1\nadmin_token: adm-SECRET-2\nupstreams:\n  - sk: sk-SECRET-3\n    endpoint: https://a.example\n    authorization: tok-SECRET-1\n"
	cfg, err := config.Parse([]byte(in), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "admin", cfg.AdminToken, "tokens", cfg.Authorization, "cfg", cfg)
	for _, out := range []string{
		fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%s", cfg.AdminToken),
		fmt.Sprintf("%q %x", cfg.AdminToken, cfg.AdminToken), fmt.Sprint(cfg.Authorization), string(js), logged.String(),
	} {
		if strings.Contains(out, "SECRET") {
			t.Errorf("a secret shows: %s", out)
		}
	}
	if !cfg.AdminToken.Equal("adm-SECRET-2") || cfg.AdminToken.Equal("adm-SECRET-") {
		t.Error("Equal is wrong")
	}
}

func TestMergeKeys(t *testing.T) {
	in := `
upstreams:
  - &base
    endpoint: https://a.example/v1
    sk: k1
    timeout: 30
    deny: [o1*]
  - <<: *base
    sk: k2
    endpoint: https://b.example/v1
`
	cfg, err := config.Parse([]byte(in), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Upstream[1]
	if b.Endpoint != "https://b.example/v1" || b.Timeout != 30*time.Second || !slices.Equal(b.Deny, []string{"o1*"}) ||
		!slices.Equal(ids(b.Keys), idsOf("k2")) {
		t.Errorf("merged upstream = %+v", b)
	}
}

func TestEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "---\n", "~\n", "upstreams:\n"} {
		cfg, err := config.Parse([]byte(in), "c.yaml", "")
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		ups, err := cfg.Upstreams()
		if err != nil || len(ups) != 0 {
			t.Errorf("%q: upstreams %v, %v", in, ups, err)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "none.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("error = %v", err)
	}
}

// TestKeySources: sk, keys and keys_file add up, in any order, and an empty
// one next to a full one is fine.
func TestKeySources(t *testing.T) {
	for _, in := range []string{
		"upstreams:\n  - endpoint: https://a.example/v1\n    keys: [k1]\n    sk: \"\"\n",
		"upstreams:\n  - endpoint: https://a.example/v1\n    sk: k1\n    keys: []\n",
		"upstreams:\n  - endpoint: https://a.example/v1\n    sk: k1,k1\n    keys: [k1]\n",
	} {
		cfg, err := config.Parse([]byte(in), "c.yaml", "")
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if got := ids(cfg.Upstream[0].Keys); !slices.Equal(got, idsOf("k1")) {
			t.Errorf("%q: keys %v", in, got)
		}
	}
}

func TestMaxBody(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "64MiB": 64 << 20, "2 GiB": 2 << 30, "500KB": 500e3, "": 0} {
		cfg, err := config.Parse([]byte("max_body: "+in+"\nupstreams:\n  - sk: sk-x\n    endpoint: https://a.example/v1\n"), "c.yaml", ".")
		if err != nil || cfg.MaxBody != want {
			t.Errorf("max_body %q: %d, %v; want %d", in, cfg.MaxBody, err, want)
		}
	}
	for _, bad := range []string{"-1", "lots", "1.5MiB", "99999999TB"} {
		_, err := config.Parse([]byte("max_body: "+bad+"\nupstreams:\n  - sk: sk-x\n    endpoint: https://a.example/v1\n"), "c.yaml", ".")
		if err == nil || !strings.Contains(err.Error(), "c.yaml:1: max_body must be a size") {
			t.Errorf("max_body %q: %v", bad, err)
		}
	}
}

// TestLimits reads the proxy's limits on clients and upstreams.
func TestLimits(t *testing.T) {
	in := `idle_timeout: 90s
body_idle_timeout: off
body_memory: 1GiB
max_connections: 100
upstreams:
  - sk: k1
    idle_timeout: off
  - sk: k2
`
	cfg, err := config.Parse([]byte(in), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IdleTimeout != 90*time.Second || cfg.BodyIdleTimeout != config.Off || cfg.BodyMemory != 1<<30 || cfg.MaxConnections != 100 {
		t.Errorf("limits %v %v %v %v", cfg.IdleTimeout, cfg.BodyIdleTimeout, cfg.BodyMemory, cfg.MaxConnections)
	}
	ups, err := cfg.Upstreams()
	if err != nil {
		t.Fatal(err)
	}
	if ups[0].IdleTimeout != config.Off || ups[1].IdleTimeout != 90*time.Second {
		t.Errorf("upstream idle timeouts %v, %v", ups[0].IdleTimeout, ups[1].IdleTimeout)
	}
	for _, bad := range []string{"idle_timeout: soon\n", "max_connections: -1\n", "body_memory: lots\n"} {
		if _, err := config.Parse([]byte(bad), "c.yaml", ""); err == nil || !strings.Contains(err.Error(), "c.yaml:1:") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestLogging reads the logging settings, and refuses a level or format
// serve cannot log at, with the line.
func TestLogging(t *testing.T) {
	cfg, err := config.Parse([]byte("log_level: DEBUG\nlog_format: json\naccess_log: true\nupstreams:\n  - sk: k1\n"), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogLevel != "debug" || cfg.LogFormat != "json" || !cfg.AccessLog {
		t.Errorf("log_level %q, log_format %q, access_log %v", cfg.LogLevel, cfg.LogFormat, cfg.AccessLog)
	}
	for _, tt := range []struct{ in, want string }{
		{"log_level: verbose\n", "c.yaml:1: log_level must be debug, info, warn or error"},
		{"\nlog_format: xml\n", "c.yaml:2: log_format must be text or json"},
		{"access_log: maybe\n", "c.yaml:1: access_log"},
	} {
		if _, err := config.Parse([]byte(tt.in), "c.yaml", ""); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.in, err, tt.want)
		}
	}
}
