package notify

import (
	"fmt"
	"strings"
	"testing"

	"github.com/keypool/keypool/internal/secret"
)

// FuzzConfigSecrets checks that whatever a secret URL or header value is,
// New's error and the Config's printed form never repeat it.
func FuzzConfigSecrets(f *testing.F) {
	for _, s := range []string{"https://open.feishu.cn/open-apis/bot/v2/hook/abcdef-0123", "http://[::1/x-y-z-w",
		"ftp://h/secret-secret", "%zz%zz%zz%zz", "http://h/p?token=zzzzzzzzzz#frag", "http://u:pass-word@h/x"} {
		f.Add(s, "Bearer "+s)
	}
	f.Fuzz(func(t *testing.T, raw, header string) {
		cfg := Config{
			Feishu:  &Feishu{Webhook: secret.New(raw), Secret: secret.New(header)},
			Webhook: &Webhook{URL: secret.New(raw), Headers: map[string]secret.String{"Authorization": secret.New(header)}},
		}
		_, err := New(cfg)
		printed := fmt.Sprintf("%v %+v %#v %s %v", cfg, cfg, cfg, cfg.Webhook, *cfg.Feishu)
		for _, s := range []string{raw, header} {
			// A short secret cannot be told from the fixed text.
			if len(s) < 12 {
				continue
			}
			if err != nil && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q holds %q", err, s)
			}
			if strings.Contains(printed, s) {
				t.Fatalf("%q holds %q", printed, s)
			}
		}
	})
}
