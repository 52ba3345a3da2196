package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/keypool/keypool/internal/records"
)

// Config is one run of the harness.
type Config struct {
	N           int           // requests per side
	Concurrency int           // clients in flight per side
	StreamRatio float64       // share of streaming requests, 0…1
	Duration    time.Duration // cap on the whole run; 0 = none
	Rounds      int           // each side's requests come in this many alternating rounds; 0 = 4
	// Records compares keypool with request records in SQLite (a file in
	// RecordsDir) against keypool with records off, instead of keypool
	// against the bare proxy.
	Records    bool
	RecordsDir string
	// Redis, a Redis URL (redis://HOST:PORT/DB), compares the proxy as
	// keypool serve wires it with its key states (and what else the
	// composition root shares through the store) in that Redis against the
	// same proxy with the memory store, instead of keypool against the bare
	// proxy. The run writes keypool's keys there: use a scratch database.
	Redis string
}

// Side is what one proxy did in a run.
type Side struct {
	Name       string
	Requests   int // answered in full, errors included
	Errors     int
	Streams    int // streaming requests answered in full
	Elapsed    time.Duration
	Throughput float64       // requests per second
	P50, P99   time.Duration // request latency, to the end of the body
	TTFB50     time.Duration // streams: time to the first byte of the body
	TTFB99     time.Duration
	FirstError error
}

// Result is both sides of a run: the baseline (Bare: the bare proxy,
// keypool with records off, or keypool with the memory store) and the proxy
// measured against it.
type Result struct {
	Bare, Keypool Side
	// Records is what the records writer did (Records mode only), and
	// Flushed the time the records side waited for it at the end of its
	// rounds (counted in its elapsed time).
	Records records.WriterStats
	Flushed time.Duration
}

// ThroughputRatio is keypool's throughput over the bare proxy's.
func (r Result) ThroughputRatio() float64 { return ratio(r.Keypool.Throughput, r.Bare.Throughput) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

var (
	chatBody   = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}`)
	streamBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"stream":true,"stream_options":{"include_usage":true}}`)
	doneEvent  = []byte("data: [DONE]")
)

// isStream reports whether request i of a run streams: the streams are
// spread evenly over the run, the same on both sides.
func isStream(i int, ratio float64) bool {
	return int(float64(i+1)*ratio) > int(float64(i)*ratio)
}

// run starts the rig, sends cfg's traffic through the bare proxy and the
// keypool proxy (or the two sides cfg.Records or cfg.Redis compare) in
// alternating rounds (after a short warm-up of each), writes a report to
// out and returns the numbers.
func run(ctx context.Context, cfg Config, out io.Writer) (Result, error) {
	if cfg.N <= 0 || cfg.Concurrency <= 0 {
		return Result{}, errors.New("loadtest: n and concurrency must be positive")
	}
	if cfg.StreamRatio < 0 || cfg.StreamRatio > 1 {
		return Result{}, errors.New("loadtest: stream ratio must be within 0…1")
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 4
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	r, err := newRig(cfg.Concurrency * 2)
	if err != nil {
		return Result{}, err
	}
	defer r.close()

	bare := &sample{side: Side{Name: "bare ReverseProxy"}}
	kp := &sample{side: Side{Name: "keypool"}}
	targets := []struct {
		s      *sample
		url    string
		client *http.Client
	}{
		{bare, r.bare.url, r.bareClient},
		{kp, r.keypool.url, r.kpClient},
	}
	if cfg.Records && cfg.Redis != "" {
		return Result{}, errors.New("loadtest: records and redis are two comparisons: choose one")
	}
	if cfg.Redis != "" {
		mem, err := startServed(r.upstream.url+"/v1", "", cfg.Concurrency*2)
		if err != nil {
			return Result{}, err
		}
		defer mem.stop()
		red, err := startServed(r.upstream.url+"/v1", cfg.Redis, cfg.Concurrency*2)
		if err != nil {
			return Result{}, err
		}
		defer red.stop()
		bare.side.Name, kp.side.Name = "keypool serve, memory store", "keypool serve, Redis store"
		targets[0].url, targets[0].client = mem.srv.url, mem.client
		targets[1].url, targets[1].client = red.srv.url, red.client
	}
	if cfg.Records {
		if err := r.startRecords(filepath.Join(cfg.RecordsDir, "loadtest.sqlite")); err != nil {
			return Result{}, err
		}
		bare.side.Name, kp.side.Name = "keypool, records off", "keypool, records in SQLite"
		targets[0].url, targets[0].client = r.keypool.url, r.kpClient
		targets[1].url, targets[1].client = r.recorded.url, r.recClient
	}
	warm := min(cfg.N/10, 500)
	for _, tg := range targets {
		drive(ctx, tg.client, tg.url, 0, warm, cfg, &sample{})
	}
	if cfg.Records {
		r.writer.Flush(ctx)
	}
	var flushed time.Duration // waiting for the records writer at the end of rounds
	per := (cfg.N + cfg.Rounds - 1) / cfg.Rounds
	for round := 0; round < cfg.Rounds; round++ {
		from, to := round*per, min((round+1)*per, cfg.N)
		if from >= to {
			break
		}
		for k := range targets {
			side := (k + round) % 2 // alternate which side goes first
			tg := targets[side]
			tg.s.side.Elapsed += drive(ctx, tg.client, tg.url, from, to, cfg, tg.s)
			if cfg.Records && side == 1 {
				// The records of this round are written on the records
				// side's time, not during the other side's round.
				start := time.Now()
				r.writer.Flush(ctx)
				tg.s.side.Elapsed += time.Since(start)
				flushed += time.Since(start)
			}
		}
	}
	res := Result{Bare: bare.finish(), Keypool: kp.finish()}
	if r.writer != nil {
		r.stopWriter()
		res.Records = r.writer.Stats()
		res.Flushed = flushed
	}
	report(out, cfg, res)
	if err := ctx.Err(); err != nil && res.Bare.Requests+res.Keypool.Requests < 2*cfg.N {
		fmt.Fprintf(out, "stopped by the duration cap (%v) before n was reached\n", cfg.Duration)
	}
	return res, nil
}

// sample collects one side's measurements; safe for simultaneous use.
type sample struct {
	mu      sync.Mutex // guards everything below
	side    Side
	latency []time.Duration
	ttfb    []time.Duration
}

func (s *sample) add(lat, ttfb time.Duration, stream bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.side.Requests++
	if err != nil {
		s.side.Errors++
		if s.side.FirstError == nil {
			s.side.FirstError = err
		}
		return
	}
	s.latency = append(s.latency, lat)
	if stream {
		s.side.Streams++
		s.ttfb = append(s.ttfb, ttfb)
	}
}

func (s *sample) finish() Side {
	s.mu.Lock()
	defer s.mu.Unlock()
	side := s.side
	if side.Elapsed > 0 {
		side.Throughput = float64(side.Requests) / side.Elapsed.Seconds()
	}
	side.P50, side.P99 = percentiles(s.latency)
	side.TTFB50, side.TTFB99 = percentiles(s.ttfb)
	return side
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[int(q*float64(len(d)-1)+0.5)] }
	return at(0.50), at(0.99)
}

// drive sends requests from…to-1 to base with cfg.Concurrency clients and
// returns the wall time it took. It stops early when ctx ends.
func drive(ctx context.Context, c *http.Client, base string, from, to int, cfg Config, s *sample) time.Duration {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.Concurrency {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				stream := isStream(i, cfg.StreamRatio)
				lat, ttfb, err := do(ctx, c, base, stream, buf)
				if ctx.Err() != nil && err != nil {
					return // cut by the cap: not the proxy's error
				}
				s.add(lat, ttfb, stream, err)
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// do sends one chat completion and reads its answer to the end.
func do(ctx context.Context, c *http.Client, base string, stream bool, buf []byte) (lat, ttfb time.Duration, err error) {
	body := chatBody
	if stream {
		body = streamBody
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+clientToken)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var got []byte
	first := true
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 && first {
			ttfb = time.Since(start)
			first = false
		}
		if stream {
			// Keep only the tail: enough to see the final event.
			got = append(got, buf[:n]...)
			if len(got) > 64 {
				got = got[len(got)-64:]
			}
		} else {
			got = append(got, buf[:n]...)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, 0, rerr
		}
	}
	lat = time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("status %d: %.200s", resp.StatusCode, got)
	}
	if stream && !bytes.Contains(got, doneEvent) {
		return 0, 0, errors.New("stream ended without [DONE]")
	}
	if !stream && !bytes.Contains(got, []byte(`"chat.completion"`)) {
		return 0, 0, fmt.Errorf("not a chat completion: %.200s", got)
	}
	return lat, ttfb, nil
}

func report(out io.Writer, cfg Config, r Result) {
	fmt.Fprintf(out, "n=%d per side, concurrency=%d, stream ratio=%.2f, %d alternating rounds\n\n",
		cfg.N, cfg.Concurrency, cfg.StreamRatio, cfg.Rounds)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "proxy\trequests\terrors\treq/s\tp50\tp99\tTTFB p50\tTTFB p99\t")
	for _, s := range []Side{r.Bare, r.Keypool} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%v\t%v\t%v\t%v\t\n", s.Name, s.Requests, s.Errors, s.Throughput,
			us(s.P50), us(s.P99), us(s.TTFB50), us(s.TTFB99))
	}
	fmt.Fprintf(tw, "ratio\t\t\t%.3fx\t%.3fx\t%.3fx\t%.3fx\t%.3fx\t\n", r.ThroughputRatio(),
		ratio(float64(r.Keypool.P50), float64(r.Bare.P50)), ratio(float64(r.Keypool.P99), float64(r.Bare.P99)),
		ratio(float64(r.Keypool.TTFB50), float64(r.Bare.TTFB50)), ratio(float64(r.Keypool.TTFB99), float64(r.Bare.TTFB99)))
	fmt.Fprintf(tw, "difference\t\t\t\t%v\t%v\t%v\t%v\t\n", us(r.Keypool.P50-r.Bare.P50), us(r.Keypool.P99-r.Bare.P99),
		us(r.Keypool.TTFB50-r.Bare.TTFB50), us(r.Keypool.TTFB99-r.Bare.TTFB99))
	tw.Flush()
	if cfg.Records {
		fmt.Fprintf(out, "records: %d written, %d dropped, %d refused inserts; %v of the records side's time was waiting for the writer at the end of its rounds\n",
			r.Records.Written, r.Records.Dropped, r.Records.Errors, r.Flushed.Round(time.Millisecond))
	}
	for _, s := range []Side{r.Bare, r.Keypool} {
		if s.FirstError != nil {
			fmt.Fprintf(out, "%s: first error: %v\n", s.Name, s.FirstError)
		}
	}
}

// us rounds d to the microsecond for display.
func us(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
