package secret_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/keypool/keypool/internal/secret"
)

// marker is in every secret of these tests and must show nowhere.
const marker = "s3cr3t"

// verbs are the fmt verbs and flags a secret is printed with.
var verbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3v", "%-8s", "%T %p"}

// holder keeps secrets where fmt cannot call their methods (unexported
// fields) as well as where it can.
type holder struct {
	Exported   secret.String
	unexported secret.String
	list       []secret.String
	byName     map[string]secret.String
	ptr        *secret.String
	iface      any
}

func TestStringPrintsNoSecret(t *testing.T) {
	s := secret.New("tok-" + marker + "-0001")
	h := holder{Exported: s, unexported: s, list: []secret.String{s, s}, byName: map[string]secret.String{"a": s}, ptr: &s, iface: s}
	values := []any{s, &s, h, &h, []secret.String{s}, map[string]secret.String{"k": s},
		[]holder{h}, map[string]*holder{"h": &h}, struct{ inner holder }{h}, []any{s, &h}}
	var seen []string
	for _, v := range values {
		for _, verb := range verbs {
			seen = append(seen, fmt.Sprintf(verb, v))
		}
		seen = append(seen, fmt.Sprint(v), fmt.Sprintln(v))
		if b, err := json.Marshal(v); err == nil {
			seen = append(seen, string(b))
		}
		if b, err := yaml.Marshal(v); err == nil {
			seen = append(seen, string(b))
		}
	}
	seen = append(seen, logged(t, "s", s, "p", &s, "h", h, "list", []secret.String{s}, "group", slog.GroupValue(slog.Any("s", s))))
	for _, out := range seen {
		if strings.Contains(out, marker) {
			t.Errorf("a secret shows: %s", out)
		}
	}
}

// logged logs args with slog's text and JSON handlers and returns both.
func logged(t *testing.T, args ...any) string {
	t.Helper()
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("m", args...)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("m", args...)
	if text.Len() == 0 || js.Len() == 0 {
		t.Fatal("nothing logged")
	}
	return text.String() + js.String()
}

func TestStringForms(t *testing.T) {
	s := secret.New("tok-" + marker)
	var zero secret.String
	tests := []struct {
		name, got, want string
	}{
		{"%v", fmt.Sprintf("%v", s), "[redacted]"},
		{"%s", fmt.Sprintf("%s", s), "[redacted]"},
		{"%q", fmt.Sprintf("%q", s), `"[redacted]"`},
		{"%#v", fmt.Sprintf("%#v", s), `secret.String("[redacted]")`},
		{"%x", fmt.Sprintf("%x", s), "[redacted]"},
		{"struct %+v", fmt.Sprintf("%+v", struct{ Token secret.String }{s}), "{Token:[redacted]}"},
		{"zero %v", fmt.Sprintf("%v", zero), ""},
		{"zero %q", fmt.Sprintf("%q", zero), `""`},
		{"zero %#v", fmt.Sprintf("%#v", zero), `secret.String("")`},
		{"empty New", fmt.Sprintf("%q", secret.New("")), `""`},
		{"json", mustJSON(t, map[string]any{"t": s, "z": zero}), `{"t":"[redacted]","z":""}`},
		{"yaml", mustYAML(t, map[string]any{"t": s}), "t: '[redacted]'\n"},
		{"slog text", textLog(slog.Any("t", s)), `t=[redacted]`},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustYAML(t *testing.T, v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// textLog is the attribute part of a slog text line.
func textLog(a slog.Attr) string {
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
				return slog.Attr{}
			}
			return a
		}})).LogAttrs(context.Background(), slog.LevelInfo, "", a)
	return strings.TrimSpace(b.String())
}

func TestRevealAndEqual(t *testing.T) {
	s := secret.New("tok-1234")
	if s.Reveal() != "tok-1234" || s.IsZero() {
		t.Errorf("Reveal = %q, IsZero %v", s.Reveal(), s.IsZero())
	}
	if !s.Equal("tok-1234") || s.Equal("tok-123") || s.Equal("tok-12345") || s.Equal("") {
		t.Error("Equal is wrong")
	}
	var zero secret.String
	if zero.Reveal() != "" || !zero.IsZero() || !zero.Equal("") || zero.Equal("x") {
		t.Error("the zero String is not empty")
	}
	if c := s; c.Reveal() != "tok-1234" {
		t.Error("a copy lost the text")
	}
}

// TestDecode: the config's decoders fill a String from YAML and JSON.
func TestDecode(t *testing.T) {
	var v struct {
		Token  secret.String            `yaml:"token" json:"token"`
		Tokens []secret.String          `yaml:"tokens" json:"tokens"`
		Header map[string]secret.String `yaml:"header" json:"header"`
	}
	if err := yaml.Unmarshal([]byte("token: a-1234\ntokens: [b-1234, 1234]\nheader: {X-Key: c-1234}\n"), &v); err != nil {
		t.Fatal(err)
	}
	if v.Token.Reveal() != "a-1234" || len(v.Tokens) != 2 || v.Tokens[1].Reveal() != "1234" || v.Header["X-Key"].Reveal() != "c-1234" {
		t.Errorf("yaml decoded %q %q %q", v.Token.Reveal(), v.Tokens, v.Header["X-Key"].Reveal())
	}
	if err := json.Unmarshal([]byte(`{"token":"d-1234"}`), &v); err != nil || v.Token.Reveal() != "d-1234" {
		t.Errorf("json decoded %q, %v", v.Token.Reveal(), err)
	}
}

func TestScrubber(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"none", nil, "dial tcp: refused", "dial tcp: refused"},
		{"one", []string{"hunter2"}, "pw=hunter2 and hunter2", "pw=[redacted] and [redacted]"},
		{"longest first", []string{"abcd", "https://h/abcd/efgh"}, "post https://h/abcd/efgh: abcd", "post [redacted]: [redacted]"},
		{"too short", []string{"", "a", "abc"}, "a abc", "a abc"},
		{"duplicates", []string{"tok-1", "tok-2", "tok-1"}, "tok-1 tok-2", "[redacted] [redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := secret.NewScrubber(tt.secrets...).Scrub(tt.in); got != tt.want {
				t.Errorf("Scrub(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	var none *secret.Scrubber
	if none.Scrub("x-1234") != "x-1234" || none.Error(context.Canceled) != context.Canceled {
		t.Error("a nil Scrubber changed something")
	}
}

func TestScrubberError(t *testing.T) {
	sc := secret.NewScrubber("", "hunter2")
	err := sc.Error(fmt.Errorf("dial: %w: pw=hunter2", context.Canceled))
	if got := err.Error(); got != "dial: context canceled: pw=[redacted]" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(err, context.Canceled) {
		t.Error("errors.Is(context.Canceled) is false")
	}
	if errors.Unwrap(err) != nil {
		t.Error("the scrubbed error unwraps to the original")
	}
	var pe *pwError
	if errors.As(sc.Error(&pwError{"hunter2"}), &pe) {
		t.Error("errors.As reaches the original, secret and all")
	}
	if err := secret.NewScrubber().Error(context.Canceled); err != context.Canceled {
		t.Errorf("with no secrets: %v, want the error unchanged", err)
	}
	if sc.Error(nil) != nil {
		t.Error("Error(nil) is not nil")
	}
}

type pwError struct{ pw string }

func (e *pwError) Error() string { return "bad password " + e.pw }

func TestRedactURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://user:hunter2@127.0.0.1:1/x?q=1", "http://user:[redacted]@127.0.0.1:1/x?q=1"},
		{"https://u%40corp:p%40ss@h/", "https://u%40corp:[redacted]@h/"},
		{"https://user@h/a@b", "https://user@h/a@b"},
		{"https://h/a@b", "https://h/a@b"},
	} {
		u, err := url.Parse(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := secret.RedactURL(u); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
