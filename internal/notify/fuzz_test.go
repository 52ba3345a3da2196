package notify

import (
	"fmt"
	"strings"
	"testing"
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
			Feishu:  &Feishu{Webhook: raw, Secret: header},
			Webhook: &Webhook{URL: raw, Headers: map[string]string{"Authorization": header}},
		}
		_, err := New(cfg)
		printed := fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.Webhook)
		for _, secret := range []string{raw, header} {
			// scheme://host of a URL is shown by design; a short secret
			// cannot be told from the fixed text.
			if len(secret) < 12 || strings.Contains(showSecretURL(secret), secret) {
				continue
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q holds %q", err, secret)
			}
			if strings.Contains(printed, secret) {
				t.Fatalf("%q holds %q", printed, secret)
			}
		}
	})
}
