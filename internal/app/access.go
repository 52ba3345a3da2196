package app

import (
	"log/slog"
	"net"
	"strings"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
)

// logAccess logs who may use what: the ID that records and logs show for
// each client token (never the token) with the upstreams it may use, the
// noauth upstreams, and the upstreams without keys of their own, so that an
// operator can check the rules and tell the clients of keypool records apart.
func logAccess(p *parts, logger *slog.Logger) {
	for _, c := range p.server.Clients() {
		logger.Info("client token", "id", c.ID, "upstreams", strings.Join(c.Upstreams, ","))
	}
	cfg := p.cfg
	names := p.transport.UpstreamNames()
	for i, u := range cfg.Upstream {
		switch {
		case u.NoAuth:
			logger.Info("upstream open to every client (noauth)", "upstream", names[i])
		case len(u.Authorization) == 0 && len(cfg.Authorization) == 0 && !openToAll(cfg):
			logger.Warn("no client may use this upstream: it has no authorization of its own, there is none at the top level, and it is not noauth",
				"upstream", names[i])
		}
		switch u.Auth {
		case keypool.AuthNone:
			logger.Info("upstream without a key: its requests carry no Authorization", "upstream", names[i])
		case keypool.AuthCaller:
			logger.Info("upstream with sk: asis: each client's own Authorization goes to it", "upstream", names[i])
		}
	}
}

// openToAll reports whether cfg leaves the proxy open to every client
// without anyone having said so: no token anywhere and no noauth upstream.
func openToAll(cfg *config.Config) bool {
	if len(cfg.Authorization) > 0 {
		return false
	}
	for _, u := range cfg.Upstream {
		if u.NoAuth || len(u.Authorization) > 0 {
			return false
		}
	}
	return true
}

// loopback reports whether addr is a loopback address, reachable only from
// this machine.
func loopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
