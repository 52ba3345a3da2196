// Command keypool shows the keypool library at work. For now it has one
// command, demo; the OpenAI-compatible proxy (serve) comes next.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if len(os.Args) < 2 || os.Args[1] != "demo" {
		fmt.Fprintln(os.Stderr, "usage: keypool demo")
		os.Exit(2)
	}
	if err := runDemo(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "keypool:", err)
		os.Exit(1)
	}
}
