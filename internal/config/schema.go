package config

import (
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
)

// This file is the schema: the fields of each section and what each accepts.

var topFields = []string{"authorization", "timeout", "stream_timeout", "dbtype", "dbaddr",
	"listen", "address", "admin_token", "keys_file", "checker", "upstreams", "max_body", "records", "notify",
	"lb_policy", "hostname", "cors", "retry_time", "idle_timeout", "body_idle_timeout", "body_memory", "max_connections"}

func (p *parser) top(c *Config, m *yaml.Node) {
	var keysFileLine int
	var upstreams *yaml.Node
	var listenField string
	for _, f := range p.fields(m, "") {
		switch f.name {
		case "authorization":
			c.Authorization = p.tokens(f)
		case "timeout":
			c.Timeout = p.duration(f)
		case "stream_timeout":
			c.StreamTimeout = p.duration(f)
		case "retry_time":
			c.RetryTime = p.duration(f)
		case "idle_timeout":
			c.IdleTimeout = p.durationOrOff(f)
		case "body_idle_timeout":
			c.BodyIdleTimeout = p.durationOrOff(f)
		case "body_memory":
			c.BodyMemory = p.size(f)
		case "max_connections":
			c.MaxConnections = p.count(f)
		case "dbtype":
			if s, ok := p.scalar(f, false); ok {
				switch s = strings.ToLower(strings.TrimSpace(s)); s {
				case "", "sqlite", "postgres", "none":
					c.DBType = s
				default:
					p.errorf(f.val.Line, "dbtype must be sqlite, postgres or none")
				}
			}
		case "dbaddr":
			s, _ := p.scalar(f, true)
			c.DBAddr = secret.New(s)
		case "max_body":
			c.MaxBody = p.size(f)
		case "lb_policy":
			if s, ok := p.scalar(f, false); ok {
				switch s = strings.ToLower(strings.TrimSpace(s)); s {
				case "", "order", "random":
					c.LBPolicy = s
				default:
					p.errorf(f.val.Line, "lb_policy must be order or random")
				}
			}
		case "hostname":
			if s, ok := p.scalar(f, false); ok && strings.TrimSpace(s) != "" {
				p.warnf(f.key.Line, "hostname is not used: keypool's records have no hostname column")
			}
		case "cors":
			c.NoCORS = !p.boolean(f)
		case "listen", "address":
			if listenField != "" {
				p.errorf(f.key.Line, "listen and address are the same setting; give one")
				continue
			}
			listenField = f.name
			if s, ok := p.scalar(f, false); ok && s != "" {
				if _, _, err := net.SplitHostPort(s); err != nil {
					p.errorf(f.val.Line, "%s must be host:port, such as 127.0.0.1:8080 or :8080", f.name)
				}
				c.Listen = s
			}
		case "admin_token":
			if s, ok := p.scalar(f, true); ok {
				c.AdminToken = secret.New(strings.TrimSpace(s))
			}
		case "keys_file":
			if s, ok := p.scalar(f, false); ok && s != "" {
				c.KeysFile = p.path(s)
				keysFileLine = f.val.Line
			}
		case "checker":
			p.checker(&c.Checker, f)
		case "records":
			p.records(&c.Records, f)
		case "notify":
			p.notify(&c.Notify, f)
		case "upstreams":
			upstreams = f.val
		default:
			p.unknown(f, "", topFields)
		}
	}
	if upstreams != nil {
		p.upstreams(c, upstreams)
	}
	if c.KeysFile != "" {
		if len(c.Upstream) > 0 {
			p.errorf(keysFileLine, "a top-level keys_file is for a config without upstreams; give each upstream its own keys_file")
		} else {
			c.Upstream = []Upstream{{Endpoint: DefaultEndpoint, KeysFile: c.KeysFile, Line: keysFileLine,
				label: "keys_file", keysFileLine: keysFileLine}}
		}
	}
}

var checkerFields = []string{"rate", "concurrency", "recheck", "wait_for_check"}

// section reports whether f is a mapping to read; a null one is not, and
// anything else is reported with example as what the section looks like.
func (p *parser) section(f field, example string) bool {
	switch f.val.Kind {
	case yaml.MappingNode:
		return true
	case yaml.ScalarNode:
		if f.val.Tag == "!!null" {
			return false
		}
	}
	p.errorf(f.val.Line, "%s must be a mapping of fields, such as %q", f.label, example)
	return false
}

func (p *parser) checker(c *Checker, f field) {
	if !p.section(f, "rate: 5") {
		return
	}
	for _, f := range p.fields(f.val, "checker") {
		switch f.name {
		case "rate":
			if s, ok := p.scalar(f, false); ok && s != "" {
				r, err := strconv.ParseFloat(s, 64)
				if err != nil || math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
					p.errorf(f.val.Line, "%s must be a number of checks per second, 0 or more", f.label)
					continue
				}
				c.Rate = r
			}
		case "concurrency":
			c.Concurrency = p.count(f)
		case "recheck":
			s, ok := p.scalar(f, false)
			if !ok {
				continue
			}
			switch t := strings.ToLower(strings.TrimSpace(s)); t {
			case "":
			case "off", "false", "never", "no":
				c.NoRecheck = true
			default:
				d, err := parseDuration(t)
				switch {
				case err != nil:
					p.errorf(f.val.Line, "%s %v, or off", f.label, err)
				case d == 0:
					c.NoRecheck = true
				default:
					c.Recheck = d
				}
			}
		case "wait_for_check":
			c.WaitForCheck = p.boolean(f)
		default:
			p.unknown(f, "checker", checkerFields)
		}
	}
}

var upstreamFields = []string{"sk", "keys", "keys_file", "endpoint", "name", "timeout",
	"stream_timeout", "idle_timeout", "allow", "deny", "authorization", "noauth", "type", "keep_header", "inherit_authorization"}

func (p *parser) upstreams(c *Config, n *yaml.Node) {
	switch n.Kind {
	case yaml.SequenceNode:
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return
		}
		fallthrough
	default:
		p.errorf(n.Line, "upstreams must be a list, each entry starting with \"- \"")
		return
	}
	names := map[string]int{} // upstream number by name
	for i, item := range n.Content {
		item = deref(item)
		where := "upstream " + strconv.Itoa(i+1)
		if !p.spend(item.Line) {
			return
		}
		if item.Kind != yaml.MappingNode {
			p.errorf(item.Line, "%s must be a mapping of fields, such as \"endpoint:\"", where)
			continue
		}
		u, skip := p.upstream(item, where)
		if skip {
			continue
		}
		if u.Name != "" {
			if first, dup := names[u.Name]; dup {
				p.errorf(u.Line, "%s: upstream %d has the same name", where, first)
			} else {
				names[u.Name] = i + 1
			}
		}
		c.Upstream = append(c.Upstream, u)
	}
}

// upstream reads one entry of upstreams. skip reports an entry of a type
// keypool does not serve yet, which is left out with a warning.
func (p *parser) upstream(item *yaml.Node, where string) (u Upstream, skip bool) {
	u = Upstream{Line: item.Line, label: where, Type: "openai"}
	var keys []keypool.Key
	skLine, keysLine := 0, 0 // where sk and keys were given
	emptyVar := ""           // a variable sk is written with that expanded to nothing
	for _, f := range p.fields(item, where) {
		switch f.name {
		case "sk":
			skLine = f.val.Line
			s, ok := p.scalar(f, true)
			if !ok {
				continue
			}
			if strings.TrimSpace(s) == "asis" {
				u.Auth = keypool.AuthCaller
				continue
			}
			if strings.TrimSpace(s) == "" && strings.Contains(f.val.Value, "$") {
				emptyVar = f.label
			}
			keys = append(keys, p.skKeys(f, s)...)
		case "keys":
			keysLine = f.val.Line
			keys = append(keys, p.listKeys(f)...)
		case "keys_file":
			if s, ok := p.scalar(f, false); ok && s != "" {
				u.KeysFile = p.path(s)
				u.keysFileLine = f.val.Line
			}
		case "endpoint":
			u.Endpoint = p.endpoint(f)
		case "name":
			s, _ := p.scalar(f, false)
			u.Name = strings.TrimSpace(s)
		case "timeout":
			u.Timeout = p.duration(f)
		case "stream_timeout":
			u.StreamTimeout = p.duration(f)
		case "idle_timeout":
			u.IdleTimeout = p.durationOrOff(f)
		case "allow":
			u.Allow = p.patterns(f)
		case "deny":
			u.Deny = p.patterns(f)
		case "authorization":
			u.Authorization = p.tokens(f)
		case "inherit_authorization":
			u.InheritAuthorization = p.boolean(f)
		case "noauth":
			u.NoAuth = p.boolean(f)
		case "keep_header":
			if p.boolean(f) {
				p.warnf(f.key.Line, "%s: keep_header is not used: keypool forwards the request headers the API reads, never the client's credentials", where)
			}
		case "type":
			u.Type = p.upstreamType(f)
		default:
			p.unknown(f, where, upstreamFields)
		}
	}
	if u.Type == "replicate" {
		p.warnf(item.Line, "%s: type replicate is not served yet; this upstream is skipped", where)
		return u, true
	}
	if u.Endpoint == "" {
		u.Endpoint = DefaultEndpoint
	}
	switch {
	case u.Auth == keypool.AuthCaller && (len(keys) > 0 || keysLine > 0 || u.KeysFile != ""):
		p.errorf(skLine, "%s: sk: asis passes each client's own key on; it cannot be given with keys or keys_file", where)
	case u.Auth == keypool.AuthCaller:
	case len(keys) == 0 && u.KeysFile == "" && emptyVar != "":
		p.errorf(skLine, "%s is empty once its environment variables are expanded; leave sk out for an upstream that needs no key", emptyVar)
	case len(keys) == 0 && u.KeysFile == "" && keysLine == 0:
		u.Auth = keypool.AuthNone
	case len(keys) == 0 && u.KeysFile == "":
		p.errorf(keysLine, "%s: keys holds no key; leave it out for an upstream that needs no key", where)
	}
	if u.InheritAuthorization && len(u.Authorization) == 0 {
		p.errorf(item.Line, "%s: inherit_authorization needs an authorization of the upstream's own", where)
	}
	u.Keys = dedupe(keys)
	return u, false
}

// skKeys reads sk: one key, or several comma-separated.
func (p *parser) skKeys(f field, s string) []keypool.Key {
	keys, err := keypool.ParseKeys(s)
	if err != nil {
		p.errorf(f.val.Line, "%s: %v", f.label, err)
		return nil
	}
	for _, k := range keys {
		if k.ID() == asisID {
			p.errorf(f.val.Line, "%s: asis must be alone: it passes each client's own key on", f.label)
			return nil
		}
	}
	return keys
}

// asisID is the ID of a key that reads "asis": openai-api-route's keyword, not a key.
var asisID = keypool.NewKey("asis").ID()

// listKeys reads keys: a list of keys, one per entry.
func (p *parser) listKeys(f field) []keypool.Key {
	items, lines, _ := p.list(f, true)
	var keys []keypool.Key
	for j, s := range items {
		ks, err := keypool.KeysFrom([]string{s})
		if err != nil {
			p.errorf(lines[j], "%s: entry %d has white space or a comma inside", f.label, j+1)
			continue
		}
		keys = append(keys, ks...)
	}
	return keys
}

// endpoint reads an upstream's URL; "" when missing. A bad one is reported
// without its value: a URL may carry a token.
func (p *parser) endpoint(f field) string {
	s, ok := p.scalar(f, false)
	if !ok {
		return "-" // reported already
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if e, err := url.Parse(s); err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
		p.errorf(f.val.Line, "%s must be an http:// or https:// URL with a host, such as https://api.openai.com/v1", f.label)
	}
	return s
}

// upstreamType reads type: openai, the only kind served yet, or replicate,
// which is skipped with a warning (openai-api-route's sample config has one).
func (p *parser) upstreamType(f field) string {
	s, ok := p.scalar(f, false)
	if !ok {
		return "openai"
	}
	switch t := strings.ToLower(strings.TrimSpace(s)); t {
	case "", "openai":
	case "replicate":
		return t
	case "azure":
		p.errorf(f.val.Line, "%s: azure upstreams are not supported yet", f.label)
	default:
		p.errorf(f.val.Line, "%s must be openai or replicate (azure is not supported yet)", f.label)
	}
	return "openai"
}

// tokens reads client tokens: a comma-separated string, or a list. Nothing
// written (null, "" or []) is no tokens; a value that holds no token once
// trimmed (" , ", or a variable that expanded to nothing) is an error, since
// an upstream without tokens of its own takes the top-level ones.
func (p *parser) tokens(f field) []secret.String {
	var raw []string
	if f.val.Kind == yaml.SequenceNode {
		items, _, ok := p.list(f, true)
		if !ok {
			return nil
		}
		raw = items
	} else {
		s, ok := p.scalar(f, true)
		if !ok {
			return nil
		}
		raw = strings.Split(s, ",")
		if f.val.Value == "" {
			raw = nil
		}
	}
	if len(raw) > 0 && strings.TrimSpace(strings.Join(raw, "")) == "" {
		p.errorf(f.val.Line, "%s holds no token once spaces and commas are trimmed", f.label)
		return nil
	}
	var out []secret.String
	seen := map[string]bool{}
	for _, t := range raw {
		t = strings.TrimSpace(t)
		if t == "" || seen[t] {
			continue
		}
		seen[t] = true
		out = append(out, secret.New(t))
	}
	return out
}

// patterns reads allow or deny: a list of model names or globs.
func (p *parser) patterns(f field) []string {
	items, lines, ok := p.list(f, false)
	if !ok {
		return nil
	}
	var out []string
	for i, s := range items {
		s = strings.TrimSpace(s)
		if s == "" {
			p.errorf(lines[i], "%s: entry %d is empty", f.label, i+1)
			continue
		}
		out = append(out, s)
	}
	return out
}
