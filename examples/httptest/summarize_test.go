package main

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keypool/keypool"
)

func TestSummarizeFailsOver(t *testing.T) {
	fake := &fakeOpenAI{}
	srv := httptest.NewServer(fake)
	defer srv.Close()

	var mu sync.Mutex
	var attempts []keypool.AttemptEvent // kept by an observer, to assert on
	tr, err := newTransport(srv.URL+"/v1", keypool.WithObserver(keypool.ObserverFuncs{
		OnAttempt: func(e keypool.AttemptEvent) { mu.Lock(); attempts = append(attempts, e); mu.Unlock() },
	}))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: tr}

	got, err := Summarize(t.Context(), client, "keypool turns many API keys into one reliable client.")
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	if got != "A short summary." {
		t.Errorf("Summarize = %q, want the good key's answer", got)
	}

	// Both doubtful keys were tried once, in either order, then the good one.
	tried := fake.Tried()
	if len(tried) != 3 || tried[2] != keyGood {
		t.Fatalf("keys tried = %v, want %s and %s (either order), then %s", tried, keyRevoked, keyLimited, keyGood)
	}
	if first := slices.Sorted(slices.Values(tried[:2])); !slices.Equal(first, []string{keyLimited, keyRevoked}) {
		t.Errorf("keys tried first = %v, want %s and %s", tried[:2], keyRevoked, keyLimited)
	}

	mu.Lock()
	seen := slices.Clone(attempts)
	mu.Unlock()
	// The observer saw the same three attempts; only the last was handed back.
	if len(seen) != 3 {
		t.Fatalf("observer saw %d attempts, want 3", len(seen))
	}
	for i, a := range seen {
		wantKey, wantStatus := keypoolID(tried[i]), map[string]int{keyRevoked: 401, keyLimited: 429, keyGood: 200}[tried[i]]
		if a.Key != wantKey || a.Status != wantStatus || a.Final != (i == 2) {
			t.Errorf("attempt %d = key %s status %d final %v, want key %s status %d final %v",
				i+1, a.Key, a.Status, a.Final, wantKey, wantStatus, i == 2)
		}
	}

	// What the pool learned: the revoked key is out, the limited one cools
	// until its bucket refills (the 20s its headers said), the good one is
	// ready. Keys are shown by ID, never by secret.
	states := map[keypool.KeyID]keypool.KeyInfo{}
	for _, k := range tr.Snapshot() {
		states[k.ID] = k
	}
	if k := states[keypoolID(keyRevoked)]; k.State != keypool.StateRevoked {
		t.Errorf("revoked key: state %s, want %s", k.State, keypool.StateRevoked)
	}
	if k := states[keypoolID(keyLimited)]; !k.CoolingUntil.After(time.Now()) {
		t.Errorf("limited key: state %s, cooling until %v, want a cooldown", k.State, k.CoolingUntil)
	}
	if k := states[keypoolID(keyGood)]; k.State != keypool.StateReady {
		t.Errorf("good key: state %s, want %s", k.State, keypool.StateReady)
	}

	// A second call goes straight to the good key: the pool remembers.
	if _, err := Summarize(t.Context(), client, "again"); err != nil {
		t.Fatalf("second Summarize: %v", err)
	}
	if tried := fake.Tried(); len(tried) != 4 || tried[3] != keyGood {
		t.Errorf("second call tried %v, want only %s", tried[3:], keyGood)
	}
}

// Your code's own error path: when no key works, Summarize returns an error
// (here keypool's own 503 no_key_available: every key of the pool is bad).
func TestSummarizeAllKeysBad(t *testing.T) {
	srv := httptest.NewServer(&fakeOpenAI{})
	defer srv.Close()
	tr, err := keypool.New(keypool.WithUpstream(srv.URL+"/v1", "sk-test-bad-1,sk-test-bad-2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Summarize(t.Context(), &http.Client{Transport: tr}, "text"); err == nil {
		t.Fatal("Summarize succeeded with no valid key")
	}
}
