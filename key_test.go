package keypool

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode"
)

// keyTestSecret is distinctive enough that finding it (or its hex) anywhere
// in formatted output can only mean a leak.
const keyTestSecret = "sk-proj-SECRETSECRET123"

// keyTestSecretID is NewKey(keyTestSecret).ID(), computed once from the code.
// If it changes, every stored record and metric label changes with it: change
// it only on purpose.
const keyTestSecretID KeyID = "kp_8d7eee48d3560504"

// keyTestSecretOrgID is NewKey(keyTestSecret).WithOrganization("org-abc").ID().
const keyTestSecretOrgID KeyID = "kp_29996c0657696192"

// keySecrets returns the secrets of keys, in order.
func keySecrets(keys []Key) []string {
	s := make([]string, 0, len(keys))
	for _, k := range keys {
		s = append(s, k.secret())
	}
	return s
}

// keyNumberRe matches n as a whole number inside an error message.
func keyNumberRe(n int) *regexp.Regexp {
	return regexp.MustCompile(`\b` + strconv.Itoa(n) + `\b`)
}

func TestParseKeys(t *testing.T) {
	tests := []struct {
		name    string
		list    string
		want    []string
		wantErr bool
		errAt   int      // the entry the error must name
		hidden  []string // never in the error
	}{
		{name: "OPENAI_KEY convention", list: "k1, k2,,k1 ", want: []string{"k1", "k2"}},
		{name: "empty", list: "", want: []string{}},
		{name: "only separators and space", list: " , ,,\t, ", want: []string{}},
		{name: "one key", list: "sk-proj-abc", want: []string{"sk-proj-abc"}},
		{name: "tabs and newlines trimmed", list: "\tsk-a\n,sk-b\r\n", want: []string{"sk-a", "sk-b"}},
		{name: "duplicates dropped, first order kept", list: "sk-b,sk-a,sk-b,sk-a", want: []string{"sk-b", "sk-a"}},
		{name: "duplicate after trimming", list: "sk-a, sk-a ,\tsk-a", want: []string{"sk-a"}},
		{name: "unicode space around trimmed", list: "\u3000sk-a\u00a0,\u2003sk-b", want: []string{"sk-a", "sk-b"}},
		{name: "space inside", list: "sk-ok,sk-proj-LEAKME123 sk-proj-ANOTHER456", wantErr: true, errAt: 2,
			hidden: []string{"sk-proj-LEAKME123", "sk-proj-ANOTHER456", "LEAKME", "ANOTHER"}},
		{name: "tab inside", list: "sk-proj-TABTAB\tTAIL", wantErr: true, errAt: 1, hidden: []string{"TABTAB", "TAIL"}},
		{name: "no-break space inside", list: "a,b,sk-proj-NBSPNBSP\u00a0x", wantErr: true, errAt: 3, hidden: []string{"NBSPNBSP"}},
		{name: "error after a duplicate", list: "sk-a,sk-a,sk-proj-BAD BAD", wantErr: true, errAt: 3, hidden: []string{"sk-proj-BAD"}},
		// strings.TrimSpace trims every Unicode space, so an inner Unicode
		// space (here U+3000, ideographic space) must be refused too.
		{name: "unicode space inside", list: "sk-proj-IDEO\u3000GRAPHIC", wantErr: true, errAt: 1, hidden: []string{"IDEO", "GRAPHIC"}},
		{name: "em space inside", list: "sk-x,sk-proj-EMSPACE\u2003y", wantErr: true, errAt: 2, hidden: []string{"EMSPACE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ParseKeys(tt.list)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseKeys(%q) = %d keys, nil error; want an error", tt.list, len(keys))
				}
				checkKeyError(t, err, tt.errAt, tt.hidden)
				if keys != nil {
					t.Errorf("keys = %v with an error; want nil", keys)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeys(%q): %v", tt.list, err)
			}
			if got := keySecrets(keys); !slices.Equal(got, tt.want) {
				t.Errorf("ParseKeys(%q) = %q; want %q", tt.list, got, tt.want)
			}
			for _, k := range keys {
				if k.ID() != NewKey(k.secret()).ID() {
					t.Errorf("key %v: ID differs from NewKey's", k)
				}
				if k.Organization() != "" || k.Project() != "" {
					t.Errorf("key %v has organization %q project %q; want none", k, k.Organization(), k.Project())
				}
			}
		})
	}
}

func TestReadKeys(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
		errLine int
		hidden  []string
	}{
		{name: "empty", in: "", want: []string{}},
		{name: "only comments and blanks", in: "# keys\n\n   \n\t# indented comment\n", want: []string{}},
		{name: "one per line", in: "sk-a\nsk-b\nsk-c\n", want: []string{"sk-a", "sk-b", "sk-c"}},
		{name: "no final newline", in: "sk-a\nsk-b", want: []string{"sk-a", "sk-b"}},
		{name: "byte order mark", in: "\ufeffsk-a\r\nsk-b\r\n", want: []string{"sk-a", "sk-b"}},
		{name: "base64 padding is a key", in: "QUJDREVGR0g=\nQUJDREVGRw==\n", want: []string{"QUJDREVGR0g=", "QUJDREVGRw=="}},
		{name: "lower-case name=value may be a key", in: "sk-a=b\n", want: []string{"sk-a=b"}},
		{name: "quoted", in: "sk-a\n\"sk-proj-QUOTED1\"\n", wantErr: true, errLine: 2, hidden: []string{"QUOTED1"}},
		{name: "single-quoted", in: "'sk-proj-QUOTED2'\n", wantErr: true, errLine: 1, hidden: []string{"QUOTED2"}},
		{name: ".env line", in: "# .env\nsk-a\nOPENAI_KEY=sk-proj-DOTENV1\n", wantErr: true, errLine: 3, hidden: []string{"DOTENV1"}},
		{
			name: "comments, blanks, CRLF, duplicates",
			in: "# production keys\r\n" +
				"sk-a\r\n" +
				"\r\n" +
				"  sk-b  # the backup key\r\n" +
				"#sk-commented-out\r\n" +
				"sk-a\r\n" +
				"sk-c#no space before the comment\r\n" +
				"\t\r\n" +
				"   # sk-also-commented\r\n" +
				"sk-b\n",
			want: []string{"sk-a", "sk-b", "sk-c"},
		},
		{name: "two words", in: "sk-a\n\nsk-proj-WORDONE1 sk-proj-WORDTWO2\nsk-b\n", wantErr: true, errLine: 3,
			hidden: []string{"WORDONE1", "WORDTWO2"}},
		{name: "two words, CRLF", in: "# c\r\nsk-proj-CRLFONE\tsk-proj-CRLFTWO\r\n", wantErr: true, errLine: 2,
			hidden: []string{"CRLFONE", "CRLFTWO"}},
		{name: "comma", in: "sk-a\nsk-b\nsk-c\nsk-proj-COMMAA,sk-proj-COMMAB\n", wantErr: true, errLine: 4,
			hidden: []string{"COMMAA", "COMMAB"}},
		{name: "unicode space inside", in: "sk-proj-UNIONE\u3000sk-proj-UNITWO\n", wantErr: true, errLine: 1,
			hidden: []string{"UNIONE", "UNITWO"}},
		{name: "line too long", in: "sk-a\nsk-b\n" + "sk-proj-LONGLONG" + strings.Repeat("x", 70<<10) + "\n", wantErr: true, errLine: 3,
			hidden: []string{"LONGLONG", "xxxxxxxx"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ReadKeys(strings.NewReader(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ReadKeys = %d keys, nil error; want an error", len(keys))
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, "keypool: ") {
					t.Errorf("error %q does not start with the package name", msg)
				}
				if !keyNumberRe(tt.errLine).MatchString(msg) {
					t.Errorf("error %q does not name line %d", msg, tt.errLine)
				}
				for _, h := range tt.hidden {
					if strings.Contains(msg, h) {
						t.Errorf("error %q contains key text %q", msg, h)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadKeys: %v", err)
			}
			if got := keySecrets(keys); !slices.Equal(got, tt.want) {
				t.Errorf("ReadKeys = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestKeyID(t *testing.T) {
	base := NewKey(keyTestSecret)
	hexID := regexp.MustCompile(`^kp_[0-9a-f]{16}$`)

	t.Run("format", func(t *testing.T) {
		for _, k := range []Key{base, base.WithOrganization("org-abc"), base.WithProject("proj_x"), NewKey("x")} {
			id := string(k.ID())
			if len(id) != 19 || !strings.HasPrefix(id, "kp_") || !hexID.MatchString(id) {
				t.Errorf("ID %q: want kp_ and 16 lower-case hex digits (19 chars)", id)
			}
		}
	})

	t.Run("stable", func(t *testing.T) {
		if got := base.ID(); got != keyTestSecretID {
			t.Errorf("NewKey(%q).ID() = %q; want %q (the hash changed)", "sk-proj-…", got, keyTestSecretID)
		}
		if got := base.WithOrganization("org-abc").ID(); got != keyTestSecretOrgID {
			t.Errorf("WithOrganization(org-abc).ID() = %q; want %q (the hash changed)", got, keyTestSecretOrgID)
		}
		if got := NewKey(keyTestSecret).ID(); got != base.ID() {
			t.Errorf("two NewKey calls: %q != %q", got, base.ID())
		}
		if got := base.WithOrganization("org-abc").WithOrganization("").ID(); got != base.ID() {
			t.Errorf("organization set and cleared: ID %q; want %q", got, base.ID())
		}
	})

	distinct := []struct {
		name string
		a, b Key
	}{
		{"different secret", NewKey("sk-a"), NewKey("sk-b")},
		{"with organization", base, base.WithOrganization("org-abc")},
		{"different organizations", base.WithOrganization("org-abc"), base.WithOrganization("org-abd")},
		{"with project", base, base.WithProject("proj_abc")},
		{"different projects", base.WithProject("proj_a"), base.WithProject("proj_b")},
		{"same text as organization or project", base.WithOrganization("x"), base.WithProject("x")},
		{"organization and project", base.WithOrganization("org-a"), base.WithOrganization("org-a").WithProject("proj_a")},
		{"boundary between secret and organization", NewKey("sk-ab").WithOrganization("c"), NewKey("sk-a").WithOrganization("bc")},
	}
	for _, tt := range distinct {
		t.Run(tt.name, func(t *testing.T) {
			if tt.a.ID() == tt.b.ID() {
				t.Errorf("%v and %v: same ID; want different", tt.a, tt.b)
			}
		})
	}

	t.Run("copies", func(t *testing.T) {
		orig := NewKey(keyTestSecret)
		withOrg := orig.WithOrganization("org-abc")
		withProj := withOrg.WithProject("proj_abc")
		if orig.ID() != keyTestSecretID || orig.Organization() != "" || orig.Project() != "" {
			t.Errorf("original changed: ID %q org %q project %q", orig.ID(), orig.Organization(), orig.Project())
		}
		if withOrg.Organization() != "org-abc" || withOrg.Project() != "" || withOrg.ID() != keyTestSecretOrgID {
			t.Errorf("WithOrganization copy changed by WithProject: org %q project %q ID %q", withOrg.Organization(), withOrg.Project(), withOrg.ID())
		}
		if withProj.Organization() != "org-abc" || withProj.Project() != "proj_abc" {
			t.Errorf("WithProject copy: org %q project %q", withProj.Organization(), withProj.Project())
		}
		if withProj.secret() != keyTestSecret || withOrg.secret() != keyTestSecret {
			t.Errorf("copies lost the secret")
		}
	})

	t.Run("zero", func(t *testing.T) {
		var zero Key
		if !zero.IsZero() || !NewKey("").IsZero() {
			t.Errorf("zero Key or NewKey(\"\"): IsZero false; want true")
		}
		if base.IsZero() {
			t.Errorf("NewKey(secret).IsZero() = true")
		}
		if zero.ID() != "" || zero.String() != "" {
			t.Errorf("zero Key: ID %q String %q; want empty", zero.ID(), zero.String())
		}
	})
}

func TestKeyIDCollisions(t *testing.T) {
	if testing.Short() {
		t.Skip("a million hashes; skipped in -short mode")
	}
	const n = 1_000_000
	ids := make([]KeyID, n)
	// Hash in parallel (this is slow under -race), then sort and compare
	// neighbours.
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 0, 32)
			for i := w; i < n; i += workers {
				buf = append(buf[:0], "sk-test-"...)
				buf = append(buf, fmt.Sprintf("%07d", i)...)
				ids[i] = NewKey(string(buf)).ID()
			}
		})
	}
	wg.Wait()
	if got := NewKey("sk-test-0000042").ID(); ids[42] != got {
		t.Fatalf("ids[42] = %q; want %q", ids[42], got)
	}
	slices.Sort(ids)
	if ids[0] == "" {
		t.Fatalf("an empty ID")
	}
	for i := 1; i < n; i++ {
		if ids[i] == ids[i-1] {
			t.Fatalf("two of %d secrets share the ID %q", n, ids[i])
		}
	}
}

// keyLeakHolder holds a key where fmt and json can see it.
type keyLeakHolder struct {
	Name string
	Key  Key
}

// keyLeakHidden holds a key where fmt must reflect into it (no methods).
type keyLeakHidden struct {
	name string
	key  Key
}

// keyLeaks lists what must never appear: the secret's distinctive part, and its
// hex encodings (what %x/%X make of a string).
func keyLeaks() []string {
	var out []string
	for _, s := range []string{keyTestSecret, "SECRETSECRET"} {
		h := hex.EncodeToString([]byte(s))
		out = append(out, s, h, strings.ToUpper(h))
	}
	return out
}

func keyAssertNoLeak(t *testing.T, what, out string) {
	t.Helper()
	for _, leak := range keyLeaks() {
		if strings.Contains(out, leak) {
			t.Errorf("%s leaks the secret (%q): %s", what, leak, out)
			return
		}
	}
}

func TestKeyNeverLeaks(t *testing.T) {
	keys := map[string]Key{
		"plain":         NewKey(keyTestSecret),
		"organization":  NewKey(keyTestSecret).WithOrganization("org-abc"),
		"project":       NewKey(keyTestSecret).WithOrganization("org-abc").WithProject("proj_abc"),
		"source":        NewKey(keyTestSecret).WithSource("keys.txt:12"),
		"secret source": NewKey(keyTestSecret).WithSource("keys.txt:" + keyTestSecret),
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%30v", "%-30s", "% x", "%#x"}
	for name, k := range keys {
		t.Run(name, func(t *testing.T) {
			id := string(k.ID())
			kk := k
			values := []struct {
				name  string
				v     any
				hasID bool // %v shows the ID
			}{
				{"Key", k, true},
				{"*Key", &kk, true},
				{"struct, exported field", keyLeakHolder{Name: "n", Key: k}, true},
				{"*struct, exported field", &keyLeakHolder{Name: "n", Key: k}, true},
				{"struct, unexported field", keyLeakHidden{name: "n", key: k}, true},
				{"*struct, unexported field", &keyLeakHidden{name: "n", key: k}, true},
				{"[]Key", []Key{k, k}, true},
				{"[]*Key", []*Key{&kk}, false}, // pointers inside print as addresses
				{"map[string]Key", map[string]Key{"a": k}, true},
				{"map[Key]int", map[Key]int{k: 1}, true},
				{"[]any", []any{k, keyLeakHidden{key: k}}, true},
			}
			for _, v := range values {
				for _, verb := range verbs {
					out := fmt.Sprintf(verb, v.v)
					keyAssertNoLeak(t, fmt.Sprintf("fmt %s of %s", verb, v.name), out)
				}
				if out := fmt.Sprintf("%v", v.v); v.hasID && !strings.Contains(out, id) {
					t.Errorf("%%v of %s = %s; want the ID %s in it", v.name, out, id)
				}
				if out := fmt.Sprint(v.v) + fmt.Sprintln(v.v); v.hasID && !strings.Contains(out, id) {
					t.Errorf("Sprint of %s = %s; want the ID in it", v.name, out)
				}
			}
			if got := fmt.Sprintf("%s|%v|%q", k, k, k); got != id+"|"+id+"|"+id {
				t.Errorf("%%s|%%v|%%q = %q; want the ID each time", got)
			}
			if got := fmt.Sprintf("%#v", k); got != `keypool.Key("`+id+`")` {
				t.Errorf("%%#v = %q", got)
			}

			for _, v := range []struct {
				name  string
				v     any
				hasID bool
			}{
				{"Key", k, true},
				{"*Key", &kk, true},
				{"struct", keyLeakHolder{Key: k}, true},
				{"struct, unexported field", keyLeakHidden{key: k}, false},
				{"[]Key", []Key{k}, true},
				{"map[string]Key", map[string]Key{"a": k}, true},
				{"map[Key]string", map[Key]string{k: "a"}, true},
			} {
				b, err := json.Marshal(v.v)
				if err != nil {
					t.Fatalf("json.Marshal(%s): %v", v.name, err)
				}
				keyAssertNoLeak(t, "json of "+v.name, string(b))
				if v.hasID && !bytes.Contains(b, []byte(id)) {
					t.Errorf("json of %s = %s; want the ID in it", v.name, b)
				}
			}
			if b, _ := json.Marshal(k); k.Organization() != "" && !bytes.Contains(b, []byte(k.Organization())) {
				t.Errorf("json of a key = %s; want its organization", b)
			}

			for _, h := range []struct {
				name string
				new  func(*bytes.Buffer) slog.Handler
			}{
				{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
				{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
			} {
				var buf bytes.Buffer
				log := slog.New(h.new(&buf))
				log.Info("one key", slog.Any("key", k))
				log.Info("key list", slog.Any("keys", []Key{k}))
				log.Info("held", slog.Any("holder", keyLeakHolder{Name: "n", Key: k}), slog.Any("ptr", &kk))
				log.Info("hidden", slog.Any("hidden", keyLeakHidden{name: "n", key: k}))
				log.Info("args", "key", k, "map", map[string]Key{"a": k})
				log.With("key", k).WithGroup("g").Info("grouped", slog.Group("inner", slog.Any("key", k)))
				out := buf.String()
				keyAssertNoLeak(t, "slog "+h.name, out)
				if n := strings.Count(out, id); n < 6 {
					t.Errorf("slog %s: the ID appears %d times; want it for every logged key:\n%s", h.name, n, out)
				}
			}

			base := errors.New("upstream said no")
			errs := []error{
				errors.New(fmt.Sprint(k)),
				fmt.Errorf("%v", k),
				fmt.Errorf("%+v %#v %s %q", k, k, k, k),
				fmt.Errorf("key %v: %w", k, base),
				fmt.Errorf("outer: %w", fmt.Errorf("key %v: %w", k, base)),
				fmt.Errorf("%v", keyLeakHidden{key: k}),
			}
			for i, err := range errs {
				keyAssertNoLeak(t, fmt.Sprintf("error %d", i), err.Error())
				keyAssertNoLeak(t, fmt.Sprintf("error %d %%+v", i), fmt.Sprintf("%+v", err))
				if !strings.Contains(err.Error(), id) {
					t.Errorf("error %d = %q; want the ID in it", i, err.Error())
				}
			}
			if !errors.Is(errs[4], base) {
				t.Errorf("wrapped error lost its cause")
			}
		})
	}

	t.Run("parse errors", func(t *testing.T) {
		// Reading a keys file by path (and a config entry with a comma
		// inside) is internal/config's now; its tests check the same.
		_, err1 := ParseKeys("sk-fine," + keyTestSecret + " x")
		_, err2 := ParseKeys(keyTestSecret + "\u3000sk-other")
		_, err3 := ReadKeys(strings.NewReader("sk-fine\n" + keyTestSecret + " " + keyTestSecret + "\n"))
		_, err4 := ReadKeys(strings.NewReader(keyTestSecret + "\tsk-proj-OTHER\n"))
		for i, err := range []error{err1, err2, err3, err4} {
			if err == nil {
				t.Errorf("error %d: nil; want an error", i+1)
				continue
			}
			keyAssertNoLeak(t, fmt.Sprintf("parse error %d", i+1), err.Error())
			keyAssertNoLeak(t, fmt.Sprintf("parse error %d %%#v", i+1), fmt.Sprintf("%#v", err))
		}
	})
}

// TestPoolRecordsNeverLeak: the pool's own records of a key (the key, its
// lease, scope, budget, bucket and upstream, the pool and the transport
// holding them) and what it hands out (KeyInfo, events, answers) never show
// the secret or its Authorization header under any verb, although the pool
// keeps "Bearer <secret>" ready for every request.
func TestPoolRecordsNeverLeak(t *testing.T) {
	tr, err := New(WithUpstreams(Upstream{BaseURL: "https://a.test/v1", Keys: []Key{
		NewKey(keyTestSecret), NewKey(keyTestSecret).WithOrganization("org-abc")}}))
	if err != nil {
		t.Fatal(err)
	}
	p := tr.Pool()
	h := takeKey(t, p, "gpt-4o", t0)
	k := h.k
	if got := k.auth(); len(got) != 1 || got[0] != "Bearer "+keyTestSecret {
		t.Fatalf("the key's Authorization header is %d values", len(got))
	}
	info, _ := p.keyAt(k.cred.id, t0)
	a := Answer{Status: 200, Header: http.Header{"X-Request-Id": {"req_1"}}, Limits: noLimits}
	values := []struct {
		name string
		v    any
	}{
		{"*key", k}, {"key", *k}, {"Key", k.cred}, {"lease", h.lease}, {"held", h},
		{"*scope", k.s}, {"*upstream", k.up}, {"*budget", h.bud}, {"*bucket", h.bud.b},
		{"*Pool", p}, {"*Transport", tr}, {"KeyInfo", info}, {"[]KeyInfo", tr.Snapshot()},
		{"pick", pick{model: "gpt-4o", tried: []*key{k}}},
		{"AttemptEvent", AttemptEvent{Key: k.cred.id}}, {"StateEvent", StateEvent{Key: k.cred.id}},
		{"Answer", a}, {"lastAnswer", lastAnswer{k: k}}, {"CheckResult", CheckResult{Key: k.cred.id}},
	}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
			keyAssertNoLeak(t, fmt.Sprintf("fmt %s of %s", verb, v.name), fmt.Sprintf(verb, v.v))
		}
		keyAssertNoLeak(t, "Sprint of "+v.name, fmt.Sprint(v.v))
	}
	drop(p, h, t0)
}

func TestKeyServiceAccount(t *testing.T) {
	tests := []struct {
		name string
		key  Key
		want bool
	}{
		{"service account", NewKey("sk-svcacct-abc123"), true},
		{"service account with organization", NewKey("sk-svcacct-abc123").WithOrganization("org-x"), true},
		{"project key", NewKey("sk-proj-abc123"), false},
		{"legacy key", NewKey("sk-abc123"), false},
		{"admin key", NewKey("sk-admin-abc123"), false},
		{"svcacct later in the key", NewKey("sk-proj-sk-svcacct-x"), false},
		{"upper case", NewKey("SK-SVCACCT-abc"), false},
		{"leading space (NewKey does not trim)", NewKey(" sk-svcacct-abc"), false},
		{"prefix without dash", NewKey("sk-svcacct"), false},
		{"empty", NewKey(""), false},
		{"zero", Key{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.ServiceAccount(); got != tt.want {
				t.Errorf("ServiceAccount() = %v; want %v", got, tt.want)
			}
		})
	}
}

// keyLongWords returns the runs of non-space text longer than 8 bytes in s.
// Every word of the package's fixed error texts is at most 8 bytes long, so
// such a run found in an error can only have come from the input (bar the
// words of bufio.ErrTooLong, which a line over 64 KiB brings in).
func keyLongWords(s string) []string {
	var out []string
	for _, w := range strings.FieldsFunc(s, unicode.IsSpace) {
		if len(w) > 8 && !strings.Contains(bufio.ErrTooLong.Error(), w) {
			out = append(out, w)
		}
	}
	return out
}

// keyCheckResult checks the invariants of every key ParseKeys and ReadKeys
// return.
func keyCheckResult(t *testing.T, keys []Key) {
	t.Helper()
	seen := map[string]bool{}
	for _, k := range keys {
		s := k.secret()
		switch {
		case s == "":
			t.Errorf("empty key")
		case s != strings.TrimSpace(s):
			t.Errorf("key %q not trimmed", s)
		case strings.IndexFunc(s, unicode.IsSpace) >= 0:
			t.Errorf("key %q has white space inside", s)
		case strings.Contains(s, ","):
			t.Errorf("key %q has a comma", s)
		case seen[s]:
			t.Errorf("key %q twice", s)
		}
		seen[s] = true
		if src := k.Source(); strings.Contains(src, s) || len(src) > MaxSourceLen {
			t.Errorf("key %q: source %q holds it or is too long", s, src)
		}
		if k.ID() != NewKey(s).ID() || k.Organization() != "" || k.Project() != "" {
			t.Errorf("key %q: ID %q org %q project %q", s, k.ID(), k.Organization(), k.Project())
		}
	}
}

func FuzzParseKeys(f *testing.F) {
	for _, s := range []string{
		"", ",", "k1, k2,,k1 ", "sk-proj-abc,sk-svcacct-def", "sk-a b", "sk-proj-LONGSECRET123 x,y",
		"\t,\n", "a,\u00a0b ,c", "sk-\u2003x", "\xff,\xfe", strings.Repeat("sk-x,", 50),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		keys, err := ParseKeys(list)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "keypool: ") {
				t.Errorf("error %q does not start with the package name", msg)
			}
			for _, part := range strings.Split(list, ",") {
				for _, w := range keyLongWords(part) {
					if strings.Contains(msg, w) {
						t.Errorf("error %q contains input text %q", msg, w)
					}
				}
			}
			return
		}
		keyCheckResult(t, keys)
		// Nothing is lost: every non-empty entry is a key.
		got := map[string]bool{}
		for _, k := range keys {
			got[k.secret()] = true
		}
		for _, part := range strings.Split(list, ",") {
			if p := strings.TrimSpace(part); p != "" && !got[p] {
				t.Errorf("entry %q missing from the keys", p)
			}
		}
		if len(got) != len(keys) {
			t.Errorf("%d keys, %d distinct", len(keys), len(got))
		}
	})
}

func FuzzReadKeys(f *testing.F) {
	for _, s := range []string{
		"", "\n", "sk-a\nsk-b\n", "# c\r\nsk-a # t\r\n\r\nsk-a\r\n", "sk-proj-WORDONE1 sk-proj-WORDTWO2\n",
		"a,b\n", "#\n#\n", "sk-x#y#z", "\r", "a\rb\n", "\xff\n\xfe", "sk-\u3000x\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		keys, err := ReadKeys(strings.NewReader(in))
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "keypool: ") {
				t.Errorf("error %q does not start with the package name", msg)
			}
			for _, line := range strings.Split(in, "\n") {
				for _, w := range keyLongWords(line) {
					if strings.Contains(msg, w) {
						t.Errorf("error %q contains input text %q", msg, w)
					}
				}
			}
			return
		}
		keyCheckResult(t, keys)
		for _, k := range keys {
			if strings.Contains(k.secret(), "#") {
				t.Errorf("key %q has a comment in it", k.secret())
			}
		}
	})
}

// checkKeyError asserts that a key-parsing error starts with the package
// name, names entry errAt, and shows none of hidden.
func checkKeyError(t *testing.T, err error, errAt int, hidden []string) {
	t.Helper()
	msg := err.Error()
	if !strings.HasPrefix(msg, "keypool: ") {
		t.Errorf("error %q does not start with the package name", msg)
	}
	if !keyNumberRe(errAt).MatchString(msg) {
		t.Errorf("error %q does not name entry %d", msg, errAt)
	}
	for _, h := range hidden {
		if strings.Contains(msg, h) {
			t.Errorf("error %q contains key text %q", msg, h)
		}
	}
}
