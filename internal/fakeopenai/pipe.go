package fakeopenai

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// PipeBaseURL is the base URL to use with the transport ServePipe returns.
const PipeBaseURL = "http://fake.openai.test/v1"

// ServePipe serves h over in-memory net.Pipe connections, with no sockets, so
// that tests can run under testing/synctest. The returned Transport dials
// every address to an http.Server serving h; use it with PipeBaseURL. The
// returned func closes the idle connections and the server, after which every
// goroutine ServePipe started ends, as synctest requires.
//
// Under synctest, call ServePipe (and New) inside the bubble.
func ServePipe(h http.Handler) (*http.Transport, func()) {
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	tr := &http.Transport{DialContext: l.dial}
	return tr, func() {
		tr.CloseIdleConnections()
		srv.Close()
	}
}

// pipeListener is a net.Listener whose connections come from dial.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

// dial hands the server end of a new pipe to Accept and returns the client end.
func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	case <-l.done:
		client.Close()
		server.Close()
		return nil, net.ErrClosed
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "fake.openai.test:80" }
