package config

import (
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keypool/keypool/internal/notify"
	"github.com/keypool/keypool/internal/secret"
)

// Records is the records section: what request records keep. Where they go
// is dbtype and dbaddr.
//
//	records:
//	  bodies: false      # true: keep request and response bodies
//	  body_limit: 64KiB  # each body cut at this size
//	  queue: 10000       # records waiting for the store; beyond, dropped
//	  queue_bytes: 64MiB # their memory, bodies included; beyond, dropped
//	  batch: 256         # records per insert
//	  keep: 720h         # delete records older than this (0: keep all)
//
// Zero fields mean the records package's defaults.
type Records struct {
	Bodies     bool
	BodyLimit  int64
	Queue      int
	QueueBytes int64
	Batch      int
	Keep       time.Duration
}

// Notify is the notify section: where events worth a human go (a key revoked
// or out of quota, every key of an upstream unusable, an upstream failing
// repeatedly). Tokens, webhook URLs and header values are secrets.
//
//	notify:
//	  matrix:
//	    homeserver: https://matrix.example.org
//	    room: "!abc:example.org"
//	    token: ${MATRIX_TOKEN}
//	  feishu:
//	    webhook: https://open.feishu.cn/open-apis/bot/v2/hook/…
//	    secret: ${FEISHU_SECRET}    # optional: the bot's signing secret
//	  webhook:
//	    url: https://hooks.example.org/keypool
//	    headers: {X-Token: ${HOOK_TOKEN}}
//	  dedup: 10m          # the same event again within this: not sent
//	  burst: 10           # messages at once, then
//	  every: 1m           # one more per this
//	  failures: 5         # failed attempts of one upstream…
//	  failure_window: 1m  # …within this make "upstream failing"
type Notify struct {
	Matrix  *Matrix
	Feishu  *Feishu
	Webhook *Webhook

	Dedup, Every, FailureWindow time.Duration
	Burst, Failures             int
}

// Matrix is a Matrix room to notify.
type Matrix struct {
	Homeserver string
	Room       string
	Token      secret.String
}

// Feishu is a Feishu (Lark) custom bot to notify.
type Feishu struct {
	Webhook secret.String
	Secret  secret.String
}

// Webhook is a URL that gets every event as JSON.
type Webhook struct {
	URL     secret.String
	Headers map[string]secret.String
}

func (p *parser) records(r *Records, f field) {
	p.section(f, "bodies: false", schema{
		{"bodies", (*boolean)(&r.Bodies)},
		{"body_limit", (*size)(&r.BodyLimit)},
		{"queue", (*count)(&r.Queue)},
		{"queue_bytes", (*size)(&r.QueueBytes)},
		{"batch", (*count)(&r.Batch)},
		{"keep", (*duration)(&r.Keep)},
	})
}

func (p *parser) notify(n *Notify, f field) {
	p.section(f, "feishu:", schema{
		{"matrix", func(f field) { n.Matrix = p.matrix(f) }},
		{"feishu", func(f field) { n.Feishu = p.feishu(f) }},
		{"webhook", func(f field) { n.Webhook = p.webhook(f) }},
		{"dedup", (*duration)(&n.Dedup)},
		{"burst", (*count)(&n.Burst)},
		{"every", (*duration)(&n.Every)},
		{"failures", (*count)(&n.Failures)},
		{"failure_window", (*duration)(&n.FailureWindow)},
	})
}

func (p *parser) matrix(f field) *Matrix {
	m := &Matrix{}
	if !p.section(f, "homeserver: https://matrix.example.org", schema{
		{"homeserver", (*httpURL)(&m.Homeserver)},
		{"room", (*text)(&m.Room)},
		{"token", (*secretText)(&m.Token)},
	}) {
		return nil
	}
	switch {
	case m.Homeserver == "":
		p.errorf(f.key.Line, "notify: matrix needs a homeserver")
	case m.Room == "":
		p.errorf(f.key.Line, "notify: matrix needs a room (its ID, such as \"!abc:example.org\")")
	case m.Token.IsZero():
		p.errorf(f.key.Line, "notify: matrix needs a token (the bot user's access token)")
	}
	return m
}

func (p *parser) feishu(f field) *Feishu {
	fs := &Feishu{}
	if !p.section(f, "webhook: https://open.feishu.cn/open-apis/bot/v2/hook/…", schema{
		{"webhook", (*secretURL)(&fs.Webhook)},
		{"secret", (*secretText)(&fs.Secret)},
	}) {
		return nil
	}
	if fs.Webhook.IsZero() {
		p.errorf(f.key.Line, "notify: feishu needs a webhook")
	}
	return fs
}

func (p *parser) webhook(f field) *Webhook {
	w := &Webhook{}
	if !p.section(f, "url: https://hooks.example.org/keypool", schema{
		{"url", (*secretURL)(&w.URL)},
		{"headers", func(g field) { w.Headers = p.headers(g) }},
	}) {
		return nil
	}
	if w.URL.IsZero() {
		p.errorf(f.key.Line, "notify: webhook needs a url")
	}
	return w
}

// headers reads the webhook's headers: a mapping of header names to values,
// which are secrets.
func (p *parser) headers(f field) map[string]secret.String {
	if f.val.Kind != yaml.MappingNode {
		if f.val.Tag != "!!null" {
			p.errorf(f.val.Line, "%s must be a mapping of header names to values", f.label)
		}
		return nil
	}
	h := map[string]secret.String{}
	for _, g := range p.fields(f.val, f.label) {
		s, err := scalarOf(g.val, true)
		switch {
		case !notify.ValidHeaderName(g.name):
			p.errorf(g.key.Line, "%s: not a header name", f.label)
		case !p.report(g, err):
		case strings.ContainsAny(s, "\r\n"):
			p.errorf(g.val.Line, "%s: a header value may not span lines", f.label)
		default:
			h[g.name] = secretOf(s)
		}
	}
	return h
}
