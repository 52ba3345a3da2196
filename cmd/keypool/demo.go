package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

func newDemoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Watch the transport fail over across a mixed pool, against a built-in fake API",
		Long: `demo starts a fake OpenAI API on 127.0.0.1 with a mixed pool (revoked, over
quota, trial, token-limited, flaky and paid keys), sends JSON and streaming
requests through the keypool transport, and shows which key served each, every
failover, and what the pool learned. It needs no key and no network, and exits
by itself.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), cmd.OutOrStdout())
		},
	}
}

// demoKeys is a mixed pool, as real pools are.
var demoKeys = []struct {
	name string
	key  fakeopenai.Key
}{
	{"revoked", fakeopenai.Key{Secret: "sk-demo-revoked", Behavior: fakeopenai.Revoked}},
	{"over-quota", fakeopenai.Key{Secret: "sk-demo-quota", Behavior: fakeopenai.OverQuota}},
	{"trial", fakeopenai.Key{Secret: "sk-demo-trial", Trial: true, RPM: 3, PerModel: true}},
	{"rate-limited", fakeopenai.Key{Secret: "sk-demo-small", TPM: 150, PerModel: true}},
	{"flaky", fakeopenai.Key{Secret: "sk-demo-flaky", Behavior: fakeopenai.Flaky, FailFirst: 1, FailEvery: 3, FailStatus: 503, PerModel: true}},
	{"paid", fakeopenai.Key{Secret: "sk-demo-paid", PerModel: true}},
}

// runDemo starts a fake OpenAI API on loopback, sends a mix of JSON and
// streaming requests through the keypool transport, and shows which key
// served each and what the pool learned. It needs no real key and exits by
// itself.
func runDemo(ctx context.Context, out io.Writer) error {
	var keys []fakeopenai.Key
	names := map[keypool.KeyID]string{}
	var secrets []string
	for _, k := range demoKeys {
		keys = append(keys, k.key)
		names[keypool.NewKey(k.key.Secret).ID()] = k.name
		secrets = append(secrets, k.key.Secret)
	}
	fake := fakeopenai.New(fakeopenai.Config{}, keys...)
	srv := httptest.NewServer(fake) // 127.0.0.1 only
	defer srv.Close()
	defer fake.Close()
	fmt.Fprintf(out, "fake OpenAI API on %s with %d keys\n\n", srv.URL, len(keys))

	t, err := keypool.New(
		keypool.WithUpstream(srv.URL+"/v1", strings.Join(secrets, ",")),
		keypool.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		keypool.WithMaxWait(0),
		keypool.WithObserver(keypool.ObserverFuncs{
			OnAttempt: func(e keypool.AttemptEvent) {
				if !e.Final {
					fmt.Fprintf(out, "    attempt %d: %-12s %d %s -> failing over\n", e.Attempt, names[e.Key], e.Status, e.Outcome)
				}
			},
			OnStateChange: func(e keypool.StateEvent) {
				fmt.Fprintf(out, "    key %-12s %s -> %s (%s)\n", names[e.Key], e.From, e.To, e.Reason)
			},
		}),
	)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: t}
	for i := 1; i <= 20; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		stream := i%3 == 0
		model := []string{"gpt-4o", "gpt-4o-mini", "o3"}[i%3]
		body := fmt.Sprintf(`{"model":%q,"stream":%v,"stream_options":{"include_usage":%v},"max_tokens":40,"messages":[{"role":"user","content":"request %d"}]}`, model, stream, stream, i)
		req, _ := http.NewRequestWithContext(ctx, "POST", "https://api.openai.com/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		fmt.Fprintf(out, "request %2d %-11s stream=%-5v\n", i, model, stream)
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintf(out, "    failed: %v\n", err)
			continue
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		served := "?"
		if recs := fake.Records(); len(recs) > 0 {
			served = names[keypool.NewKey(recs[len(recs)-1].Key).ID()]
		}
		fmt.Fprintf(out, "    %s from %s (%d bytes)\n", resp.Status, served, n)
	}

	fmt.Fprintln(out, "\nwhat the pool learned:")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tID\tSTATE\tTRIAL\tREQUESTS\tREMAINING\tREASON")
	for _, k := range t.Snapshot() {
		var reqs int64
		for _, u := range k.Usage {
			reqs += u.Requests
		}
		remaining := "-"
		for _, l := range k.Limits {
			if l.RemainingRequests >= 0 {
				remaining = fmt.Sprintf("%s:%d", l.Model, l.RemainingRequests)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\t%s\n", names[k.ID], k.ID, k.State, k.Trial, reqs, remaining, k.Reason)
	}
	return tw.Flush()
}
