package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

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
	return parse(data, name, dir, AllSections)
}

// parse is Parse of the fields in sections.
func parse(data []byte, name, dir string, sections Sections) (*Config, error) {
	p := &parser{name: name, dir: dir, budget: nodeBudget, sections: sections}
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
	sections  Sections // the sections read; the other fields are passed over
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
	"dbaddr": true, "store": true, "token": true, "webhook": true, "secret": true, "url": true, "headers": true}

// collectSecrets remembers every value under a secret field, at any depth and
// before any checks, as written and with its environment variables
// expanded, so that no message can echo one, even from a field whose
// parsing stopped early.
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
				if out, missing := expandEnv(n.Value); missing == "" && out != n.Value {
					p.addSecret(out)
				}
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

// spend takes n nodes from the budget and reports false, once, when it runs out.
func (p *parser) spend(line, n int) bool {
	if p.budget < 0 {
		return false
	}
	p.budget -= n
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
	prefix := ""
	if where != "" {
		prefix = where + ": "
	}
	// m first, then the mappings it merges, each once.
	for queue := []*yaml.Node{m}; len(queue) > 0; queue = queue[1:] {
		v, own := queue[0], queue[0] == m
		if visited[v] {
			continue
		}
		visited[v] = true
		switch v.Kind {
		case yaml.MappingNode:
		case yaml.SequenceNode:
			for _, x := range v.Content {
				queue = append(queue, deref(x))
			}
			continue
		default:
			p.errorf(v.Line, "%s<< must merge a mapping or a list of mappings", prefix)
			continue
		}
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, x := v.Content[i], deref(v.Content[i+1])
			if !p.spend(k.Line, 1) {
				return out
			}
			switch line, dup := seen[k.Value]; {
			case k.Kind != yaml.ScalarNode:
				if own {
					p.errorf(k.Line, "%sa field name must be a plain word", prefix)
				}
			case k.Tag == "!!merge":
				queue = append(queue, x)
			case dup && own:
				p.errorf(k.Line, "%s%s is given twice (first at line %d)", prefix, showName(k.Value), line)
			case !dup:
				seen[k.Value] = k.Line
				out = append(out, field{name: k.Value, key: k, val: x, label: prefix + k.Value})
			}
		}
	}
	return out
}

// A schema lists the fields of a mapping, each with what reads its value: a
// yaml.Unmarshaler (the value's type, see values.go), or a func(field) for
// a field that needs more than its value (a section, a warning). Its order
// is the order in which suggestions for a misspelt field are tried.
type schema []struct {
	name string
	into any
}

// find returns what reads the field name, or nil.
func (s schema) find(name string) any {
	for _, e := range s {
		if e.name == name {
			return e.into
		}
	}
	return nil
}

// decode reads the fields of mapping m with s. A field that s lacks is
// reported with the closest name it has. where names m in messages ("" for
// the top level, "upstream 2", "checker"). It returns the line of each
// field's value, by name.
//
// Mappings are walked here, not by yaml.v3's struct decoding: yaml.v3 stops
// at the first error an UnmarshalYAML returns, where a user should see
// every problem at once; its messages for unknown and repeated fields quote
// the names, which may be secrets; and the Config's fields are Go's and the
// library's types (time.Duration, keypool.Key), so struct decoding would
// need a copy of every section in types that read YAML, and code to convert
// each field back. A schema points each value's type at its Config field
// instead: (*duration)(&c.Timeout).
func (p *parser) decode(m *yaml.Node, where string, s schema) map[string]int {
	lines := map[string]int{}
	for _, f := range p.fields(m, where) {
		switch into := s.find(f.name).(type) {
		case yaml.Unmarshaler:
			p.read(f, into)
		case func(field):
			into(f)
		default:
			p.unknown(f, where, s)
			continue
		}
		lines[f.name] = f.val.Line
	}
	return lines
}

// read reads f's value with u and reports what is wrong with it. It
// reports whether the value was good.
func (p *parser) read(f field, u yaml.Unmarshaler) bool {
	if f.val.Kind == yaml.SequenceNode && !p.spend(f.val.Line, len(f.val.Content)) {
		return false
	}
	return p.report(f, u.UnmarshalYAML(f.val))
}

// report reports each problem err holds (see values.go) at its line after
// f's label, and whether there was none.
func (p *parser) report(f field, err error) bool {
	errs := []error{err}
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		errs = multi.Unwrap()
	}
	for _, e := range errs {
		if e == nil {
			continue
		}
		pr := &problem{f.val.Line, ": " + e.Error()}
		errors.As(e, &pr)
		p.errorf(pr.line, "%s%s", f.label, pr.msg)
	}
	return err == nil
}

// section reads f's value, a mapping of fields, with s (see decode). A
// null value is an empty section; anything else is reported, with example
// as what the section looks like. It reports whether f held a mapping.
func (p *parser) section(f field, example string, s schema) bool {
	switch {
	case f.val.Kind == yaml.MappingNode:
		p.decode(f.val, f.label, s)
		return true
	case f.val.Kind != yaml.ScalarNode || f.val.Tag != "!!null":
		p.errorf(f.val.Line, "%s must be a mapping of fields, such as %q", f.label, example)
	}
	return false
}

// unknown reports a field that is not in the schema.
func (p *parser) unknown(f field, where string, known schema) {
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

// closest returns the known name within two edits of name, if any; the
// first in known of those closest.
func closest(name string, known schema) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), k.name); d < bestD {
			best, bestD = k.name, d
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
