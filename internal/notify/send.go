package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool/internal/secret"
)

// Notifier names, as Stats and logs show them.
const (
	NameMatrix  = "matrix"
	NameFeishu  = "feishu"
	NameWebhook = "webhook"
)

// sender delivers one message to one service. send must return an error
// that holds no secret (see sendError).
type sender interface {
	name() string
	send(ctx context.Context, c *http.Client, now time.Time, m message) error
}

// sendError is why a service missed or refused a message. It holds no URL
// and no secret: the service's answer is scrubbed before it gets here.
type sendError struct {
	status int    // the HTTP status; 0 when none arrived
	code   int    // Feishu's non-zero code
	detail string // scrubbed
}

func (e *sendError) Error() string {
	var parts []string
	if e.status != 0 {
		parts = append(parts, "status "+strconv.Itoa(e.status))
	}
	if e.code != 0 {
		parts = append(parts, "code "+strconv.Itoa(e.code))
	}
	if e.detail != "" {
		parts = append(parts, e.detail)
	}
	return "notify: " + strings.Join(parts, ": ")
}

// maxAnswer bounds the bytes of an answer that are read.
const maxAnswer = 64 << 10

// post sends body and returns the status and (up to maxAnswer bytes of)
// the answer. The body is always closed, so the connection is reused.
func post(ctx context.Context, c *http.Client, method, target string, header http.Header, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for name, vs := range header {
		req.Header[name] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	return resp.StatusCode, answer, nil
}

// transportError describes err, a failed request, without its URL: a
// *url.Error's text holds the URL, which may be a secret. scrub removes any
// secret the inner error might still repeat.
func transportError(err error, scrub *secret.Scrubber) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &sendError{detail: scrub.Scrub(ue.Op + ": " + ue.Err.Error())}
	}
	return &sendError{detail: scrub.Scrub(err.Error())}
}

// marshal encodes v as JSON without escaping <, > and &, which a human
// reads in the message, and without the trailing newline.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("notify: encoding a message: " + err.Error()) // only strings and ints: cannot happen
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func success(status int) bool { return status >= 200 && status < 300 }

// matrixSender posts to a room through the client-server API.
type matrixSender struct {
	base  string // the homeserver without a trailing slash
	room  string
	token secret.String
	txn   string // the transaction ID prefix, unique to this Notifier
	scrub *secret.Scrubber
}

func (s *matrixSender) name() string { return NameMatrix }

// target is the send endpoint for message m; its transaction ID is fixed by
// m, so that a retry of the same message is idempotent.
func (s *matrixSender) target(m message) string {
	txn := s.txn + "-" + strconv.FormatUint(m.seq, 10)
	return s.base + "/_matrix/client/v3/rooms/" + url.PathEscape(s.room) +
		"/send/m.room.message/" + url.PathEscape(txn)
}

func (s *matrixSender) send(ctx context.Context, c *http.Client, _ time.Time, m message) error {
	body := marshal(struct {
		MsgType string `json:"msgtype"`
		Body    string `json:"body"`
	}{"m.text", m.Text()})
	h := http.Header{"Authorization": {"Bearer " + s.token.Reveal()}}
	status, answer, err := post(ctx, c, http.MethodPut, s.target(m), h, body)
	if err != nil {
		return transportError(err, s.scrub)
	}
	if !success(status) {
		// The error code (M_FORBIDDEN, M_UNKNOWN_TOKEN…) says what is
		// wrong; the error text is the server's and is left out.
		var a struct {
			ErrCode string `json:"errcode"`
		}
		json.Unmarshal(answer, &a)
		return &sendError{status: status, detail: s.scrub.Scrub(clip(a.ErrCode, 64))}
	}
	return nil
}

// feishuSender posts to a Feishu custom bot.
type feishuSender struct {
	webhook secret.String
	secret  secret.String // zero: unsigned
	scrub   *secret.Scrubber
}

func (s *feishuSender) name() string { return NameFeishu }

// feishuSign is the signature of a message sent at timestamp: Feishu's
// HMAC-SHA256 keyed with timestamp + "\n" + secret over an empty message.
func feishuSign(timestamp, secret string) string {
	mac := hmac.New(sha256.New, []byte(timestamp+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func (s *feishuSender) send(ctx context.Context, c *http.Client, now time.Time, m message) error {
	type content struct {
		Text string `json:"text"`
	}
	msg := struct {
		MsgType   string  `json:"msg_type"`
		Content   content `json:"content"`
		Timestamp string  `json:"timestamp,omitempty"`
		Sign      string  `json:"sign,omitempty"`
	}{MsgType: "text", Content: content{m.Text()}}
	if !s.secret.IsZero() {
		msg.Timestamp = strconv.FormatInt(now.Unix(), 10)
		msg.Sign = feishuSign(msg.Timestamp, s.secret.Reveal())
	}
	status, answer, err := post(ctx, c, http.MethodPost, s.webhook.Reveal(), nil, marshal(msg))
	if err != nil {
		return transportError(err, s.scrub)
	}
	if !success(status) {
		return &sendError{status: status}
	}
	// Feishu answers 200 and says in the body whether it took the message:
	// {"code":0,"msg":"success"}, or in the old style {"StatusCode":0}.
	var a struct {
		Code          *int   `json:"code"`
		Msg           string `json:"msg"`
		StatusCode    *int   `json:"StatusCode"`
		StatusMessage string `json:"StatusMessage"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		return &sendError{status: status, detail: "answer is not JSON"}
	}
	switch {
	case a.Code != nil && *a.Code != 0:
		return &sendError{status: status, code: *a.Code, detail: s.scrub.Scrub(clip(a.Msg, 200))}
	case a.Code == nil && a.StatusCode != nil && *a.StatusCode != 0:
		return &sendError{status: status, code: *a.StatusCode, detail: s.scrub.Scrub(clip(a.StatusMessage, 200))}
	case a.Code == nil && a.StatusCode == nil:
		return &sendError{status: status, detail: "answer has no code"}
	}
	return nil
}

// webhookSender posts events as JSON to a URL.
type webhookSender struct {
	url     secret.String
	headers []webhookHeader
	scrub   *secret.Scrubber
}

type webhookHeader struct {
	name  string
	value secret.String
}

func (s *webhookSender) name() string { return NameWebhook }

// webhookPayload is what the webhook receives.
type webhookPayload struct {
	Event      string `json:"event"`
	Upstream   string `json:"upstream"`
	Key        string `json:"key,omitempty"`
	Reason     string `json:"reason"`
	Time       string `json:"time"` // RFC 3339 with nanoseconds, UTC
	Text       string `json:"text"`
	Suppressed int    `json:"suppressed"`
}

func (s *webhookSender) send(ctx context.Context, c *http.Client, _ time.Time, m message) error {
	body := marshal(webhookPayload{
		Event:      m.Kind,
		Upstream:   m.Upstream,
		Key:        string(m.Key),
		Reason:     m.Reason,
		Time:       m.Time.UTC().Format(time.RFC3339Nano),
		Text:       m.Text(),
		Suppressed: m.Suppressed,
	})
	h := make(http.Header, len(s.headers))
	for _, x := range s.headers {
		h.Set(x.name, x.value.Reveal())
	}
	status, _, err := post(ctx, c, http.MethodPost, s.url.Reveal(), h, body)
	if err != nil {
		return transportError(err, s.scrub)
	}
	if !success(status) {
		return &sendError{status: status}
	}
	return nil
}

// secretsOf lists the strings that must never be printed: the secrets
// themselves and the parts of secret URLs an error might repeat.
func secretsOf(c Config) []string {
	var out []string
	addURL := func(raw string) {
		out = append(out, raw)
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		out = append(out, u.Redacted())
		if p := u.EscapedPath(); len(p) > 1 {
			out = append(out, p, u.Path)
		}
		for _, seg := range strings.Split(u.Path, "/") {
			if len(seg) >= 8 {
				out = append(out, seg)
			}
		}
		if u.RawQuery != "" {
			out = append(out, u.RawQuery)
			for _, vs := range u.Query() {
				out = append(out, vs...)
			}
		}
		if u.User != nil {
			out = append(out, u.User.String())
		}
	}
	if m := c.Matrix; m != nil {
		out = append(out, m.Token.Reveal())
	}
	if f := c.Feishu; f != nil {
		addURL(f.Webhook.Reveal())
		out = append(out, f.Secret.Reveal())
	}
	if w := c.Webhook; w != nil {
		addURL(w.URL.Reveal())
		for _, h := range w.Headers {
			v := h.Reveal()
			out = append(out, v)
			// "Bearer t0ken": the token alone is a secret too.
			if _, tok, ok := strings.Cut(v, " "); ok && len(tok) >= 8 {
				out = append(out, tok)
			}
		}
	}
	return out
}
