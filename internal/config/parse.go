package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keypool/keypool/internal/secret"
)

// maxErrors bounds the problems reported at once; past it the file is
// probably not a config at all.
const maxErrors = 20

// nodeBudget bounds the nodes one parse visits, so that a file of aliases
// that refer to big nodes many times cannot make parsing quadratic.
const nodeBudget = 1 << 20

// Parse parses a config file's contents. name is the file's name in
// messages; dir is where relative keys_file paths start ("" for the current
// directory). It checks every field and reports every problem it finds,
// each with its line.
func Parse(data []byte, name, dir string) (*Config, error) {
	p := &parser{name: name, dir: dir, budget: nodeBudget}
	doc, err := parseYAML(data)
	if err != nil {
		return nil, yamlError(name, err)
	}
	cfg := &Config{name: name}
	p.collectSecrets(doc)
	root := doc
	if root.Kind == 0 { // no document at all
		return cfg, nil
	}
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return cfg, nil
		}
		root = root.Content[0]
	}
	root = deref(root)
	switch {
	case root.Kind == yaml.ScalarNode && root.Tag == "!!null":
		return cfg, nil
	case root.Kind != yaml.MappingNode:
		p.errorf(root.Line, "the file must be a mapping of fields, such as \"upstreams:\"")
	default:
		p.top(cfg, root)
	}
	if len(p.errs) > 0 {
		return nil, p.err()
	}
	for _, w := range p.warns {
		w.Msg = p.scrub(w.Msg)
		cfg.Warnings = append(cfg.Warnings, w.Error())
	}
	return cfg, nil
}

// parseYAML parses data into a node tree. yaml.v3 has panicked on hostile
// input before; a config error is the right answer to any input.
func parseYAML(data []byte) (doc *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, errors.New("yaml: the file cannot be parsed")
		}
	}()
	doc = new(yaml.Node)
	if err := yaml.Unmarshal(data, doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// parser walks the node tree, collecting problems and the secrets it saw,
// so that no message can echo one.
type parser struct {
	name, dir string
	errs      []*Error
	warns     []*Error
	secrets   []string
	budget    int
}

func (p *parser) errorf(line int, format string, args ...any) {
	if len(p.errs) < maxErrors {
		p.errs = append(p.errs, &Error{File: p.name, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
}

// warnf notes something the file says that keypool does not act on.
func (p *parser) warnf(line int, format string, args ...any) {
	if len(p.warns) < maxErrors {
		p.warns = append(p.warns, &Error{File: p.name, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
}

// err joins the problems, with every secret seen scrubbed from them: a
// message may name a field or a variable, and the file could have used the
// same text as a secret elsewhere.
func (p *parser) err() error {
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		e.Msg = p.scrub(e.Msg)
		errs[i] = e
	}
	return errors.Join(errs...)
}

func (p *parser) scrub(s string) string { return secret.NewScrubber(p.secrets...).Scrub(s) }

// secretFields are the fields that hold secrets.
var secretFields = map[string]bool{"sk": true, "keys": true, "authorization": true, "admin_token": true,
	"dbaddr": true, "token": true, "webhook": true, "secret": true, "url": true, "headers": true}

// collectSecrets remembers every value under a secret field, at any depth and
// before any checks, so that no message can echo one, even from a field
// whose parsing stopped early.
func (p *parser) collectSecrets(doc *yaml.Node) {
	// A node may be reached through aliases both in and out of a secret
	// field; each (node, secrecy) is walked once.
	type visit struct {
		n      *yaml.Node
		secret bool
	}
	seen := map[visit]bool{}
	var walk func(n *yaml.Node, secret bool)
	walk = func(n *yaml.Node, secret bool) {
		if n == nil || seen[visit{n, secret}] {
			return
		}
		seen[visit{n, secret}] = true
		switch n.Kind {
		case yaml.AliasNode:
			walk(n.Alias, secret)
		case yaml.ScalarNode:
			if secret {
				p.addSecret(n.Value)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], secret || secretFields[n.Content[i].Value])
			}
		default:
			for _, c := range n.Content {
				walk(c, secret)
			}
		}
	}
	walk(doc, false)
}

// addSecret remembers a secret value, and each comma-separated part of it,
// to scrub them from messages.
func (p *parser) addSecret(s string) {
	if strings.TrimSpace(s) == "asis" {
		return // openai-api-route's keyword, not a key
	}
	p.secrets = append(p.secrets, s, strings.TrimSpace(s))
	if strings.Contains(s, ",") {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "asis" {
				p.secrets = append(p.secrets, part)
			}
		}
	}
}

// spend takes one node from the budget and reports false, once, when it runs out.
func (p *parser) spend(line int) bool {
	if p.budget < 0 {
		return false
	}
	p.budget--
	if p.budget < 0 {
		p.errorf(line, "the file refers to the same nodes too many times (aliases)")
		return false
	}
	return true
}

// field is one key and value of a mapping, the value's aliases resolved.
type field struct {
	name  string
	key   *yaml.Node
	val   *yaml.Node
	label string // how messages name it: "upstream 2: timeout"
}

// fields lists the fields of mapping m, merge keys (<<) resolved: fields
// written out win over merged ones, earlier merged mappings over later ones.
// Fields given twice are reported. where names m in messages ("" for the
// top level, "upstream 2", "checker").
func (p *parser) fields(m *yaml.Node, where string) []field {
	var out []field
	seen := map[string]int{}
	visited := map[*yaml.Node]bool{}
	var merged []*yaml.Node
	prefix := ""
	if where != "" {
		prefix = where + ": "
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], deref(m.Content[i+1])
		if !p.spend(k.Line) {
			return out
		}
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, "%sa field name must be a plain word", prefix)
			continue
		}
		if k.Tag == "!!merge" {
			merged = append(merged, v)
			continue
		}
		if line, dup := seen[k.Value]; dup {
			p.errorf(k.Line, "%s%s is given twice (first at line %d)", prefix, showName(k.Value), line)
			continue
		}
		seen[k.Value] = k.Line
		out = append(out, field{name: k.Value, key: k, val: v, label: prefix + k.Value})
	}
	// Merged mappings add the fields not written out; each is visited once.
	for len(merged) > 0 {
		v := merged[0]
		merged = merged[1:]
		if visited[v] {
			continue
		}
		visited[v] = true
		switch v.Kind {
		case yaml.SequenceNode:
			for _, x := range v.Content {
				merged = append(merged, deref(x))
			}
			continue
		case yaml.MappingNode:
		default:
			p.errorf(v.Line, "%s<< must merge a mapping or a list of mappings", prefix)
			continue
		}
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, x := v.Content[i], deref(v.Content[i+1])
			if !p.spend(k.Line) {
				return out
			}
			if k.Kind != yaml.ScalarNode {
				continue
			}
			if k.Tag == "!!merge" {
				merged = append(merged, x)
				continue
			}
			if _, dup := seen[k.Value]; dup {
				continue
			}
			seen[k.Value] = k.Line
			out = append(out, field{name: k.Value, key: k, val: x, label: prefix + k.Value})
		}
	}
	return out
}

// unknown reports a field that is not in the schema.
func (p *parser) unknown(f field, where string, known []string) {
	in := ""
	if where != "" {
		in = " in " + where
	}
	if !showable(f.name) {
		p.errorf(f.key.Line, "unknown field%s (its name looks like a value, so it is not shown)", in)
		return
	}
	msg := fmt.Sprintf("unknown field %q%s", f.name, in)
	if s := closest(f.name, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	p.errorf(f.key.Line, "%s", msg)
}

// scalar returns the value of a single-valued field, environment variables
// expanded; null is "". secret marks a field whose value must never be shown.
// ok is false when a problem was reported.
func (p *parser) scalar(f field, secret bool) (string, bool) {
	n := f.val
	if n.Kind != yaml.ScalarNode {
		p.errorf(n.Line, "%s must be a single value, not a list or mapping", f.label)
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return p.expand(n.Value, n.Line, f.label, secret)
}

// list returns the items of a list field (a null field is an empty list),
// with their lines.
func (p *parser) list(f field, secret bool) (items []string, lines []int, ok bool) {
	n := f.val
	switch n.Kind {
	case yaml.SequenceNode:
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil, true
		}
		fallthrough
	default:
		p.errorf(n.Line, "%s must be a list, such as [a, b]", f.label)
		return nil, nil, false
	}
	ok = true
	for i, x := range n.Content {
		x = deref(x)
		if !p.spend(x.Line) {
			return nil, nil, false
		}
		item := field{name: f.name, key: f.key, val: x, label: fmt.Sprintf("%s: entry %d", f.label, i+1)}
		s, good := p.scalar(item, secret)
		if !good {
			ok = false
			continue
		}
		items = append(items, s)
		lines = append(lines, x.Line)
	}
	return items, lines, ok
}

func (p *parser) duration(f field) time.Duration {
	s, ok := p.scalar(f, false)
	if !ok {
		return 0
	}
	return p.durationOf(f, s)
}

// durationOrOff reads a duration that may be turned off: off (also no,
// false, never) gives Off; 0 or nothing gives 0, the default.
func (p *parser) durationOrOff(f field) time.Duration {
	s, ok := p.scalar(f, false)
	if !ok {
		return 0
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "off", "no", "false", "never":
		return Off
	}
	return p.durationOf(f, s)
}

// Off is a duration field turned off (idle_timeout: off): no limit.
const Off time.Duration = -1

func (p *parser) durationOf(f field, s string) time.Duration {
	d, err := parseDuration(s)
	if err != nil {
		p.errorf(f.val.Line, "%s %v", f.label, err)
		return 0
	}
	return d
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

// size reads a byte count: a whole number, or one with a unit (KiB, MiB,
// GiB, or KB, MB, GB as powers of ten).
func (p *parser) size(f field) int64 {
	s, ok := p.scalar(f, false)
	s = strings.TrimSpace(s)
	if !ok || s == "" {
		return 0
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
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		p.errorf(f.val.Line, "%s must be a size in bytes, such as 33554432 or 32MiB", f.label)
		return 0
	}
	return n * mult
}

func (p *parser) count(f field) int {
	s, ok := p.scalar(f, false)
	if !ok || strings.TrimSpace(s) == "" {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		p.errorf(f.val.Line, "%s must be a whole number, 0 or more", f.label)
		return 0
	}
	return n
}

func (p *parser) boolean(f field) bool {
	s, ok := p.scalar(f, false)
	if !ok {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "false", "no", "off":
		return false
	case "true", "yes", "on":
		return true
	}
	p.errorf(f.val.Line, "%s must be true or false", f.label)
	return false
}

// path resolves a file name against the config's directory.
func (p *parser) path(s string) string {
	s = strings.TrimSpace(s)
	if filepath.IsAbs(s) || p.dir == "" {
		return s
	}
	return filepath.Join(p.dir, s)
}

// expand replaces $NAME and ${NAME} with environment variables; $$ is a $.
// A variable that is not set is a problem; in a secret field it is named only
// when written ${NAME}, since a bare $ there may be part of the secret.
func (p *parser) expand(s string, line int, label string, secret bool) (string, bool) {
	if !strings.Contains(s, "$") {
		return s, true
	}
	missing := ""
	out := os.Expand(s, func(name string) string {
		if name == "$" {
			return "$"
		}
		v, ok := os.LookupEnv(name)
		if !ok && missing == "" {
			missing = name
		}
		return v
	})
	switch {
	case missing == "":
		if secret {
			p.addSecret(out)
		}
		return out, true
	case secret && !strings.Contains(s, "${"+missing+"}"):
		p.errorf(line, "%s refers to an environment variable that is not set (write ${NAME} to see its name, $$ for a literal $)", label)
	case !showable(missing):
		p.errorf(line, "%s refers to an environment variable that is not set", label)
	default:
		p.errorf(line, "%s: environment variable %s is not set", label, missing)
	}
	return "", false
}

// deref follows aliases to the node they stand for.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

var fieldName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,39}$`)

// showable reports whether a name from the file may be shown in a message:
// it has the shape of a field or variable name, not of a key ("sk-…").
func showable(name string) bool {
	return fieldName.MatchString(name) && !strings.Contains(strings.ToLower(name), "sk-")
}

func showName(name string) string {
	if showable(name) {
		return strconv.Quote(name)
	}
	return "a field"
}

// closest returns the known name within two edits of name, if any.
func closest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var (
	yamlLine   = regexp.MustCompile(`^yaml: line (\d+): `)
	yamlQuoted = regexp.MustCompile("'[^']{4,}'|`[^`]{4,}`|\"[^\"]{4,}\"")
)

// yamlError turns a YAML syntax error into an Error at yaml's line, with any
// quoted text longer than a few characters (an anchor name, which could be
// anything) left out; "'-' indicator" stays.
func yamlError(name string, err error) error {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	msg = yamlQuoted.ReplaceAllString(msg, "…")
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return &Error{File: name, Line: line, Msg: "yaml: " + msg}
}
