package keypool_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/fakeopenai"
)

// exampleUpstream starts a fake OpenAI API with the given keys and returns its
// base URL; the examples use it where a program would use
// https://api.openai.com/v1.
func exampleUpstream(keys ...fakeopenai.Key) (string, func()) {
	fake := fakeopenai.New(fakeopenai.Config{}, keys...)
	srv := httptest.NewServer(fake)
	return srv.URL + "/v1", func() { fake.Close(); srv.Close() }
}

func ExampleNew() {
	base, stop := exampleUpstream(
		fakeopenai.Key{Secret: "sk-revoked", Behavior: fakeopenai.Revoked},
		fakeopenai.Key{Secret: "sk-good"})
	defer stop()

	// In a program: keypool.WithUpstream("https://api.openai.com/v1", os.Getenv("OPENAI_KEY"))
	t, err := keypool.New(keypool.WithUpstream(base, "sk-revoked,sk-good"))
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: t}
	resp, err := client.Post("https://api.openai.com/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status)
	for _, k := range t.Snapshot() {
		fmt.Println(k.State)
	}
	// Output:
	// 200 OK
	// revoked
	// ready
}

func ExampleWithUpstreams() {
	primary, stop1 := exampleUpstream(fakeopenai.Key{Secret: "sk-primary", Behavior: fakeopenai.OverQuota})
	defer stop1()
	backup, stop2 := exampleUpstream(fakeopenai.Key{Secret: "sk-backup"})
	defer stop2()

	t, err := keypool.New(
		keypool.WithUpstreams(
			keypool.Upstream{Name: "primary", BaseURL: primary, Keys: []keypool.Key{keypool.NewKey("sk-primary")},
				Deny: []string{"o1*"}, Timeout: time.Minute, StreamTimeout: 10 * time.Second},
			keypool.Upstream{Name: "backup", BaseURL: backup, Keys: []keypool.Key{keypool.NewKey("sk-backup")}},
		),
		keypool.WithMaxAttempts(3),
		keypool.WithMaxWait(5*time.Second),
		keypool.WithObserver(keypool.ObserverFuncs{OnAttempt: func(e keypool.AttemptEvent) {
			fmt.Println(e.Upstream, e.Status, e.Outcome)
		}}),
	)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := (&http.Client{Transport: t}).Post("http://localhost/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// Output:
	// primary 429 over_quota
	// backup 200 success
}

func ExampleTransport_Snapshot() {
	base, stop := exampleUpstream(fakeopenai.Key{Secret: "sk-trial", Trial: true})
	defer stop()
	t, _ := keypool.New(keypool.WithUpstream(base, "sk-trial"))
	resp, err := (&http.Client{Transport: t}).Post(base+"/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	for _, k := range t.Snapshot() {
		fmt.Println(k.ID == keypool.NewKey("sk-trial").ID(), k.State, "trial:", k.Trial)
		for _, l := range k.Limits {
			fmt.Println(l.Model, "limit", l.LimitRequests, "remaining", l.RemainingRequests)
		}
		for _, u := range k.Usage {
			fmt.Println(u.Family, "requests", u.Requests, "output tokens", u.OutputTokens)
		}
	}
	// Output:
	// true ready trial: true
	// gpt-4o limit 200 remaining 199
	// gpt-4o requests 1 output tokens 6
}

func ExampleObserverFuncs() {
	base, stop := exampleUpstream(fakeopenai.Key{Secret: "sk-a", Behavior: fakeopenai.Terminated}, fakeopenai.Key{Secret: "sk-b"})
	defer stop()
	ids := map[keypool.KeyID]string{keypool.NewKey("sk-a").ID(): "a", keypool.NewKey("sk-b").ID(): "b"}
	t, _ := keypool.New(keypool.WithUpstream(base, "sk-a,sk-b"), keypool.WithObserver(keypool.ObserverFuncs{
		OnAttempt: func(e keypool.AttemptEvent) {
			fmt.Printf("attempt %d key %s: %d %s final=%v\n", e.Attempt, ids[e.Key], e.Status, e.Outcome, e.Final)
		},
		OnStateChange: func(e keypool.StateEvent) {
			fmt.Printf("key %s: %s -> %s\n", ids[e.Key], e.From, e.To)
		},
	}))
	resp, err := (&http.Client{Transport: t}).Post(base+"/embeddings", "application/json",
		strings.NewReader(`{"model":"text-embedding-3-small","input":"hello"}`))
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// Output:
	// key a: unchecked -> revoked
	// attempt 1 key a: 429 revoked final=false
	// key b: unchecked -> ready
	// attempt 2 key b: 200 success final=true
}

func ExampleParseKeys() {
	keys, err := keypool.ParseKeys(" sk-one, sk-two,,sk-one ")
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range keys {
		fmt.Printf("%v %v\n", k, strings.HasPrefix(string(k.ID()), "kp_"))
	}
	// Output:
	// kp_55aa896d76b8d1b6 true
	// kp_5260e77a123dee14 true
}

func ExamplePolicyFunc() {
	// Treat 418 as a server error (fail over), defer to the default otherwise.
	p := keypool.PolicyFunc(func(a *keypool.Answer) keypool.Outcome {
		if a.Status == http.StatusTeapot {
			return keypool.OutcomeServerError
		}
		return keypool.DefaultPolicy().Classify(a)
	})
	fmt.Println(p.Classify(&keypool.Answer{Status: 418}), p.Classify(&keypool.Answer{Status: 400}))
	_, err := keypool.New(keypool.WithUpstream("https://api.openai.com/v1", "sk-x"), keypool.WithPolicy(p))
	fmt.Println(err)
	// Output:
	// server_error client_error
	// <nil>
}

func ExampleNewChecker() {
	base, stop := exampleUpstream(
		fakeopenai.Key{Secret: "sk-paid"},
		fakeopenai.Key{Secret: "sk-trial", Trial: true},
		fakeopenai.Key{Secret: "sk-gone", Behavior: fakeopenai.Revoked})
	defer stop()
	t, _ := keypool.New(keypool.WithUpstream(base, "sk-paid,sk-trial,sk-gone"))
	c, _ := keypool.NewChecker(t, keypool.WithCheckRate(100))
	// In a server: go c.Run(ctx), which rechecks hourly; here, one pass.
	results, err := c.CheckAll(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		fmt.Println(r.State, "trial:", r.Trial, "requests/min or /day:", r.LimitRequests)
	}
	// Output:
	// ready trial: false requests/min or /day: 3000
	// ready trial: true requests/min or /day: 200
	// revoked trial: false requests/min or /day: -1
}

// mapStore keeps key states in a map. A real StateStore keeps them where a
// restart finds them (a database, Redis), and its Save only queues: it must
// not block.
type mapStore struct {
	mu     sync.Mutex
	states map[keypool.KeyID]keypool.KeyState
}

func (s *mapStore) Load(context.Context) ([]keypool.KeyState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []keypool.KeyState
	for _, st := range s.states {
		out = append(out, st)
	}
	return out, nil
}

func (s *mapStore) Save(st keypool.KeyState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states[st.ID] = st
}

func ExampleWithStateStore() {
	base, stop := exampleUpstream(
		fakeopenai.Key{Secret: "sk-revoked", Behavior: fakeopenai.Revoked},
		fakeopenai.Key{Secret: "sk-good"})
	defer stop()
	store := &mapStore{states: map[keypool.KeyID]keypool.KeyState{}}

	t, err := keypool.New(keypool.WithUpstream(base, "sk-revoked,sk-good"), keypool.WithStateStore(store))
	if err != nil {
		log.Fatal(err)
	}
	resp, err := (&http.Client{Transport: t}).Post("http://localhost/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	// A restart: the new transport knows which key is revoked before any
	// request, and sends it none.
	t, err = keypool.New(keypool.WithUpstream(base, "sk-revoked,sk-good"), keypool.WithStateStore(store))
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range t.Snapshot() {
		fmt.Println(k.State, k.Reason)
	}
	// Output:
	// revoked 401 invalid_request_error/invalid_api_key
	// ready answered
}
