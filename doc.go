// Package keypool turns a pool of OpenAI API keys into one reliable client.
//
// Its heart is Transport, an http.RoundTripper: every request gets the best
// key available, fails over to another key or upstream when one is revoked,
// out of quota, rate-limited, failing or too slow, and the pool learns from
// every answer (x-ratelimit-* headers, 429 types, model access) which key can
// do what, and when.
//
// # Quick start
//
//	t, err := keypool.New(keypool.WithUpstream("https://api.openai.com/v1", os.Getenv("OPENAI_KEY")))
//	if err != nil {
//		log.Fatal(err)
//	}
//	client := &http.Client{Transport: t}
//	// Use client directly, or hand it to an SDK:
//	//   openai.NewClient(option.WithHTTPClient(client))
//
// OPENAI_KEY holds one key or many, comma-separated. Requests may name any
// host: the transport moves each onto the chosen key's upstream, keeping the
// path after /v1, and replaces the Authorization header.
//
// # How a key is chosen
//
// Among the keys that are usable (not revoked, over quota or disabled), whose
// upstream allows the model, that may serve the model, that are not cooling
// for it and not already tried for this request, the pool prefers:
//  1. the earlier upstream (the order given to New);
//  2. trial keys, so they are spent first (WithTrialsFirst; never for
//     embeddings);
//  3. the most headroom: remaining requests from the key's last answer for
//     that model, minus requests in flight;
//  4. the least recently used.
//
// Rate limits are kept per key and model, as OpenAI keeps them. A key whose
// answer says its bucket is empty rests until the bucket frees a slot, at the
// refill rate its headers imply, without waiting for a 429. Before its first
// answer a key takes at most a few requests at once (WithProbeLimit). When no
// key is free but one will be within the wait budget (WithMaxWait), a request
// waits for it; otherwise it fails at once with a *NoKeyError that says when
// the first key frees up.
//
// # When a request fails over
//
// DefaultPolicy() reads status, error type and error code, never message text:
//
//	2xx                                   done; headers and usage recorded
//	401 invalid_api_key, access_terminated key revoked; next key
//	insufficient_quota, billing_not_active key over quota; next key
//	429 requests / tokens                  key cools for that model; next key
//	429 tokens, request too large          returned as is: no key can help
//	403/404 model_not_found                key loses that model; next key
//	401 mismatched_organization (clone)    that clone revoked; next key
//	5xx, network error, slow headers       next key or upstream, after backoff
//	other 4xx                              returned as is
//	caller cancelled                       stop; not the key's fault
//
// Replace or wrap it with WithPolicy; the Checker reads its probes with the
// same Policy. Failover needs the request body again: bodies up to
// WithMaxBodyBuffer are kept, larger ones are replayed through
// Request.GetBody or get one attempt. A streaming answer is read up to its
// first event before it is handed back, so a stream that opens with an error
// or never starts fails over too. When every attempt failed, the caller gets
// the last upstream answer with "x-should-retry: false" (and Retry-After when
// a key frees up soon), so the SDK in front does not multiply the load.
//
// # Key states
//
//	unchecked ─▶ ready ◀──▶ cooling (until a time, for one model or all)
//	               ├─▶ over_quota   until Enable (or a recheck)
//	               ├─▶ revoked      until Enable (or a recheck)
//	               └─▶ disabled     by the operator
//
// Transport.Snapshot shows every key by its ID (never its secret), and
// Pool.Counts how many keys stand in each state, at a cost that does not grow
// with the pool. An Observer (WithObserver) hears of every attempt, every
// state change and every check.
//
// A Checker (NewChecker) learns what each key is before traffic finds out,
// at no cost: its organizations (each extra one becomes a clone key of its
// own), its models, and whether it is alive, a trial, revoked or over quota,
// from a request OpenAI refuses before billing it. Run it in the background
// (Checker.Run) or once (Checker.CheckAll).
//
// # Concurrency
//
// Transport and Pool are safe for simultaneous use by multiple goroutines.
// All pool state sits behind one mutex held only for O(log n) heap work per
// pick; observers are called without it.
//
// # Secrets
//
// A Key's secret never appears in fmt output (any verb), JSON, slog, error
// strings, events or snapshots: keys are shown by their KeyID, a hash.
package keypool
