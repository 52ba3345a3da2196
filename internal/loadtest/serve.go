package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
	"github.com/keypool/keypool/internal/secret"
)

// servedProxy is the keypool proxy as keypool serve wires it (app.New: the
// metrics, the key checker, and the key states in a store), on a 127.0.0.1
// listener of its own, with a client of its own. The Redis side and its
// memory twin are both built this way, so that what differs between them
// is the store alone, and whatever the composition root wires through the
// store (key states now, shared budgets next) is measured without a
// change here.
type servedProxy struct {
	srv    *loopServer
	client *http.Client
	app    *app.App
	// stop ends the app's Run (its shutdown drains the store) and closes
	// the listener; every call after the first returns the first one's
	// error.
	stop func() error
}

// startServed starts the keypool proxy as serve wires it, over upstreamURL
// (the loopback upstream's /v1) with upstreamKeys; store is a Redis URL
// (redis://HOST:PORT/DB), or "" for the memory store. Records are off: this
// side is about the store. conns is how many idle connections its client
// keeps.
func startServed(upstreamURL, store string, conns int) (*servedProxy, error) {
	keys, err := keypool.ParseKeys(upstreamKeys)
	if err != nil {
		return nil, err
	}
	cfg := &config.Config{
		Authorization: []secret.String{secret.New(clientToken)},
		Upstream:      []config.Upstream{{Endpoint: upstreamURL, Keys: keys}},
		DBType:        "none",
	}
	if err := app.SetStateStore(cfg, store); err != nil {
		return nil, err
	}
	a, err := app.New(cfg, app.Options{})
	if err != nil {
		return nil, fmt.Errorf("loadtest: the served proxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx, nil) }()
	p := &servedProxy{app: a, client: &http.Client{Transport: newHTTPTransport(conns)}}
	p.stop = sync.OnceValue(func() error {
		p.client.CloseIdleConnections()
		if p.srv != nil {
			p.srv.srv.Close()
		}
		cancel()
		return <-ran
	})
	if p.srv, err = listen(a.Handler()); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}
