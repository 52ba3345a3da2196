package config

import (
	"net/url"
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

var recordsFields = []string{"bodies", "body_limit", "queue", "queue_bytes", "batch", "keep"}

func (p *parser) records(r *Records, f field) {
	if !p.section(f, "bodies: false") {
		return
	}
	for _, f := range p.fields(f.val, "records") {
		switch f.name {
		case "bodies":
			r.Bodies = p.boolean(f)
		case "body_limit":
			r.BodyLimit = p.size(f)
		case "queue":
			r.Queue = p.count(f)
		case "queue_bytes":
			r.QueueBytes = p.size(f)
		case "batch":
			r.Batch = p.count(f)
		case "keep":
			r.Keep = p.duration(f)
		default:
			p.unknown(f, "records", recordsFields)
		}
	}
}

var notifyFields = []string{"matrix", "feishu", "webhook", "dedup", "burst", "every", "failures", "failure_window"}

func (p *parser) notify(n *Notify, f field) {
	if !p.section(f, "feishu:") {
		return
	}
	for _, f := range p.fields(f.val, "notify") {
		switch f.name {
		case "matrix":
			n.Matrix = p.matrix(f)
		case "feishu":
			n.Feishu = p.feishu(f)
		case "webhook":
			n.Webhook = p.webhook(f)
		case "dedup":
			n.Dedup = p.duration(f)
		case "every":
			n.Every = p.duration(f)
		case "failure_window":
			n.FailureWindow = p.duration(f)
		case "burst":
			n.Burst = p.count(f)
		case "failures":
			n.Failures = p.count(f)
		default:
			p.unknown(f, "notify", notifyFields)
		}
	}
}

var matrixFields = []string{"homeserver", "room", "token"}

func (p *parser) matrix(f field) *Matrix {
	if !p.section(f, "homeserver: https://matrix.example.org") {
		return nil
	}
	m := &Matrix{}
	for _, g := range p.fields(f.val, "notify: matrix") {
		switch g.name {
		case "homeserver":
			m.Homeserver, _ = p.scalar(g, false)
			m.Homeserver = strings.TrimSpace(m.Homeserver)
			p.httpURL(g, m.Homeserver, false)
		case "room":
			m.Room, _ = p.scalar(g, false)
			m.Room = strings.TrimSpace(m.Room)
		case "token":
			s, _ := p.scalar(g, true)
			m.Token = secret.New(strings.TrimSpace(s))
		default:
			p.unknown(g, "notify: matrix", matrixFields)
		}
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

var feishuFields = []string{"webhook", "secret"}

func (p *parser) feishu(f field) *Feishu {
	if !p.section(f, "webhook: https://open.feishu.cn/open-apis/bot/v2/hook/…") {
		return nil
	}
	fs := &Feishu{}
	for _, g := range p.fields(f.val, "notify: feishu") {
		switch g.name {
		case "webhook":
			s, _ := p.scalar(g, true)
			fs.Webhook = secret.New(strings.TrimSpace(s))
			p.httpURL(g, fs.Webhook.Reveal(), true)
		case "secret":
			s, _ := p.scalar(g, true)
			fs.Secret = secret.New(strings.TrimSpace(s))
		default:
			p.unknown(g, "notify: feishu", feishuFields)
		}
	}
	if fs.Webhook.IsZero() {
		p.errorf(f.key.Line, "notify: feishu needs a webhook")
	}
	return fs
}

var webhookFields = []string{"url", "headers"}

func (p *parser) webhook(f field) *Webhook {
	if !p.section(f, "url: https://hooks.example.org/keypool") {
		return nil
	}
	w := &Webhook{}
	for _, g := range p.fields(f.val, "notify: webhook") {
		switch g.name {
		case "url":
			s, _ := p.scalar(g, true)
			w.URL = secret.New(strings.TrimSpace(s))
			p.httpURL(g, w.URL.Reveal(), true)
		case "headers":
			if g.val.Kind != yaml.MappingNode {
				if g.val.Tag != "!!null" {
					p.errorf(g.val.Line, "%s must be a mapping of header names to values", g.label)
				}
				continue
			}
			w.Headers = map[string]secret.String{}
			for _, h := range p.fields(g.val, "notify: webhook: headers") {
				if !notify.ValidHeaderName(h.name) {
					p.errorf(h.key.Line, "%s: not a header name", g.label)
					continue
				}
				s, _ := p.scalar(h, true)
				if strings.ContainsAny(s, "\r\n") {
					p.errorf(h.val.Line, "%s: a header value may not span lines", g.label)
					continue
				}
				w.Headers[h.name] = secret.New(s)
			}
		default:
			p.unknown(g, "notify: webhook", webhookFields)
		}
	}
	if w.URL.IsZero() {
		p.errorf(f.key.Line, "notify: webhook needs a url")
	}
	return w
}

// httpURL reports s unless it is an absolute http or https URL; a secret one
// is not quoted.
func (p *parser) httpURL(f field, s string, secret bool) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return
	}
	if secret {
		p.errorf(f.val.Line, "%s must be an http or https URL", f.label)
		return
	}
	p.errorf(f.val.Line, "%s must be an http or https URL, not %q", f.label, s)
}
