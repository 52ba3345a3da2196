// Command loadtest drives the keypool proxy and a bare httputil.ReverseProxy
// against the same fast loopback upstream, in one run with the same request
// mix, and prints throughput, p50/p99 latency and streaming time-to-first-byte
// for both, with the ratios keypool/bare. Everything listens on 127.0.0.1.
//
//	go run ./internal/loadtest -n 20000 -c 32 -stream-ratio 0.3
//
// With -records it compares keypool with request records in SQLite against
// keypool with records off instead.
//
// With -redis URL it compares keypool as serve wires it with its store in
// that Redis (store: redis://HOST:PORT/DB) against the same with the memory
// store instead; the run writes keypool's keys there, so give it a scratch
// database:
//
//	go run ./internal/loadtest -redis redis://127.0.0.1:6379/15
//
// With -goodput it says how to run the goodput harness (Goodput), which
// measures how much of the upstream's rate-limit capacity the pool serves:
// it runs in fake time under testing/synctest, which only a test can enter.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"
)

func main() {
	var cfg Config
	flag.IntVar(&cfg.N, "n", 20000, "requests per proxy")
	flag.IntVar(&cfg.Concurrency, "c", 32, "concurrent clients per proxy")
	flag.Float64Var(&cfg.StreamRatio, "stream-ratio", 0.3, "share of streaming requests (0…1)")
	flag.DurationVar(&cfg.Duration, "duration", 2*time.Minute, "cap on the whole run (0 = none)")
	flag.IntVar(&cfg.Rounds, "rounds", 4, "alternating rounds per proxy")
	flag.BoolVar(&cfg.Records, "records", false, "compare keypool with request records in SQLite against keypool with records off")
	flag.StringVar(&cfg.Redis, "redis", "", "compare keypool serve with its store in this Redis (redis://HOST:PORT/DB, a scratch database) against the memory store")
	goodput := flag.Bool("goodput", false, "say how to run the goodput harness (rate-limit capacity served, in fake time)")
	flag.Parse()
	if *goodput {
		// synctest.Test needs a *testing.T, and Go 1.26 has no other way
		// into a bubble (synctest.Run is gone), so the harness runs as a test.
		fmt.Fprintln(os.Stderr, "the goodput harness runs in fake time under testing/synctest, which only a test can enter; run:\n\n"+
			"\tgo test -run TestGoodput -v ./internal/loadtest")
		os.Exit(2)
	}
	if cfg.Records {
		dir, err := os.MkdirTemp("", "keypool-loadtest-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cfg.RecordsDir = dir
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	_, err := run(ctx, cfg, os.Stdout)
	if cfg.RecordsDir != "" {
		os.RemoveAll(cfg.RecordsDir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
