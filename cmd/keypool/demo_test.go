package main

import (
	"bytes"
	"context"
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
