// Command fakeopenai serves the in-process fake of api.openai.com over HTTP,
// so programs (the examples, a CLI smoke test) can run against it with no
// network and no real key.
//
// It prints its base URL (ending in /v1) as the first line of stdout and serves
// until SIGINT or SIGTERM. Its pool is fixed and mixed:
//
//	sk-example-revoked   answers 401 invalid_api_key
//	sk-example-limited   2 requests per minute, then 429 rate_limit_exceeded
//	sk-example-ok        serves everything
//
// plus any keys given with -keys (comma-separated), which serve everything.
//
//	go run ./internal/fakeopenai/cmd/fakeopenai -listen 127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/keypool/keypool/internal/fakeopenai"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakeopenai:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	extra := flag.String("keys", "", "comma-separated extra keys that serve everything")
	flag.Parse()

	keys := []fakeopenai.Key{
		{Secret: "sk-example-revoked", Behavior: fakeopenai.Revoked},
		{Secret: "sk-example-limited", RPM: 2},
		{Secret: "sk-example-ok"},
	}
	for s := range strings.SplitSeq(*extra, ",") {
		if s = strings.TrimSpace(s); s != "" {
			keys = append(keys, fakeopenai.Key{Secret: s})
		}
	}
	fake := fakeopenai.New(fakeopenai.Config{}, keys...)
	defer fake.Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("http://%s/v1\n", ln.Addr())
	os.Stdout.Sync()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	fake.Close() // ends hanging streams so Shutdown does not wait on them
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
