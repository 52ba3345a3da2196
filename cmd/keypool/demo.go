package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
	"github.com/keypool/keypool/internal/records"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
	"github.com/keypool/keypool/internal/status"
)

func newDemoCmd() *cobra.Command {
	var opts demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Watch the proxy fail over across a mixed pool, against a built-in fake API",
		Long: `demo starts a fake OpenAI API on 127.0.0.1 with a mixed pool (revoked, over
quota, trial, token-limited, flaky and paid keys) and the keypool proxy in front
of it, also on 127.0.0.1. It sends JSON and streaming chat requests over HTTP to
the proxy, as an SDK would, first to a cold pool, then after the key checker has
looked at every key; it shows which key served each request, every failover, and
the pool's state as it learns. It needs no key and no network, prints key IDs
only, and exits by itself.

With --serve it does not exit: it prints the URL of the proxy's status page,
and keeps the proxy and the fake API running, with a request every --every,
until interrupted (Ctrl-C), so that you can open the page and watch.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.every <= 0 {
				return usageErrorf("--every must be above 0, not %v", opts.every)
			}
			return runDemo(cmd.Context(), cmd.OutOrStdout(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.serve, "serve", false, "keep running, and print the status page's URL")
	cmd.Flags().DurationVar(&opts.every, "every", 2*time.Second, "with --serve, how often a request is sent")
	return cmd
}

// demoOptions are the demo's flags, and a hook for tests.
type demoOptions struct {
	serve bool          // keep serving, a request every every, until ctx ends
	every time.Duration // above 0 (the flag's default is 2 s)
	// serving, when set, is called with the status page's URL once the
	// demo serves it (with serve).
	serving func(url string)
}

// demoKeys is a mixed pool, as real pools are.
var demoKeys = []struct {
	name string
	key  fakeopenai.Key
}{
	{"revoked", fakeopenai.Key{Secret: "sk-demo-revoked", Behavior: fakeopenai.Revoked}},
	{"over-quota", fakeopenai.Key{Secret: "sk-demo-quota", Behavior: fakeopenai.OverQuota}},
	{"flaky", fakeopenai.Key{Secret: "sk-demo-flaky", Behavior: fakeopenai.Flaky, FailFirst: 1, FailEvery: 3, FailStatus: 503, PerModel: true}},
	{"trial", fakeopenai.Key{Secret: "sk-demo-trial", Trial: true, RPM: 3, PerModel: true}},
	{"rate-limited", fakeopenai.Key{Secret: "sk-demo-small", TPM: 150, PerModel: true}},
	{"paid", fakeopenai.Key{Secret: "sk-demo-paid", PerModel: true}},
}

const (
	// demoToken is the client token of the demo proxy. It is never printed.
	demoToken = "kp-demo-client-token"
	// demoColdRequests are sent before the checker starts, so that traffic
	// meets the revoked and over-quota keys the hard way.
	demoColdRequests = 4
	demoRequests     = 20
)

// syncWriter serializes writes: the transport's and the checker's observers
// print from their own goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// runDemo starts a fake OpenAI API and the keypool proxy on loopback, sends a
// mix of JSON and streaming requests to the proxy over HTTP, and shows which
// key served each and what the pool learned, from traffic and from the
// checker. It needs no real key and exits by itself.
func runDemo(ctx context.Context, w io.Writer, opts demoOptions) (err error) {
	out := &syncWriter{w: w}
	var keys []fakeopenai.Key
	names := map[keypool.KeyID]string{}
	var secrets []string
	for _, k := range demoKeys {
		keys = append(keys, k.key)
		names[keypool.NewKey(k.key.Secret).ID()] = k.name
		secrets = append(secrets, k.key.Secret)
	}
	nameOf := func(id keypool.KeyID) string {
		if n, ok := names[id]; ok {
			return n
		}
		return string(id)
	}

	// The fake API, on 127.0.0.1 only.
	fake := fakeopenai.New(fakeopenai.Config{}, keys...)
	upstream := httptest.NewServer(fake)
	defer upstream.Close()
	defer fake.Close() // runs first: releases any waiting handler
	fmt.Fprintf(out, "fake OpenAI API on %s with %d keys\n", upstream.URL, len(keys))

	// The status page watches the transport from its first request.
	var t *keypool.Transport
	var srv *server.Server
	page := status.New(status.Options{
		Keys:      func() []keypool.KeyInfo { return t.Snapshot() },
		Upstreams: func() []status.Upstream { return []status.Upstream{{Name: t.UpstreamNames()[0], Type: "openai"}} },
		InFlight:  func() int64 { return srv.InFlight() },
		Interval:  time.Second,
	})
	t, err = keypool.New(
		keypool.WithUpstream(upstream.URL+"/v1", strings.Join(secrets, ",")),
		keypool.WithObserver(page),
		keypool.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		keypool.WithMaxWait(0),
		keypool.WithObserver(keypool.ObserverFuncs{
			OnAttempt: func(e keypool.AttemptEvent) {
				if !e.Final {
					fmt.Fprintf(out, "    attempt %d: %-12s %d %s -> failing over\n", e.Attempt, nameOf(e.Key), e.Status, e.Outcome)
				}
			},
			OnStateChange: func(e keypool.StateEvent) {
				fmt.Fprintf(out, "    key %-12s %s -> %s (%s)\n", nameOf(e.Key), e.From, e.To, e.Reason)
			},
		}),
	)
	if err != nil {
		return err
	}
	defer t.CloseIdleConnections()

	// Request records, in an in-memory SQLite database.
	store, err := records.Open(records.TypeSQLite, secret.New(":memory:"))
	if err != nil {
		return err
	}
	defer store.Close()
	writer := records.NewWriter(store, records.WriterOptions{})
	writeCtx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	written := make(chan struct{})
	go func() {
		defer close(written)
		writer.Run(writeCtx)
	}()
	defer func() {
		stopWriter()
		<-written
	}()

	// The proxy, in front of the transport, on 127.0.0.1 only, with the
	// admin API and the status page (no admin token: loopback only).
	srv, err = server.New(server.Options{Transport: t, Tokens: []secret.String{secret.New(demoToken)}, Records: writer})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	proxy := httptest.NewUnstartedServer(mux)
	proxy.Config.ReadHeaderTimeout = 5 * time.Second
	proxy.Start()
	defer proxy.Close()
	fmt.Fprintf(out, "keypool proxy on %s (clients send a demo token)\n", proxy.URL)

	client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	send := func(i int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return demoRequest(ctx, out, client, proxy.URL, fake, nameOf, i)
	}

	fmt.Fprintf(out, "\ncold pool: nothing is known about the keys yet\n")
	for i := 1; i <= demoColdRequests; i++ {
		if err := send(i); err != nil {
			return err
		}
	}

	// The checker, in the background and at a fast pace; the first pass is
	// waited for, so that the table shows checked keys.
	checked := make(chan keypool.CheckResult, 64)
	checker, err := keypool.NewChecker(t,
		keypool.WithCheckRate(100),
		keypool.WithCheckConcurrency(len(keys)),
		keypool.WithCheckObserver(keypool.ObserverFuncs{OnChecked: func(r keypool.CheckResult) {
			select {
			case checked <- r:
			default:
			}
		}}),
	)
	if err != nil {
		return err
	}
	admin := server.NewAdmin(server.AdminOptions{Transport: t, Checker: checker, Status: page.Handler()})
	for _, path := range []string{"/admin/", "/readyz", "/status", "/status/"} {
		mux.Handle(path, admin)
	}
	checkCtx, stopChecker := context.WithCancel(ctx)
	checkerDone, pageDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(checkerDone)
		checker.Run(checkCtx)
	}()
	go func() {
		defer close(pageDone)
		page.Run(checkCtx)
	}()
	var stopOnce sync.Once
	shutdown := func() {
		stopOnce.Do(func() {
			stopChecker()
			<-checkerDone
			<-pageDone // its streams ended: the proxy's Close waits for every request
			client.CloseIdleConnections()
			proxy.Close()
			fake.Close()
			upstream.Close()
		})
	}
	defer shutdown()
	fmt.Fprintf(out, "\nchecker started: it spends no quota\n")
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for seen := 0; seen < len(t.Snapshot()); {
		select {
		case r := <-checked:
			seen++
			if r.Err != nil {
				fmt.Fprintf(out, "    checked %-12s not reachable\n", nameOf(r.Key))
				continue
			}
			fmt.Fprintf(out, "    checked %-12s %s trial=%v rpm=%s tpm=%s\n", nameOf(r.Key), r.State, r.Trial, limit(r.LimitRequests), limit(r.LimitTokens))
		case <-deadline.C:
			fmt.Fprintf(out, "    (the check is taking long; going on)\n")
			seen = len(t.Snapshot())
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	fmt.Fprintln(out, "\nafter the check:")
	if err := demoTable(out, t, nameOf); err != nil {
		return err
	}

	fmt.Fprintf(out, "\nwarm pool: traffic goes on\n")
	for i := demoColdRequests + 1; i <= demoRequests; i++ {
		if err := send(i); err != nil {
			return err
		}
	}

	fmt.Fprintln(out, "\nwhat the pool learned:")
	if err := demoTable(out, t, nameOf); err != nil {
		return err
	}
	if opts.serve {
		url := proxy.URL + "/status/"
		fmt.Fprintf(out, "\nstatus page: %s\nserving: a request every %v; interrupt (Ctrl-C) to stop\n", url, opts.every)
		if opts.serving != nil {
			opts.serving(url)
		}
		if err := demoServe(ctx, opts.every, send, demoRequests+1); err != nil {
			return err
		}
		fmt.Fprintln(out, "\nwhat the pool learned:")
		if err := demoTable(out, t, nameOf); err != nil {
			return err
		}
		// ctx ended the serving: the records are read after it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
	}
	shutdown()
	fmt.Fprintln(out, "\nrequest records by key (keypool records --by key):")
	if err := demoRecords(ctx, out, writer, store, nameOf); err != nil {
		return err
	}
	fmt.Fprintln(out, "\ndone: checker, proxy and fake API stopped")
	return nil
}

// demoServe sends request first, first+1, … every every, until ctx ends
// (which ends it without an error).
func demoServe(ctx context.Context, every time.Duration, send func(int) error, first int) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := first; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := send(i); err != nil && ctx.Err() == nil {
			return err
		}
	}
}

// demoRecords prints the records of the run grouped by the key that served
// them, keys by demo name.
func demoRecords(ctx context.Context, out io.Writer, w *records.Writer, store records.Store, nameOf func(keypool.KeyID) string) error {
	if err := w.Flush(ctx); err != nil {
		return err
	}
	groups, err := store.Aggregate(ctx, records.Query{}, records.ByKey)
	if err != nil {
		return err
	}
	for i, g := range groups {
		if g.Group != "" {
			groups[i].Group = nameOf(keypool.KeyID(g.Group))
		}
	}
	return groupsTable(out, records.ByKey, groups, nil)
}

// demoRequest sends chat request i to the proxy as an SDK would, and shows the
// answer and the key that served it, as the fake API recorded it.
func demoRequest(ctx context.Context, out io.Writer, client *http.Client, proxyURL string, fake *fakeopenai.Server, nameOf func(keypool.KeyID) string, i int) error {
	stream := i%3 == 0
	model := []string{"gpt-4o", "gpt-4o-mini", "o3"}[i%3]
	body := fmt.Sprintf(`{"model":%q,"stream":%v,"max_tokens":40,"messages":[{"role":"user","content":"request %d"}]}`, model, stream, i)
	if stream {
		body = fmt.Sprintf(`{"model":%q,"stream":true,"stream_options":{"include_usage":true},"max_tokens":40,"messages":[{"role":"user","content":"request %d"}]}`, model, i)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, proxyURL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+demoToken)
	kind := "json"
	if stream {
		kind = "stream"
	}
	fmt.Fprintf(out, "request %2d %-11s %s\n", i, model, kind)
	mark := len(fake.Records())
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(out, "    failed: %v\n", err)
		return nil
	}
	var size string
	if stream && resp.StatusCode == http.StatusOK {
		events := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if bytes.HasPrefix(sc.Bytes(), []byte("data: ")) {
				events++
			}
		}
		size = strconv.Itoa(events) + " events"
	} else {
		n, _ := io.Copy(io.Discard, resp.Body)
		size = strconv.FormatInt(n, 10) + " bytes"
	}
	resp.Body.Close()

	served := "no key"
	recs := fake.Records()
	for j := len(recs) - 1; j >= mark && j < len(recs); j-- {
		r := recs[j]
		if r.Path == "/v1/chat/completions" && r.Model == model && r.Status == resp.StatusCode {
			id := keypool.NewKey(r.Key).ID()
			served = fmt.Sprintf("%s (%s)", nameOf(id), id)
			break
		}
	}
	fmt.Fprintf(out, "    %s from %s, %s\n", resp.Status, served, size)
	return nil
}

// demoTable prints the pool's state, keys by demo name and ID.
func demoTable(out io.Writer, t *keypool.Transport, nameOf func(keypool.KeyID) string) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tID\tORG\tSTATE\tTRIAL\tRPM\tTPM\tMODELS\tREQUESTS\tREMAINING\tREASON")
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
		models := "-"
		if len(k.Models) > 0 {
			models = strconv.Itoa(len(k.Models))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\t%d\t%s\t%s\n", nameOf(k.ID), k.ID, orDash(k.Organization),
			k.State, k.Trial, limit(k.LimitRequests), limit(k.LimitTokens), models, reqs, remaining, orDash(k.Reason))
	}
	return tw.Flush()
}
