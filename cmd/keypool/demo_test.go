package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

func TestRunDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var buf bytes.Buffer
	start := time.Now()
	if err := runDemo(ctx, &buf, demoOptions{every: time.Second}); err != nil {
		t.Fatalf("runDemo: %v\n%s", err, buf.String())
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the demo took %v", d)
	}
	out := buf.String()
	for _, want := range []string{
		"fake OpenAI API on http://127.0.0.1:",
		"keypool proxy on http://127.0.0.1:",
		"attempt 1: revoked ", "attempt 2: over-quota ", "failing over",
		"checker started", "after the check:", "what the pool learned:",
		"request 20", " stream\n", " json\n", "events", "done:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(out, "sk-") || strings.Contains(out, demoToken) {
		t.Errorf("demo output shows a secret")
	}

	// Every request was served, by a key named with its ID.
	served := regexp.MustCompile(`(?m)^    200 OK from [a-z-]+ \(kp_[0-9a-f]+\), `)
	if n := len(served.FindAllString(out, -1)); n != demoRequests {
		t.Errorf("%d requests served by a named key, want %d", n, demoRequests)
	}

	// Both tables have a row per key with the checked state.
	for _, title := range []string{"after the check:", "what the pool learned:"} {
		_, table, ok := strings.Cut(out, title+"\n")
		if !ok {
			continue
		}
		table, _, _ = strings.Cut(table, "\n\n")
		rows := map[string][]string{}
		for _, line := range strings.Split(table, "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 4 {
				rows[f[0]] = f
			}
		}
		for _, k := range demoKeys {
			row := rows[k.name]
			if row == nil || row[1] != string(keypool.NewKey(k.key.Secret).ID()) {
				t.Errorf("%s: no row for %s: %q", title, k.name, row)
			}
		}
		if f := rows["revoked"]; f == nil || f[3] != "revoked" {
			t.Errorf("%s: revoked row %q", title, f)
		}
		if f := rows["over-quota"]; f == nil || f[3] != "over_quota" {
			t.Errorf("%s: over-quota row %q", title, f)
		}
		if f := rows["trial"]; f == nil || f[4] != "true" || f[5] != "3" {
			t.Errorf("%s: trial row %q", title, f)
		}
		if f := rows["paid"]; f == nil || !strings.HasPrefix(f[2], "org-") || f[4] != "false" || f[5] != "3000" {
			t.Errorf("%s: paid row %q", title, f)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// demo --serve keeps the proxy up with its status page, sends traffic on,
// and stops cleanly when interrupted, even with a page open.
func TestRunDemoServe(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	serving := make(chan string, 1)
	var buf syncWriter
	var out bytes.Buffer
	buf.w = &out
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, &buf, demoOptions{serve: true, every: 20 * time.Millisecond, serving: func(url string) { serving <- url }})
	}()
	var url string
	select {
	case url = <-serving:
	case err := <-done:
		t.Fatalf("the demo ended before serving: %v", err)
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/status/") {
		t.Fatalf("status page URL %q", url)
	}
	get := func(path string) []byte {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return b
	}
	if page := get(""); !bytes.Contains(page, []byte("<html")) && !bytes.Contains(page, []byte("<!doctype")) {
		t.Fatalf("the page: %.200s", page)
	}
	var snap struct {
		Keys    []keypool.KeyInfo `json:"keys"`
		Minutes struct {
			Requests []int64 `json:"requests"`
		} `json:"minutes"`
	}
	if err := json.Unmarshal(get("data"), &snap); err != nil {
		t.Fatal(err)
	}
	var requests int64
	for _, n := range snap.Minutes.Requests {
		requests += n
	}
	if len(snap.Keys) != len(demoKeys) || requests < demoRequests {
		t.Fatalf("%d keys, %d requests in the charts", len(snap.Keys), requests)
	}
	// Traffic goes on: an open page sees more requests than the script
	// sent. And a page open while the demo is interrupted does not hold
	// it up.
	resp, err := http.Get(url + "events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	for requests <= demoRequests && lines.Scan() {
		if data, ok := bytes.CutPrefix(lines.Bytes(), []byte("data: ")); ok {
			if err := json.Unmarshal(data, &snap); err != nil {
				t.Fatal(err)
			}
			requests = 0
			for _, n := range snap.Minutes.Requests {
				requests += n
			}
		}
	}
	if requests <= demoRequests {
		t.Fatalf("the stream ended (%v) with %d requests", lines.Err(), requests)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("runDemo: %v", err)
	}
	text := out.String()
	for _, want := range []string{"status page: " + url, "request 21 ", "serving: a request every 20ms", "request records by key"} {
		if !strings.Contains(text, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	for _, k := range demoKeys {
		if strings.Contains(text, k.key.Secret) || strings.Contains(text, demoToken) {
			t.Fatal("the output shows a secret")
		}
	}
}
