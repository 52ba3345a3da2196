package notify

import (
	"strconv"
	"strings"
	"time"

	"github.com/keypool/keypool"
)

// Event kinds.
const (
	KindKeyRevoked        = "key_revoked"        // a key went to keypool.StateRevoked
	KindKeyOverQuota      = "key_over_quota"     // a key went to keypool.StateOverQuota
	KindUpstreamDown      = "upstream_down"      // every key of an upstream is revoked, over quota or disabled
	KindUpstreamRecovered = "upstream_recovered" // an upstream that was down has a usable key again
	KindUpstreamFailing   = "upstream_failing"   // too many server errors from an upstream in a short time
)

// Event is one notification: what happened, where, and why.
type Event struct {
	Kind     string        // one of the Kind… constants
	Upstream string        // the upstream's name
	Key      keypool.KeyID // the key, for key events; "" for upstream events
	Reason   string        // the state change's reason, or a summary for upstream events
	Time     time.Time     // when the Notifier observed it, by Config.Now
	// Suppressed counts the events the rate limit held back since the last
	// message that went out.
	Suppressed int
}

// Text is the message a human reads, such as
// "keypool: key kp_0123456789abcdef on upstream main is revoked (invalid_api_key)".
func (e Event) Text() string {
	var b strings.Builder
	b.WriteString("keypool: ")
	switch e.Kind {
	case KindKeyRevoked:
		b.WriteString("key " + string(e.Key) + " on upstream " + e.Upstream + " is revoked")
	case KindKeyOverQuota:
		b.WriteString("key " + string(e.Key) + " on upstream " + e.Upstream + " is over quota")
	case KindUpstreamDown:
		b.WriteString("upstream " + e.Upstream + " is down: no usable key")
	case KindUpstreamRecovered:
		b.WriteString("upstream " + e.Upstream + " recovered")
	case KindUpstreamFailing:
		b.WriteString("upstream " + e.Upstream + " is failing")
	default:
		b.WriteString(e.Kind + " on upstream " + e.Upstream)
		if e.Key != "" {
			b.WriteString(" key " + string(e.Key))
		}
	}
	if e.Reason != "" {
		b.WriteString(" (" + e.Reason + ")")
	}
	if e.Suppressed > 0 {
		b.WriteString(" (" + strconv.Itoa(e.Suppressed) + " more suppressed)")
	}
	return b.String()
}
