package config_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool/internal/config"
)

func TestRecordsAndNotifySections(t *testing.T) {
	in := `dbtype: postgres
dbaddr: postgres://kp:pw-SECRET-0@127.0.0.1:5432/kp
records:
  bodies: yes
  body_limit: 8KiB
  queue: 500
  batch: 50
  keep: 720h
notify:
  matrix:
    homeserver: https://matrix.example.org
    room: "!room:example.org"
    token: mx-SECRET-1
  feishu:
    webhook: https://open.feishu.cn/open-apis/bot/v2/hook/fs-SECRET-2
    secret: fs-SECRET-3
  webhook:
    url: https://hooks.example.org/x?t=wh-SECRET-4
    headers: {X-Token: hd-SECRET-5}
  dedup: 5m
  burst: 3
  every: 30s
  failures: 7
  failure_window: 2m
`
	cfg, err := config.Parse([]byte(in), "c.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Records != (config.Records{Bodies: true, BodyLimit: 8 << 10, Queue: 500, Batch: 50, Keep: 720 * time.Hour}) {
		t.Errorf("records = %+v", cfg.Records)
	}
	n := cfg.Notify
	if n.Matrix == nil || n.Matrix.Homeserver != "https://matrix.example.org" || n.Matrix.Room != "!room:example.org" || n.Matrix.Token.Reveal() != "mx-SECRET-1" {
		t.Errorf("matrix = %+v", n.Matrix)
	}
	if n.Feishu == nil || !strings.HasSuffix(n.Feishu.Webhook.Reveal(), "fs-SECRET-2") || n.Feishu.Secret.Reveal() != "fs-SECRET-3" {
		t.Errorf("feishu wrong")
	}
	if n.Webhook == nil || !strings.HasSuffix(n.Webhook.URL.Reveal(), "wh-SECRET-4") || n.Webhook.Headers["X-Token"].Reveal() != "hd-SECRET-5" {
		t.Errorf("webhook wrong")
	}
	if n.Dedup != 5*time.Minute || n.Burst != 3 || n.Every != 30*time.Second || n.Failures != 7 || n.FailureWindow != 2*time.Minute {
		t.Errorf("notify = %+v", n)
	}
	if cfg.DBAddr.Reveal() != "postgres://kp:pw-SECRET-0@127.0.0.1:5432/kp" {
		t.Errorf("dbaddr = %q", cfg.DBAddr.Reveal())
	}
	js, _ := json.Marshal(cfg)
	for _, out := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg),
		fmt.Sprintf("%+v %+v %+v", *n.Matrix, *n.Feishu, *n.Webhook), string(js)} {
		if strings.Contains(out, "SECRET") {
			t.Errorf("a secret shows: %s", out)
		}
	}
}

func TestRecordsAndNotifyErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"records not a mapping", "records: yes\n", `c.yaml:1: records must be a mapping of fields`},
		{"unknown records field", "records:\n  bodes: true\n", `c.yaml:2: unknown field "bodes" in records (did you mean "bodies"?)`},
		{"bad body_limit", "records:\n  body_limit: lots\n", "c.yaml:2: records: body_limit must be a size in bytes"},
		{"bad queue", "records:\n  queue: -1\n", "c.yaml:2: records: queue must be a whole number"},
		{"unknown notify field", "notify:\n  slack: {}\n", `c.yaml:2: unknown field "slack" in notify`},
		{"matrix without room", "notify:\n  matrix:\n    homeserver: https://m.example\n    token: mx-SECRET\n", "c.yaml:2: notify: matrix needs a room"},
		{"matrix bad homeserver", "notify:\n  matrix:\n    homeserver: m.example\n    room: r\n    token: t\n", `c.yaml:3: notify: matrix: homeserver must be an http or https URL, not "m.example"`},
		{"feishu without webhook", "notify:\n  feishu:\n    secret: fs-SECRET\n", "c.yaml:2: notify: feishu needs a webhook"},
		{"feishu bad webhook", "notify:\n  feishu:\n    webhook: open.feishu.cn/hook/fs-SECRET\n", "c.yaml:3: notify: feishu: webhook must be an http or https URL"},
		{"webhook bad header", "notify:\n  webhook:\n    url: https://h.example/x\n    headers: {\"X Bad\": v-SECRET}\n", "c.yaml:4: notify: webhook: headers: not a header name"},
		{"webhook header newline", "notify:\n  webhook:\n    url: https://h.example/x\n    headers:\n      X-T: \"a\\nb-SECRET\"\n", "c.yaml:5: notify: webhook: headers: a header value may not span lines"},
		{"bad dedup", "notify:\n  dedup: often\n", "c.yaml:2: notify: dedup must be seconds"},
		{"notify not a mapping", "notify: [feishu]\n", `c.yaml:1: notify must be a mapping of fields, such as "feishu:"`},
		{"matrix not a mapping", "notify:\n  matrix: yes\n", `c.yaml:2: notify: matrix must be a mapping of fields`},
		{"matrix without homeserver", "notify:\n  matrix:\n    room: r\n    token: mx-SECRET\n", "c.yaml:2: notify: matrix needs a homeserver"},
		{"matrix without token", "notify:\n  matrix:\n    homeserver: https://m.example\n    room: r\n", "c.yaml:2: notify: matrix needs a token"},
		{"webhook without url", "notify:\n  webhook:\n    headers: {X-Token: hd-SECRET}\n", "c.yaml:2: notify: webhook needs a url"},
		{"webhook bad url", "notify:\n  webhook:\n    url: hooks.example/wh-SECRET\n", "c.yaml:3: notify: webhook: url must be an http or https URL"},
		{"webhook headers not a mapping", "notify:\n  webhook:\n    url: https://h.example/x\n    headers: [X-Token]\n", "c.yaml:4: notify: webhook: headers must be a mapping of header names to values"},
		{"webhook header not a value", "notify:\n  webhook:\n    url: https://h.example/x\n    headers:\n      X-Token: [hd-SECRET]\n", "c.yaml:5: notify: webhook: headers: X-Token must be a single value"},
		{"webhook header given twice", "notify:\n  webhook:\n    url: https://h.example/x\n    headers:\n      X-Token: a\n      X-Token: b\n", `c.yaml:6: notify: webhook: headers: "X-Token" is given twice (first at line 5)`},
		{"unknown matrix field", "notify:\n  matrix:\n    homeservr: https://m.example\n", `c.yaml:3: unknown field "homeservr" in notify: matrix (did you mean "homeserver"?)`},
		{"bad burst", "notify:\n  burst: lots\n", "c.yaml:2: notify: burst must be a whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.in), "c.yaml", "")
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error shows a secret: %q", err)
			}
		})
	}
}
