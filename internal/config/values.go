package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// This file holds the kinds of value a config file has. Each type reads
// itself from its node (yaml.Unmarshaler) and returns what is wrong with the
// value as a problem at the node's line; the parser puts the field's name in
// front and collects the problems. Most are a Config field's type renamed,
// so that a schema points one at its field: (*duration)(&c.Timeout). A value
// with a problem stores nothing, or only what a later check must see (a
// webhook URL that is not one was still given; the good entries of keys).

// problem is what is wrong with one value, at line. msg follows the field's
// name in the message: "upstream 1: timeout" + " must not be negative", or
// "authorization" + ": entry 2 must be a single value…".
type problem struct {
	line int
	msg  string
}

func (e *problem) Error() string { return "line " + strconv.Itoa(e.line) + ": value" + e.msg }

func problemf(n *yaml.Node, format string, args ...any) error {
	return &problem{n.Line, fmt.Sprintf(format, args...)}
}

// secretOf is where the file's text becomes a secret.String: every secret a config
// holds is made here.
func secretOf(s string) secret.String { return secret.New(s) }

// scalarOf returns the value of a single-valued node, environment variables
// expanded; null is "". secret marks a field whose value must never be shown.
func scalarOf(n *yaml.Node, secret bool) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", problemf(n, " must be a single value, not a list or mapping")
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return expand(n, secret)
}

// listOf calls each with every item of a list node (null is an empty list),
// in order. A problem with an item, one that is not a single value or one
// each returns, names the item as "entry N"; the other items are still read.
func listOf(n *yaml.Node, secret bool, each func(s string, item *yaml.Node) error) error {
	switch {
	case n.Kind == yaml.SequenceNode:
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil
	default:
		return problemf(n, " must be a list, such as [a, b]")
	}
	var errs []error
	for i, x := range n.Content {
		x = deref(x)
		s, err := scalarOf(x, secret)
		if err == nil {
			err = each(s, x)
		}
		if err != nil {
			pr := &problem{x.Line, ": " + err.Error()}
			errors.As(err, &pr)
			errs = append(errs, &problem{pr.line, fmt.Sprintf(": entry %d%s", i+1, pr.msg)})
		}
	}
	return errors.Join(errs...)
}

// expandEnv replaces $NAME and ${NAME} with environment variables; $$ is a
// $. missing is the first variable that is not set.
func expandEnv(s string) (out, missing string) {
	if !strings.Contains(s, "$") {
		return s, ""
	}
	out = os.Expand(s, func(name string) string {
		if name == "$" {
			return "$"
		}
		v, ok := os.LookupEnv(name)
		if !ok && missing == "" {
			missing = name
		}
		return v
	})
	return out, missing
}

// expand expands n's value (see expandEnv). A variable that is not set is a
// problem; in a secret field it is named only when written ${NAME}, since a
// bare $ there may be part of the secret.
func expand(n *yaml.Node, secret bool) (string, error) {
	out, missing := expandEnv(n.Value)
	switch {
	case missing == "":
		return out, nil
	case secret && !strings.Contains(n.Value, "${"+missing+"}"):
		return "", problemf(n, " refers to an environment variable that is not set (write ${NAME} to see its name, $$ for a literal $)")
	case !showable(missing):
		return "", problemf(n, " refers to an environment variable that is not set")
	}
	return "", problemf(n, ": environment variable %s is not set", missing)
}

// text is a string, trimmed.
type text string

func (t *text) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if err == nil {
		*t = text(strings.TrimSpace(s))
	}
	return err
}

// secretText is a secret, trimmed.
type secretText secret.String

func (t *secretText) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, true)
	if err == nil {
		*t = secretText(secretOf(strings.TrimSpace(s)))
	}
	return err
}

// rawSecret is a secret as written, space and all (dbaddr).
type rawSecret secret.String

func (t *rawSecret) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, true)
	if err == nil {
		*t = rawSecret(secretOf(s))
	}
	return err
}

// choice is "" or one of a few words, in any case.
type choice struct {
	to *string
	of []string
}

func (c choice) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if err != nil {
		return err
	}
	if s = strings.ToLower(strings.TrimSpace(s)); s != "" && !slices.Contains(c.of, s) {
		last := len(c.of) - 1
		return problemf(n, " must be %s or %s", strings.Join(c.of[:last], ", "), c.of[last])
	}
	*c.to = s
	return nil
}

// filePath is a file name, taken from dir when relative.
type filePath struct {
	to  *string
	dir string
}

func (fp filePath) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if s = strings.TrimSpace(s); err != nil || s == "" {
		return err
	}
	if !filepath.IsAbs(s) && fp.dir != "" {
		s = filepath.Join(fp.dir, s)
	}
	*fp.to = s
	return nil
}

// hostPort is an address to listen on.
type hostPort string

func (h *hostPort) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if err != nil || s == "" {
		return err
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return problemf(n, " must be host:port, such as 127.0.0.1:8080 or :8080")
	}
	*h = hostPort(s)
	return nil
}

// webURL reports whether s is an absolute http or https URL with a host.
func webURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// endpoint is an upstream's API root. A bad one is reported without its
// value: a URL may carry a token.
type endpoint string

func (e *endpoint) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if s = strings.TrimSpace(s); err != nil || s == "" {
		return err
	}
	if !webURL(s) {
		return problemf(n, " must be an http:// or https:// URL with a host, such as https://api.openai.com/v1")
	}
	*e = endpoint(s)
	return nil
}

// httpURL is a URL that is no secret (a Matrix homeserver); a bad one is
// quoted.
type httpURL string

func (u *httpURL) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if s = strings.TrimSpace(s); err != nil || s == "" {
		return err
	}
	*u = httpURL(s)
	if !webURL(s) {
		return problemf(n, " must be an http or https URL, not %q", s)
	}
	return nil
}

// secretURL is a URL that is a secret (a webhook's), trimmed; a bad one is
// not quoted.
type secretURL secret.String

func (u *secretURL) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, true)
	if s = strings.TrimSpace(s); err != nil || s == "" {
		return err
	}
	*u = secretURL(secretOf(s))
	if !webURL(s) {
		return problemf(n, " must be an http or https URL")
	}
	return nil
}

// upstreamType is openai, azure (Azure OpenAI) or replicate
// (openai-api-route's beta: Replicate's chat models answering in OpenAI's
// shape).
type upstreamType string

func (t *upstreamType) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if err != nil {
		return err
	}
	switch s = strings.ToLower(strings.TrimSpace(s)); s {
	case "", "openai":
		*t = "openai"
	case "replicate", "azure":
		*t = upstreamType(s)
	default:
		return problemf(n, " must be openai, azure or replicate")
	}
	return nil
}

// deploymentMap maps a model to its Azure deployment (deployments:
// {gpt-4o: my-gpt4o}). A model that no request asks for is no error: the
// map may list models an allow list leaves out.
type deploymentMap map[string]string

func (d *deploymentMap) UnmarshalYAML(n *yaml.Node) error {
	switch {
	case n.Kind == yaml.MappingNode:
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil
	default:
		return problemf(n, " must be a mapping of model names to deployment names, such as {gpt-4o: my-gpt4o}")
	}
	out := make(map[string]string, len(n.Content)/2)
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		model, err := scalarOf(k, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if model = strings.TrimSpace(model); model == "" {
			errs = append(errs, problemf(k, ": a model name is empty"))
			continue
		}
		name, err := scalarOf(v, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if name = strings.TrimSpace(name); !deploymentName(name) {
			errs = append(errs, problemf(v, ": the deployment of %s must be a name of letters, digits, '-', '_' and '.'", showModel(model)))
			continue
		}
		if _, dup := out[model]; dup {
			errs = append(errs, problemf(k, ": %s is mapped twice", showModel(model)))
			continue
		}
		out[model] = name
	}
	*d = out
	return errors.Join(errs...)
}

// deploymentName reports whether s is an Azure deployment's name: up to 64
// letters, digits, '-', '_' and '.', not "." or "..".
func deploymentName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// showModel quotes a model name for a message, clipped; a name shaped
// like a key is not shown.
func showModel(m string) string {
	if strings.Contains(strings.ToLower(m), "sk-") {
		return "a model"
	}
	if len(m) > 64 {
		m = m[:64] + "…"
	}
	return strconv.Quote(m)
}

// apiVersion is Azure's api-version: a date, YYYY-MM-DD, with an optional
// -preview.
type apiVersion string

var apiVersionShape = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(-preview)?$`)

func (a *apiVersion) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if s = strings.TrimSpace(s); err != nil || s == "" {
		return err
	}
	if !apiVersionShape.MatchString(s) {
		return problemf(n, " must be an Azure api-version such as %s or 2025-04-01-preview", keypool.DefaultAzureAPIVersion)
	}
	*a = apiVersion(s)
	return nil
}

// boolean is true (yes, on) or false (no, off, or nothing).
type boolean bool

func (b *boolean) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if err != nil {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "false", "no", "off":
		*b = false
	case "true", "yes", "on":
		*b = true
	default:
		return problemf(n, " must be true or false")
	}
	return nil
}

// count is a whole number, 0 or more.
type count int

func (c *count) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if s = strings.TrimSpace(s); err != nil || s == "" {
		return err
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return problemf(n, " must be a whole number, 0 or more")
	}
	*c = count(v)
	return nil
}

// rate is a number of checks per second, 0 or more.
type rate float64

func (r *rate) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if err != nil || s == "" {
		return err
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return problemf(n, " must be a number of checks per second, 0 or more")
	}
	*r = rate(v)
	return nil
}

// size is a byte count: a whole number, or one with a unit (KiB, MiB, GiB,
// or KB, MB, GB as powers of ten), at most 1 TiB.
type size int64

func (z *size) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if s = strings.TrimSpace(s); err != nil || s == "" {
		return err
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<40)/mult {
		return problemf(n, " must be a size in bytes, such as 33554432 or 32MiB")
	}
	*z = size(v * mult)
	return nil
}

// Off is a duration field turned off (idle_timeout: off): no limit.
const Off time.Duration = -1

// duration is seconds (openai-api-route's int, or a fraction) or a Go
// duration; nothing is 0.
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	if err != nil {
		return err
	}
	v, err := parseDuration(s)
	if err != nil {
		return problemf(n, " %v", err)
	}
	*d = duration(v)
	return nil
}

// durationOrOff is a duration that may be turned off: off (also no, false,
// never) is Off; 0 or nothing is 0, the default.
type durationOrOff time.Duration

func (d *durationOrOff) UnmarshalYAML(n *yaml.Node) error {
	if s, err := scalarOf(n, false); err == nil && isOff(s) {
		*d = durationOrOff(Off)
		return nil
	}
	return (*duration)(d).UnmarshalYAML(n)
}

func isOff(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "off", "no", "false", "never":
		return true
	}
	return false
}

// recheck is the checker's recheck, which sets Recheck, or NoRecheck for
// 0 or off.
type recheck Checker

func (c *recheck) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, false)
	switch s = strings.ToLower(strings.TrimSpace(s)); {
	case err != nil || s == "":
		return err
	case isOff(s):
		c.NoRecheck = true
		return nil
	}
	d, err := parseDuration(s)
	switch {
	case err != nil:
		return problemf(n, " %v, or off", err)
	case d == 0:
		c.NoRecheck = true
	default:
		c.Recheck = d
	}
	return nil
}

var (
	errNotDuration = errors.New("must be seconds, such as 120, or a duration, such as 2m or 1h30m")
	errNegative    = errors.New("must not be negative")
	errTooLong     = errors.New("is too long")
)

// parseDuration reads seconds (openai-api-route's int, or a fraction) or a
// Go duration; "" is 0.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if sec, err := strconv.ParseFloat(s, 64); err == nil {
		switch {
		case math.IsNaN(sec) || math.IsInf(sec, 0):
			return 0, errNotDuration
		case sec < 0:
			return 0, errNegative
		case sec*float64(time.Second) >= math.MaxInt64:
			return 0, errTooLong
		}
		return time.Duration(sec * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, errNotDuration
	case d < 0:
		return 0, errNegative
	}
	return d, nil
}

// tokens are client tokens: a comma-separated string, or a list, trimmed,
// without empty entries or duplicates. Nothing written (null, "" or []) is
// no tokens; a value that holds no token once trimmed (" , ", or a variable
// that expanded to nothing) is a problem, since an upstream without tokens
// of its own takes the top-level ones.
type tokens []secret.String

func (t *tokens) UnmarshalYAML(n *yaml.Node) error {
	var raw []string
	if n.Kind == yaml.SequenceNode {
		err := listOf(n, true, func(s string, _ *yaml.Node) error { raw = append(raw, s); return nil })
		if err != nil {
			return err
		}
	} else {
		s, err := scalarOf(n, true)
		if err != nil {
			return err
		}
		if n.Value != "" {
			raw = strings.Split(s, ",")
		}
	}
	if len(raw) > 0 && strings.TrimSpace(strings.Join(raw, "")) == "" {
		return problemf(n, " holds no token once spaces and commas are trimmed")
	}
	*t = nil
	seen := map[string]bool{}
	for _, s := range raw {
		if s = strings.TrimSpace(s); s != "" && !seen[s] {
			seen[s] = true
			*t = append(*t, secretOf(s))
		}
	}
	return nil
}

// patterns are allow or deny: a list of model names or globs, trimmed.
type patterns []string

func (ps *patterns) UnmarshalYAML(n *yaml.Node) error {
	var out []string
	err := listOf(n, false, func(s string, item *yaml.Node) error {
		if s = strings.TrimSpace(s); s == "" {
			return problemf(item, " is empty")
		}
		out = append(out, s)
		return nil
	})
	if err == nil {
		*ps = out
	}
	return err
}

// keyList is keys: a list of keys, one per entry. It adds to the keys read
// before it (sk's), so that sk and keys add up in the order written. Each
// key's source is its entry's line in file, and for a list written on one
// line ([a, b]) its place in the list too: "config.yaml:8[2]".
type keyList struct {
	keys *[]keypool.Key
	file string
}

func (l keyList) UnmarshalYAML(n *yaml.Node) error {
	flow := n.Style&yaml.FlowStyle != 0
	return listOf(n, true, func(s string, item *yaml.Node) error {
		keys, err := keypool.ParseKeys(s)
		if err != nil || strings.Contains(s, ",") {
			return problemf(item, " has white space or a comma inside")
		}
		label := lineSource(l.file, item.Line)
		if i := slices.Index(n.Content, item); flow && i >= 0 {
			label += "[" + strconv.Itoa(i+1) + "]"
		}
		for _, k := range keys {
			*l.keys = append(*l.keys, k.WithSource(label))
		}
		return nil
	})
}

// skKeys is sk: one key, several comma-separated, or asis (each client's
// own key goes on). Its keys go to keys, with those of keys. A key's source
// is sk's line in file, and in a list its place in the list:
// "config.yaml:8", "config.yaml:8[2]".
type skKeys struct {
	keys     *[]keypool.Key
	file     string
	asis     bool
	emptyVar bool // written with variables that expanded to nothing
}

func (sk *skKeys) UnmarshalYAML(n *yaml.Node) error {
	s, err := scalarOf(n, true)
	if err != nil {
		return err
	}
	switch s = strings.TrimSpace(s); {
	case s == "asis":
		sk.asis = true
		return nil
	case s == "" && strings.Contains(n.Value, "$"):
		sk.emptyVar = true
	}
	label := lineSource(sk.file, n.Line)
	var keys []keypool.Key
	if strings.Contains(s, ",") {
		keys, err = ParseKeyList(s, label)
	} else if keys, err = keypool.ParseKeys(s); len(keys) == 1 {
		keys[0] = keys[0].WithSource(label)
	}
	if err != nil {
		return problemf(n, ": %v", err)
	}
	if slices.ContainsFunc(keys, func(k keypool.Key) bool { return k.ID() == asisID }) {
		return problemf(n, ": asis must be alone: it passes each client's own key on")
	}
	*sk.keys = append(*sk.keys, keys...)
	return nil
}

// lineSource is the source of a key written at line of file: "file:line".
func lineSource(file string, line int) string { return file + ":" + strconv.Itoa(line) }

// asisID is the ID of a key that reads "asis": openai-api-route's keyword, not a key.
var asisID = keypool.NewKey("asis").ID()
