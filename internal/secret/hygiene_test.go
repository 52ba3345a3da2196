package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/notify"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/redisstore"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// This file checks the promise of the whole tree, not of this package: no
// type outside the root package (whose keypool.Key has tests of its own)
// holds a secret where fmt, JSON or slog can reach it.

// secretConfig is a config file with marker in every secret it can hold:
// keys, client and admin tokens, the DSN's password, the notifiers'.
const secretConfig = `
authorization: "tok-s3cr3t-global-0001"
admin_token: adm-s3cr3t-0002
dbtype: postgres
dbaddr: "postgres://kp:pw-s3cr3t-0003@db.invalid:5432/kp?sslmode=disable"
store: "redis://:rd-s3cr3t-0013@redis.invalid:6379/0"
notify:
  matrix: {homeserver: "https://matrix.example.org", room: "!r:example.org", token: mx-s3cr3t-0004}
  feishu: {webhook: "https://open.feishu.cn/open-apis/bot/v2/hook/fs-s3cr3t-0005", secret: fs-s3cr3t-0006}
  webhook: {url: "https://hooks.example.org/x?t=wh-s3cr3t-0007", headers: {Authorization: "Bearer hd-s3cr3t-0008"}}
upstreams:
  - sk: "sk-s3cr3t-key-0009,sk-s3cr3t-key-0010"
    endpoint: https://api.example.org/v1
    authorization: "tok-s3cr3t-team-0011"
  - endpoint: https://public.example.org/v1
    noauth: true
`

// holders builds every type that holds a secret from secretConfig, as
// serve wires them, and returns them by name.
func holders(t *testing.T) map[string]any {
	t.Helper()
	cfg, err := config.Parse([]byte(secretConfig), "config.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Options{}) // every part, as serve wires them
	if err != nil {
		t.Fatal(err)
	}
	tr := a.Transport()
	n := cfg.Notify
	nc := notify.Config{
		Matrix:  &notify.Matrix{Homeserver: n.Matrix.Homeserver, Room: n.Matrix.Room, Token: n.Matrix.Token},
		Feishu:  &notify.Feishu{Webhook: n.Feishu.Webhook, Secret: n.Feishu.Secret},
		Webhook: &notify.Webhook{URL: n.Webhook.URL, Headers: n.Webhook.Headers},
	}
	notifier, err := notify.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	access := make([]server.UpstreamAccess, len(cfg.Upstream))
	for i, u := range cfg.Upstream {
		access[i] = server.UpstreamAccess{Name: u.Name, Tokens: u.Authorization, InheritTokens: u.InheritAuthorization, NoAuth: u.NoAuth}
	}
	sopts := server.Options{Transport: tr, Tokens: cfg.Authorization, Upstreams: access}
	srv, err := server.New(sopts)
	if err != nil {
		t.Fatal(err)
	}
	aopts := server.AdminOptions{Transport: tr, Token: cfg.AdminToken}
	store, err := records.Open(cfg.DBType, cfg.DBAddr) // reaches no database
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	_, badDSN := records.Open(records.TypePostgres, secret.New("host=db.invalid password='pw-s3cr3t-0012 port=x"))
	redisStore, err := redisstore.New(cfg.Store, redisstore.Options{}) // connects nowhere
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { redisStore.Close() })
	_, badRedis := redisstore.New(secret.New("redis://:rd-s3cr3t-0014@redis.invalid:6379/notadb"), redisstore.Options{})
	return map[string]any{
		"app.App":               a,
		"config.Config":         cfg,
		"config.Upstream":       cfg.Upstream[0],
		"config.Notify":         cfg.Notify,
		"config.Matrix":         cfg.Notify.Matrix,
		"config.Feishu":         cfg.Notify.Feishu,
		"config.Webhook":        cfg.Notify.Webhook,
		"notify.Config":         nc,
		"notify.Matrix":         nc.Matrix,
		"notify.Feishu":         nc.Feishu,
		"notify.Webhook":        nc.Webhook,
		"notify.Notifier":       notifier,
		"server.Options":        sopts,
		"server.UpstreamAccess": access[0],
		"server.Server":         srv,
		"server.AdminOptions":   aopts,
		"server.Admin":          server.NewAdmin(aopts),
		"server.Clients":        srv.Clients(),
		"records.Store":         store,
		"records.RedactAddr":    records.RedactAddr(cfg.DBAddr.Reveal()),
		"records.Open error":    badDSN,
		"redisstore.Store":      redisStore,
		"redisstore.New error":  badRedis,
		"secret.String":         cfg.AdminToken,
		"keypool.KeyInfo":       tr.Snapshot(),
	}
}

// TestNoSecretInOutput prints, encodes and logs each holder, alone and
// nested (in exported and unexported fields, behind pointers, in slices,
// maps and interfaces), and looks for the marker in all of it.
func TestNoSecretInOutput(t *testing.T) {
	type nest struct {
		Exported   any
		unexported any
	}
	for name, v := range holders(t) {
		t.Run(name, func(t *testing.T) {
			forms := []any{v, &v, nest{v, v}, &nest{v, v}, []any{v}, map[string]any{"v": v}, struct{ inner nest }{nest{v, v}}}
			var out []string
			for _, f := range forms {
				for _, verb := range verbs {
					out = append(out, fmt.Sprintf(verb, f))
				}
				if b, err := json.Marshal(f); err == nil {
					out = append(out, string(b))
				}
			}
			out = append(out, logged(t, "v", v, "forms", forms))
			for _, s := range out {
				if strings.Contains(s, marker) {
					t.Errorf("a secret shows: %s", s)
				}
			}
		})
	}
}

var secretType = reflect.TypeFor[secret.String]()

// TestSecretsHeldAsSecretStrings walks each holder's values, fields
// unexported ones too, within keypool's internal packages: a string that
// holds the marker outside a secret.String is a secret held in plain text.
// It then checks every field of every type it met, whatever its value:
// one whose name says secret must not be a plain string, so a secret field
// added as a string fails here even before a test fills it.
func TestSecretsHeldAsSecretStrings(t *testing.T) {
	types := map[reflect.Type]bool{}
	for name, v := range holders(t) {
		var plain []string
		walk(reflect.ValueOf(v), name, map[uintptr]bool{}, types, &plain)
		for _, p := range plain {
			t.Errorf("%s holds a secret as a plain string", p)
		}
	}
	// And the types reached through fields that were empty or nil.
	for typ := range maps.Clone(types) {
		for i := range typ.NumField() {
			reach(typ.Field(i).Type, types)
		}
	}
	for _, root := range []reflect.Type{reflect.TypeFor[records.WriterOptions](), reflect.TypeFor[records.Record]()} {
		reach(root, types)
	}
	if len(types) < 10 {
		t.Fatalf("the walk met %d types; it is broken", len(types))
	}
	for typ := range types {
		for i := range typ.NumField() {
			f := typ.Field(i)
			where := typ.String() + "." + f.Name
			if !secretName.MatchString(f.Name) || !plainString(f.Type) {
				continue
			}
			if why, ok := notSecret[where]; ok {
				t.Logf("%s: %s", where, why)
				continue
			}
			t.Errorf("%s is a %s: a secret must be a secret.String (or, if it is none, list it in notSecret)", where, f.Type)
		}
	}
}

// secretName matches the names of fields that hold, or may hold, a secret.
var secretName = regexp.MustCompile(`(?i)token|secret|passw|dsn|addr|url|webhook|header|authoriz|credential|bearer|apikey|^keys?$`)

// notSecret lists the fields whose names match secretName but hold no
// secret, and why.
var notSecret = map[string]string{
	"records.Record.Key":  "a key's ID (kp_…), never the key",
	"records.Attempt.Key": "a key's ID (kp_…), never the key",
}

// plainString reports whether t is, or holds directly, text that is not a
// secret.String: a string, or a slice, array, pointer or map (its values)
// of strings. Types named …ID (keypool.KeyID) are IDs.
func plainString(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String:
		return !strings.HasSuffix(t.Name(), "ID")
	case reflect.Slice, reflect.Array, reflect.Pointer, reflect.Map:
		return t.Elem() != secretType && plainString(t.Elem())
	}
	return false
}

// ours reports whether t is defined in one of keypool's internal packages;
// the root package guards its own keys, and other modules' types are
// theirs (the driver must hold the password it sends).
func ours(t reflect.Type) bool {
	return strings.HasPrefix(t.PkgPath(), "github.com/keypool/keypool/internal/") && t != secretType
}

// walk records in plain the path of every string under v that holds the
// marker, and in types every struct type of ours it meets.
func walk(v reflect.Value, path string, seen map[uintptr]bool, types map[reflect.Type]bool, plain *[]string) {
	if !v.IsValid() || v.Type() == secretType {
		return
	}
	if v.Type().PkgPath() != "" && !ours(v.Type()) && v.Kind() != reflect.Pointer {
		return
	}
	switch v.Kind() {
	case reflect.String:
		if strings.Contains(v.String(), marker) {
			*plain = append(*plain, path)
		}
	case reflect.Pointer:
		if v.IsNil() || seen[v.Pointer()] || v.Elem().Type().PkgPath() != "" && !ours(v.Elem().Type()) {
			return
		}
		seen[v.Pointer()] = true
		walk(v.Elem(), path, seen, types, plain)
	case reflect.Interface:
		walk(v.Elem(), path, seen, types, plain)
	case reflect.Struct:
		types[v.Type()] = true
		for i := range v.NumField() {
			walk(v.Field(i), path+"."+v.Type().Field(i).Name, seen, types, plain)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if bytes.Contains(v.Bytes(), []byte(marker)) {
				*plain = append(*plain, path)
			}
			return
		}
		for i := range min(v.Len(), 1000) {
			walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i), seen, types, plain)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			walk(it.Key(), path+"[key]", seen, types, plain)
			walk(it.Value(), fmt.Sprintf("%s[%v]", path, it.Key()), seen, types, plain)
		}
	}
}

// reach adds t's struct types of ours, and those of its fields, to types.
func reach(t reflect.Type, types map[reflect.Type]bool) {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Chan:
		reach(t.Elem(), types)
	case reflect.Map:
		reach(t.Key(), types)
		reach(t.Elem(), types)
	case reflect.Struct:
		if !ours(t) || types[t] {
			return
		}
		types[t] = true
		for i := range t.NumField() {
			reach(t.Field(i).Type, types)
		}
	}
}

// TestWalkFindsPlainSecrets: the walk and the field check catch what they
// are for, so that TestSecretsHeldAsSecretStrings passing means something.
func TestWalkFindsPlainSecrets(t *testing.T) {
	type leaky struct {
		Name   string
		hidden map[string]*string
		ok     secret.String
	}
	s := "pw-" + marker
	var plain []string
	types := map[reflect.Type]bool{}
	walk(reflect.ValueOf(&leaky{Name: "x", hidden: map[string]*string{"a": &s}, ok: secret.New(s)}), "leaky", map[uintptr]bool{}, types, &plain)
	if !slices.Equal(plain, []string{"leaky.hidden[a]"}) {
		t.Errorf("walk found %q, want the map's value only", plain)
	}
	for _, tt := range []struct {
		v    any
		want bool
	}{{"", true}, {[]string{}, true}, {map[string]string{}, true}, {secret.String{}, false},
		{map[string]secret.String{}, false}, {keypool.KeyID(""), false}, {0, false}, {http.Header{}, true}} {
		if got := plainString(reflect.TypeOf(tt.v)); got != tt.want {
			t.Errorf("plainString(%T) = %v, want %v", tt.v, got, tt.want)
		}
	}
	for _, name := range []string{"Token", "AdminToken", "DBAddr", "URL", "Webhook", "Headers", "Password", "Key", "Keys", "dsn"} {
		if !secretName.MatchString(name) {
			t.Errorf("secretName misses %s", name)
		}
	}
}

// TestKeySourcesHoldNoSecret: every key of secretConfig carries a source,
// and no source holds a secret, however the key is written (sk, a list in
// sk, keys, the environment); a label that would hold the key is dropped.
func TestKeySourcesHoldNoSecret(t *testing.T) {
	t.Setenv("KP_HYGIENE_KEYS", "sk-s3cr3t-env-0020,sk-s3cr3t-env-0021")
	in := secretConfig + `  - endpoint: https://more.example.org/v1
    sk: $KP_HYGIENE_KEYS
    keys: [sk-s3cr3t-flow-0022, "sk-s3cr3t-flow-0023"]
  - endpoint: https://block.example.org/v1
    keys:
      - sk-s3cr3t-block-0024
`
	cfg, err := config.Parse([]byte(in), "config.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ki := range a.Transport().Snapshot() {
		if ki.Auth != keypool.AuthKeys {
			continue
		}
		n++
		if !strings.HasPrefix(ki.Source, "config.yaml:") {
			t.Errorf("%s: source %q; want a line of config.yaml", ki.ID, ki.Source)
		}
		if strings.Contains(ki.Source, marker) || strings.Contains(ki.Source, "sk-") {
			t.Errorf("%s: source %q holds key text", ki.ID, ki.Source)
		}
	}
	if n != 7 {
		t.Errorf("%d keys; want 7", n)
	}
	k := keypool.NewKey("sk-s3cr3t-key-0030").WithSource("keys-sk-s3cr3t-key-0030.txt:1")
	if k.Source() != "" {
		t.Errorf("a source that holds its key survived: %q", k.Source())
	}
}
