package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// Secrets of the tests.
const (
	keyRevoked  = "sk-e2e-revoked-aaaaaaaaaaaaaaaa"
	keyOK       = "sk-e2e-ok-bbbbbbbbbbbbbbbbbbbbbb"
	keyTrial    = "sk-e2e-trial-cccccccccccccccccc"
	clientToken = "tok-e2e-client-dddddddddddddd"
)

// mixedPool is the fake's keys: one revoked, one ordinary, one trial. The
// revoked key is listed first so that the pool meets it before the others.
func mixedPool() []fakeopenai.Key {
	return []fakeopenai.Key{
		{Secret: keyRevoked, Behavior: fakeopenai.Revoked},
		{Secret: keyOK},
		{Secret: keyTrial, Trial: true},
	}
}

// secretsOf joins the secrets of keys in the OPENAI_KEY convention.
func secretsOf(keys []fakeopenai.Key) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.Secret
	}
	return strings.Join(s, ",")
}

// newTransport builds a keypool transport over the fake at upstream with keys.
func newTransport(t *testing.T, upstream string, keys []fakeopenai.Key) *keypool.Transport {
	t.Helper()
	tr, err := keypool.New(keypool.WithUpstream(upstream, secretsOf(keys)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// stack is the fake upstream and the keypool proxy in front of it.
type stack struct {
	fake   *fakeopenai.Server
	proxy  *httptest.Server // the proxy's handler on 127.0.0.1
	client *http.Client     // for the proxy
}

// newStack starts the fake with the mixed pool and the proxy, which accepts
// clientToken, over a keypool transport.
func newStack(t *testing.T) *stack {
	t.Helper()
	keys := mixedPool()
	fake, upstream := fakeopenai.NewTestServer(t, fakeopenai.Config{}, keys...)
	tr := newTransport(t, upstream, keys)
	srv, err := server.New(server.Options{
		Transport: tr,
		Tokens:    []secret.String{secret.New(clientToken)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	client := ts.Client()
	t.Cleanup(client.CloseIdleConnections)
	return &stack{fake: fake, proxy: ts, client: client}
}

// checkFailover asserts that the revoked key was tried exactly once (the
// pool learned from it and left it alone afterwards) and that the good keys
// served the rest.
func checkFailover(t *testing.T, fake *fakeopenai.Server) {
	t.Helper()
	recs := fake.Records()
	revoked, served := 0, 0
	for _, r := range recs {
		switch {
		case r.Key == keyRevoked:
			revoked++
			if r.Status != http.StatusUnauthorized {
				t.Errorf("revoked key answered %d, want 401", r.Status)
			}
		case r.Status == http.StatusOK:
			served++
		}
	}
	if revoked != 1 {
		t.Errorf("revoked key tried %d times, want exactly once; records: %+v", revoked, recs)
	}
	if served == 0 {
		t.Errorf("no request was served by a good key; records: %+v", recs)
	}
}
