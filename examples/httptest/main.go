// Command httptest shows how to unit-test your own code that uses keypool,
// with no network and no real key. Summarize (summarize.go) stands for your
// code; summarize_test.go is its test: an httptest.Server stands in for
// OpenAI (fake.go), answering 401 invalid_api_key for one key, 429 with
// x-ratelimit headers for another and 200 for the third; the keypool
// transport is pointed at it, and the test asserts that Summarize succeeds
// through failover and which keys were tried.
//
//	go test ./httptest
//	go run ./httptest
//
// This program runs the same scenario and prints what happened. Unlike the
// other examples it ignores OPENAI_BASE_URL and OPENAI_KEY: the whole point
// is that it needs neither.
package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "httptest:", err)
		os.Exit(1)
	}
}

func run() error {
	fake := &fakeOpenAI{}
	srv := httptest.NewServer(fake)
	defer srv.Close()

	t, err := newTransport(srv.URL + "/v1")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	summary, err := Summarize(ctx, &http.Client{Transport: t}, "keypool turns many API keys into one reliable client.")
	if err != nil {
		return err
	}
	fmt.Println("summary:", summary)
	fmt.Println("keys tried, in order:", fake.Tried())
	names := map[string]string{}
	for _, s := range []string{keyRevoked, keyLimited, keyGood} {
		names[string(keypoolID(s))] = s
	}
	for _, k := range t.Snapshot() {
		fmt.Printf("  %-16s %s", names[string(k.ID)], k.State)
		if !k.CoolingUntil.IsZero() {
			fmt.Printf(" until %s", k.CoolingUntil.Format(time.TimeOnly))
		}
		fmt.Println()
	}
	if tried := fake.Tried(); len(tried) != 3 || tried[2] != keyGood {
		return fmt.Errorf("want both doubtful keys tried and then %s, got %v", keyGood, tried)
	}
	return nil
}
