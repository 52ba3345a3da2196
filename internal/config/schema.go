package config

import (
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/keypool/keypool"
)

// This file is the schema: the fields of each section and what each accepts.

func (p *parser) top(c *Config, m *yaml.Node) {
	var upstreams *yaml.Node // read after the rest: a top-level keys_file changes them
	cors := boolean(true)    // on unless the file turns it off
	listenGiven := false
	listen := func(f field) { // listen, or openai-api-route's address
		if listenGiven {
			p.errorf(f.key.Line, "listen and address are the same setting; give one")
			return
		}
		listenGiven = true
		p.read(f, (*hostPort)(&c.Listen))
	}
	lines := p.decode(m, "", p.only(schema{
		{"authorization", (*tokens)(&c.Authorization)},
		{"timeout", (*duration)(&c.Timeout)},
		{"stream_timeout", (*duration)(&c.StreamTimeout)},
		{"dbtype", choice{&c.DBType, []string{"sqlite", "postgres", "none"}}},
		{"dbaddr", (*rawSecret)(&c.DBAddr)},
		{"store", (*storeURL)(&c.Store)},
		{"listen", listen},
		{"address", listen},
		{"admin_token", (*secretText)(&c.AdminToken)},
		{"keys_file", filePath{&c.KeysFile, p.dir}},
		{"checker", func(f field) {
			p.section(f, "rate: 5", schema{
				{"rate", (*rate)(&c.Checker.Rate)},
				{"concurrency", (*count)(&c.Checker.Concurrency)},
				{"recheck", (*recheck)(&c.Checker)},
				{"wait_for_check", (*boolean)(&c.Checker.WaitForCheck)},
			})
		}},
		{"upstreams", func(f field) { upstreams = f.val }},
		{"max_body", (*size)(&c.MaxBody)},
		{"records", func(f field) { p.records(&c.Records, f) }},
		{"notify", func(f field) { p.notify(&c.Notify, f) }},
		{"lb_policy", choice{&c.LBPolicy, []string{"order", "random"}}},
		{"hostname", func(f field) {
			if s := text(""); p.read(f, &s) && s != "" {
				p.warnf(f.key.Line, "hostname is not used: keypool's records have no hostname column")
			}
		}},
		{"cors", &cors},
		{"retry_time", (*duration)(&c.RetryTime)},
		{"idle_timeout", (*durationOrOff)(&c.IdleTimeout)},
		{"body_idle_timeout", (*durationOrOff)(&c.BodyIdleTimeout)},
		{"body_memory", (*size)(&c.BodyMemory)},
		{"max_connections", (*count)(&c.MaxConnections)},
		{"log_level", choice{&c.LogLevel, []string{"debug", "info", "warn", "error"}}},
		{"log_format", choice{&c.LogFormat, []string{"text", "json"}}},
		{"access_log", (*boolean)(&c.AccessLog)},
	}, p.topLevel))
	c.NoCORS = !bool(cors)
	if upstreams != nil {
		p.upstreams(c, upstreams)
	}
	if c.KeysFile != "" {
		line := lines["keys_file"]
		if len(c.Upstream) > 0 {
			p.errorf(line, "a top-level keys_file is for a config without upstreams; give each upstream its own keys_file")
		} else {
			c.Upstream = []Upstream{{Endpoint: DefaultEndpoint, KeysFile: c.KeysFile, Line: line,
				label: "keys_file", keysFileLine: line}}
		}
	}
}

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
		if !p.spend(item.Line, 1) {
			return
		}
		if item.Kind != yaml.MappingNode {
			p.errorf(item.Line, "%s must be a mapping of fields, such as \"endpoint:\"", where)
			continue
		}
		u := p.upstream(item, where)
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

// upstream reads one entry of upstreams.
func (p *parser) upstream(item *yaml.Node, where string) Upstream {
	u := Upstream{Line: item.Line, label: where, Type: "openai"}
	var keys []keypool.Key
	sk := skKeys{keys: &keys, file: p.name}
	lines := p.decode(item, where, p.only(schema{
		{"sk", &sk},
		{"keys", keyList{&keys, p.name}},
		{"keys_file", filePath{&u.KeysFile, p.dir}},
		{"endpoint", (*endpoint)(&u.Endpoint)},
		{"name", (*text)(&u.Name)},
		{"timeout", (*duration)(&u.Timeout)},
		{"stream_timeout", (*duration)(&u.StreamTimeout)},
		{"idle_timeout", (*durationOrOff)(&u.IdleTimeout)},
		{"allow", (*patterns)(&u.Allow)},
		{"deny", (*patterns)(&u.Deny)},
		{"authorization", (*tokens)(&u.Authorization)},
		{"noauth", (*boolean)(&u.NoAuth)},
		{"type", (*upstreamType)(&u.Type)},
		{"deployments", (*deploymentMap)(&u.Deployments)},
		{"api_version", (*apiVersion)(&u.APIVersion)},
		{"keep_header", func(f field) {
			if on := boolean(false); p.read(f, &on) && bool(on) {
				p.warnf(f.key.Line, "%s: keep_header is not used: keypool forwards the request headers the API reads, never the client's credentials", where)
			}
		}},
		{"inherit_authorization", (*boolean)(&u.InheritAuthorization)},
	}, p.upstreamField))
	p.azure(&u, lines, where)
	if u.Endpoint == "" {
		u.Endpoint = DefaultEndpoint
		if u.Type == "replicate" {
			u.Endpoint = DefaultReplicateEndpoint
		}
	}
	if u.KeysFile != "" {
		u.keysFileLine = lines["keys_file"]
	}
	switch {
	case sk.asis && (len(keys) > 0 || lines["keys"] > 0 || u.KeysFile != ""):
		p.errorf(lines["sk"], "%s: sk: asis passes each client's own key on; it cannot be given with keys or keys_file", where)
	case sk.asis:
		u.Auth = keypool.AuthCaller
	case len(keys) == 0 && u.KeysFile == "" && sk.emptyVar:
		p.errorf(lines["sk"], "%s: sk is empty once its environment variables are expanded; leave sk out for an upstream that needs no key", where)
	case len(keys) == 0 && u.KeysFile == "" && lines["keys"] == 0:
		u.Auth = keypool.AuthNone
	case len(keys) == 0 && u.KeysFile == "":
		p.errorf(lines["keys"], "%s: keys holds no key; leave it out for an upstream that needs no key", where)
	}
	if u.InheritAuthorization && len(u.Authorization) == 0 {
		p.errorf(item.Line, "%s: inherit_authorization needs an authorization of the upstream's own", where)
	}
	u.Keys = dedupe(keys)
	return u
}

// azure checks the fields of Azure upstreams: an endpoint is required (the
// resource, https://NAME.openai.azure.com, or its /openai/v1), and
// deployments and api_version belong to Azure upstreams only.
func (p *parser) azure(u *Upstream, lines map[string]int, where string) {
	if u.Type != "azure" {
		for _, f := range []string{"deployments", "api_version"} {
			if lines[f] > 0 {
				p.errorf(lines[f], "%s: %s is for type: azure upstreams only", where, f)
			}
		}
		return
	}
	switch {
	case u.Endpoint == "":
		p.errorf(u.Line, "%s: type azure needs an endpoint: the resource, such as https://NAME.openai.azure.com", where)
	case strings.Contains(u.Endpoint, "/deployments"):
		p.errorf(lines["endpoint"], "%s: an azure endpoint is the resource (https://NAME.openai.azure.com), not a deployment's URL: map models to deployments with deployments", where)
	case strings.HasSuffix(strings.TrimRight(u.Endpoint, "/"), "/openai/v1") && u.APIVersion != "":
		p.warnf(lines["api_version"], "%s: api_version is not used: the /openai/v1 endpoint takes none", where)
	}
}
