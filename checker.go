package keypool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	retry "github.com/sethvargo/go-retry"
	"golang.org/x/time/rate"
)

// Checker learns what each key of a Transport's pool is before traffic finds
// out the hard way, and spends no quota doing it. For every key it:
//
//   - lists the key's organizations (GET /v1/me, else GET /v1/organizations):
//     the default one becomes the key's organization, and every other one a
//     clone, a key of its own with its own ID, state, limits and usage, sent
//     with an OpenAI-Organization header and checked on its own;
//   - lists the key's models (GET /v1/models), so requests for a model go only
//     to keys that have its family;
//   - sends a deliberately invalid chat request (model babbage-002,
//     max_tokens -1), which OpenAI refuses with a 400 before it costs
//     anything; the refusal's x-ratelimit-limit-requests tells a trial key
//     (<= 250) from a paid one, and other answers, read with the pool's
//     Policy (WithPolicy), tell a revoked or over-quota key.
//
// A key of a Replicate upstream (TypeReplicate) is checked with one free
// GET /v1/account instead: 200 is a live key, a 401 a revoked one. It lists
// no models (any model is tried) and tells nothing of credit: a key without
// it goes over quota on its first prediction's 402.
//
// Run checks every key, then rechecks them periodically; Recheck asks for a
// pass now, which also gives over-quota and revoked keys a new look. CheckAll
// makes one pass and returns. Checks are paced by a rate limiter and bounded in
// concurrency. Unchecked keys stay usable unless the Transport was built with
// WithCheckedKeysOnly(true). Every result goes to the transport's observers
// (Observer.Checked) and to those given with WithCheckObserver.
//
// A Checker is safe for simultaneous use by multiple goroutines; run at most
// one Run at a time.
type Checker struct {
	t       *Transport
	p       *Pool
	cfg     checkConfig
	limiter *rate.Limiter
	recheck chan struct{}
	retryCh chan checkRetry

	mu      sync.Mutex
	backoff map[*key]retry.Backoff // network-error retries in progress
}

type checkConfig struct {
	rate         float64
	concurrency  int
	recheckEvery time.Duration
	retryDelay   time.Duration
	retries      uint64
	timeout      time.Duration
	observers    observers
	log          *slog.Logger
}

// CheckOption configures NewChecker.
type CheckOption interface {
	applyCheck(*checkConfig) error
}

type checkOptionFunc func(*checkConfig) error

func (f checkOptionFunc) applyCheck(c *checkConfig) error { return f(c) }

// WithCheckRate sets how many key checks start per second (default 5). Each
// check sends three or four requests.
func WithCheckRate(perSecond float64) CheckOption {
	return checkOptionFunc(func(c *checkConfig) error {
		if !(perSecond > 0) {
			return errors.New("keypool: check rate must be positive")
		}
		c.rate = perSecond
		return nil
	})
}

// WithCheckConcurrency bounds the checks in flight at once (default 4).
func WithCheckConcurrency(n int) CheckOption {
	return checkOptionFunc(func(c *checkConfig) error {
		if n < 1 {
			return errors.New("keypool: check concurrency must be at least 1")
		}
		c.concurrency = n
		return nil
	})
}

// WithRecheckEvery sets how often Run checks every key again (default 1h); 0
// switches periodic rechecks off. With a StateStore, each key's interval
// counts from its own last check, which may be from before a restart.
func WithRecheckEvery(d time.Duration) CheckOption {
	return checkOptionFunc(func(c *checkConfig) error {
		if d < 0 {
			return errors.New("keypool: recheck interval must not be negative")
		}
		c.recheckEvery = d
		return nil
	})
}

// WithCheckRetryDelay sets how much later Run checks a key again after a
// network error (default 1m, up to 5 times in a row).
func WithCheckRetryDelay(d time.Duration) CheckOption {
	return checkOptionFunc(func(c *checkConfig) error {
		if d <= 0 {
			return errors.New("keypool: check retry delay must be positive")
		}
		c.retryDelay = d
		return nil
	})
}

// WithCheckObserver adds an observer of this checker's results (its Checked
// method), after the transport's own observers (WithObserver), which hear
// of every check too; it may be given more than once. nil is ignored.
func WithCheckObserver(o Observer) CheckOption {
	return checkOptionFunc(func(c *checkConfig) error {
		if o != nil {
			c.observers = append(c.observers, o)
		}
		return nil
	})
}

// WithCheckLogger sets where unexpected answers and network errors are
// logged, by key ID; nil (the default) logs nothing.
func WithCheckLogger(l *slog.Logger) CheckOption {
	return checkOptionFunc(func(c *checkConfig) error { c.log = l; return nil })
}

// CheckResult is what one key's check found.
type CheckResult struct {
	Key           KeyID         `json:"id"`
	Source        string        `json:"source,omitempty"` // where the key came from (KeyInfo.Source)
	Upstream      string        `json:"upstream"`
	Organization  string        `json:"organization,omitempty"`
	Scope         string        `json:"scope,omitempty"` // the budget it spends (KeyInfo.Scope)
	Clone         bool          `json:"clone,omitempty"`
	State         State         `json:"state"`
	Reason        string        `json:"reason,omitempty"`
	Trial         bool          `json:"trial"`
	LimitRequests int64         `json:"limit_requests"` // from the probe's answer; Unknown (-1) if not stated
	LimitTokens   int64         `json:"limit_tokens"`
	Models        []string      `json:"models,omitempty"`
	Clones        []KeyID       `json:"clones,omitempty"` // organization clones this check created
	Err           error         `json:"-"`                // a network error: the key stays as it was
	Duration      time.Duration `json:"duration"`
}

// NewChecker builds a checker for t's pool.
func NewChecker(t *Transport, opts ...CheckOption) (*Checker, error) {
	cfg := checkConfig{rate: 5, concurrency: 4, recheckEvery: time.Hour, retryDelay: time.Minute,
		retries: 5, timeout: 30 * time.Second}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyCheck(&cfg); err != nil {
			return nil, err
		}
	}
	return &Checker{
		t: t, p: t.pool, cfg: cfg,
		limiter: rate.NewLimiter(rate.Limit(cfg.rate), 1),
		recheck: make(chan struct{}, 1),
		retryCh: make(chan checkRetry, 64),
		backoff: map[*key]retry.Backoff{},
	}, nil
}

// Recheck asks Run for a pass over every key (disabled ones aside) now. It
// does not wait for it.
func (c *Checker) Recheck() {
	select {
	case c.recheck <- struct{}{}:
	default: // a pass is already asked for
	}
}

// RecheckKey asks Run to check the key id now, whatever its state (a
// disabled key stays disabled, but learns its models and limits), and does
// not wait for it: an operator who fixed one key's billing need not recheck
// them all. A key the pool does not hold, or the stand-in of an upstream
// without keys of its own, is an error that matches ErrUnknownKey; any
// other error means more checks are waiting for Run than it takes, and the
// caller may try again.
func (c *Checker) RecheckKey(id KeyID) error {
	c.p.mu.Lock()
	k := c.p.byID[id]
	c.p.mu.Unlock()
	if k == nil || k.standIn() {
		return &unknownKeyError{id}
	}
	// Run takes it as a retry that failed now: checked at once, unless a
	// check made since (here or by another replica) already answered.
	select {
	case c.retryCh <- checkRetry{k, c.t.now()}:
		return nil
	default:
		return errors.New("keypool: the checker has too many checks waiting; try again")
	}
}

// CheckAll checks every key (disabled ones aside) once, including the clones
// found on the way, and returns the results in the pool's order, each clone
// after its parent. It returns early with ctx's error.
func (c *Checker) CheckAll(ctx context.Context) ([]CheckResult, error) {
	results, _ := c.pass(ctx, c.p.checkable(), false)
	if err := ctx.Err(); err != nil {
		return results, err
	}
	return results, nil
}

// Run checks every key, then again every recheck interval (over-quota and
// revoked keys aside: Recheck gives those a new look), on Recheck, and a
// while after a network error, until ctx ends; then it returns nil.
//
// With a StateStore (WithStateStore), a key's last check may be older than
// the process: Run then checks each key a recheck interval after its own
// last check rather than all keys in one pass per interval, and at start
// only the keys never checked and those whose recheck is due. A key
// restored over quota or revoked gets that one check when it is due, as it
// would have had one at start.
func (c *Checker) Run(ctx context.Context) error {
	if c.p.store != nil {
		return c.runEach(ctx)
	}
	c.pass(ctx, c.p.checkable(), true)
	var tick <-chan time.Time
	if c.cfg.recheckEvery > 0 {
		t := time.NewTicker(c.cfg.recheckEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			c.pass(ctx, c.p.live(), true)
		case <-c.p.added:
			c.pass(ctx, c.p.takeFresh(), true) // keys Update added
		case <-c.recheck:
			c.pass(ctx, c.p.checkable(), true)
		case r := <-c.retryCh:
			c.pass(ctx, []*key{r.k}, true)
		}
	}
}

// pass checks keys, paced and bounded, and the clones their checks find.
// With retry set, keys that met a network error are checked again later.
// It returns the results in the pool's order, and the keys it checked.
func (c *Checker) pass(ctx context.Context, keys []*key, retryLater bool) ([]CheckResult, []*key) {
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		queue    = slices.Clone(keys)
		inflight int
		results  = map[*key]CheckResult{}
		order    []*key
		sem      = make(chan struct{}, c.cfg.concurrency)
	)
	for {
		mu.Lock()
		for len(queue) == 0 && inflight > 0 {
			cond.Wait()
		}
		if len(queue) == 0 || ctx.Err() != nil {
			for inflight > 0 {
				cond.Wait()
			}
			mu.Unlock()
			break
		}
		k := queue[0]
		queue = queue[1:]
		inflight++
		mu.Unlock()

		var err error
		if c.p.removed(k) {
			err = errKeyRemoved // Update took it out since it was queued
			c.mu.Lock()
			delete(c.backoff, k) // its retries end here
			c.mu.Unlock()
		} else {
			err = c.waitTurn(ctx)
		}
		if err == nil {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if err != nil {
			mu.Lock()
			inflight--
			cond.Broadcast()
			mu.Unlock()
			continue
		}
		go func() {
			defer func() { <-sem }()
			res, clones := c.check(ctx, k)
			if retryLater {
				c.scheduleRetry(ctx, k, res.Err)
			}
			if c.t.observer != nil {
				c.t.observer.Checked(res)
			}
			c.cfg.observers.Checked(res)
			mu.Lock()
			results[k] = res
			order = append(order, k)
			queue = append(queue, clones...)
			inflight--
			cond.Broadcast()
			mu.Unlock()
		}()
	}
	return c.p.inPoolOrder(order, results), order
}

// waitTurn waits for the limiter's next slot or ctx's end. Unlike
// Limiter.Wait it never fails early because the slot falls after ctx's
// deadline: a key is either checked or the pass stops with ctx's error.
func (c *Checker) waitTurn(ctx context.Context) error {
	r := c.limiter.Reserve()
	d := r.Delay()
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

// scheduleRetry checks k again a while after a network error (go-retry: a
// constant delay, a bounded number of times in a row); a check that got an
// answer clears the count.
func (c *Checker) scheduleRetry(ctx context.Context, k *key, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil || ctx.Err() != nil {
		delete(c.backoff, k)
		return
	}
	b := c.backoff[k]
	if b == nil {
		b = retry.WithMaxRetries(c.cfg.retries, retry.NewConstant(c.cfg.retryDelay))
		c.backoff[k] = b
	}
	d, stop := b.Next()
	if stop {
		delete(c.backoff, k)
		c.logf(slog.LevelWarn, "keypool: key check keeps failing; giving up until the next recheck", k, "error", err.Error())
		return
	}
	failed := c.t.now()
	time.AfterFunc(d, func() {
		select {
		case c.retryCh <- checkRetry{k, failed}:
		case <-ctx.Done():
		}
	})
}

// checkRetry is a key to check again, whose check failed at failed.
type checkRetry struct {
	k      *key
	failed time.Time
}

// check checks one key, stopping at the first answer that settles it:
// organizations (which may create clones; a 401 invalid_api_key there
// already says the key is revoked), then the zero-cost probe (revoked or
// over quota ends it), then the models only of a key that is alive. A
// revoked key costs one request, an over-quota one two. It returns the
// result and the new clones.
func (c *Checker) check(ctx context.Context, k *key) (CheckResult, []*key) {
	start := c.t.now()
	res := CheckResult{Key: k.cred.id, Source: k.cred.source, Upstream: k.up.Name, Clone: k.clone,
		LimitRequests: Unknown, LimitTokens: Unknown}
	var clones []*key
	switch k.up.Type {
	case TypeAzure:
		return c.checkAzure(ctx, k, res, start), nil
	case TypeReplicate:
		return c.checkReplicate(ctx, k, res, start), nil
	}

	if !k.clone && k.cred.org == "" && !k.cred.ServiceAccount() && !c.p.orgsKnown(k) {
		orgs, known, verdict, err := c.organizations(ctx, k)
		if err != nil {
			return c.failed(res, k, err, start), nil
		}
		if verdict != "" {
			return c.settled(res, k, StateRevoked, verdict, nil, noLimits, start), nil
		}
		if known {
			clones = c.p.orgsFound(k, orgs, c.t.now())
		}
		for _, cl := range clones {
			res.Clones = append(res.Clones, cl.cred.id)
		}
	}

	state, reason, limits, err := c.probe(ctx, k)
	if err != nil {
		return c.failed(res, k, err, start), clones
	}
	var models []string
	if state.Usable() {
		var status int
		models, status, err = c.models(ctx, k)
		if err != nil {
			return c.failed(res, k, err, start), clones
		}
		if status != http.StatusOK || len(models) == 0 {
			models = nil // not listable (or listed nothing): any model is tried
		}
	}
	return c.settled(res, k, state, reason, models, limits, start), clones
}

// checkReplicate checks a Replicate key with GET /v1/account, which costs
// nothing: 200 is a live key, a refusal is read as the adapter reads it
// (401 revoked). Replicate has no organizations, no rate-limit headers to
// learn and far too many models to list: any model is tried.
func (c *Checker) checkReplicate(ctx context.Context, k *key, res CheckResult, start time.Time) CheckResult {
	status, header, body, err := c.callService(ctx, k, http.MethodGet, "/account", nil)
	if err != nil {
		return c.failed(res, k, err, start)
	}
	if status == http.StatusOK {
		return c.settled(res, k, StateReady, "checked", nil, noLimits, start)
	}
	st, typ, code, msg, _ := replicateError(status, body)
	a := &Answer{Status: st, Header: header, Limits: responseLimits(header, c.t.now()),
		Error: &APIError{Status: st, Type: typ, Code: code, Message: msg}}
	state, reason := probeVerdict(a, c.t.policy.Classify(a))
	return c.settled(res, k, state, reason, nil, noLimits, start)
}

// settled records what a check found and fills in its result.
func (c *Checker) settled(res CheckResult, k *key, state State, reason string, models []string, limits RateLimits, start time.Time) CheckResult {
	now := c.t.now()
	c.p.checked(k, state, reason, models, limits, now)
	info, _ := c.p.keyAt(k.cred.id, now)
	res.Organization, res.State, res.Reason, res.Trial = info.Organization, info.State, info.Reason, info.Trial
	res.LimitRequests, res.LimitTokens, res.Models, res.Scope = info.LimitRequests, info.LimitTokens, info.Models, info.Scope
	res.Duration = now.Sub(start)
	return res
}

func (c *Checker) failed(res CheckResult, k *key, err error, start time.Time) CheckResult {
	res.Err = err
	now := c.t.now()
	info, _ := c.p.keyAt(k.cred.id, now)
	res.Organization, res.State, res.Reason, res.Trial = info.Organization, info.State, info.Reason, info.Trial
	res.Duration = now.Sub(start)
	c.logf(slog.LevelWarn, "keypool: key check failed; will retry", k, "error", err.Error())
	return res
}

func (c *Checker) logf(level slog.Level, msg string, k *key, args ...any) {
	if c.cfg.log == nil {
		return
	}
	c.cfg.log.Log(context.Background(), level, msg, append([]any{"key", string(k.cred.id), "upstream", k.up.Name}, args...)...)
}

// organization is one entry of /v1/me's orgs.data or /v1/organizations' data.
type organization struct {
	ID        string `json:"id"`
	IsDefault bool   `json:"is_default"`
	Title     string `json:"title"`
	Name      string `json:"name"` // its slug, as answers' openai-organization header names it
}

// organizations lists k's organizations: /v1/me, else (an API without it,
// a 404 or 405) /v1/organizations. Answers that mean "this key cannot list
// organizations" (403, no_organization, …) give none, quietly; a 401
// invalid_api_key gives a verdict instead: the key is revoked, and nothing
// more need be asked. Only a network error is an error.
func (c *Checker) organizations(ctx context.Context, k *key) (orgs []organization, known bool, revoked string, err error) {
	status, header, body, err := c.call(ctx, k, http.MethodGet, "/me", nil)
	if err != nil {
		return nil, false, "", err
	}
	if status == http.StatusOK {
		if orgs, ok := parseMe(body); ok {
			return orgs, true, "", nil
		}
	}
	if v := c.revokedBy(k, status, header, body); v != "" {
		return nil, false, v, nil
	}
	transient := status == http.StatusTooManyRequests || status >= 500
	if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
		status, header, body, err = c.call(ctx, k, http.MethodGet, "/organizations", nil)
		if err != nil {
			return nil, false, "", err
		}
		if status == http.StatusOK {
			if orgs, ok := parseOrganizations(body); ok {
				return orgs, true, "", nil
			}
		}
		if v := c.revokedBy(k, status, header, body); v != "" {
			return nil, false, v, nil
		}
		transient = status == http.StatusTooManyRequests || status >= 500
	}
	// A 5xx or 429 says nothing about the key: list again next check.
	return nil, !transient, "", nil
}

// revokedBy returns the reason an answer settles k as revoked, as the pool's
// Policy reads it (for the default policy: a 401 invalid_api_key or
// account_deactivated, or access_terminated); "" for any other answer.
func (c *Checker) revokedBy(k *key, status int, header http.Header, body []byte) string {
	a := c.answer(k, status, header, body)
	if c.t.policy.Classify(a) != OutcomeRevoked {
		return ""
	}
	_, reason := probeVerdict(a, OutcomeRevoked)
	return reason
}

// answer is what a Policy classifies of a check's answer: the fields the
// transport fills for an attempt.
func (c *Checker) answer(k *key, status int, header http.Header, body []byte) *Answer {
	a := &Answer{Status: status, Header: header, Clone: k.cred.org != "" && !k.cred.ServiceAccount(),
		Limits: responseLimits(header, c.t.now())}
	if status/100 != 2 {
		a.Error = ParseAPIError(status, body)
	}
	return a
}

// parseMe reads /v1/me's organizations; ok is false if the body is not a
// user object with an orgs list.
func parseMe(body []byte) ([]organization, bool) {
	var me struct {
		Orgs *struct {
			Data []organization `json:"data"`
		} `json:"orgs"`
	}
	if json.Unmarshal(body, &me) != nil || me.Orgs == nil {
		return nil, false
	}
	return validOrgs(me.Orgs.Data), true
}

// parseOrganizations reads /v1/organizations' list.
func parseOrganizations(body []byte) ([]organization, bool) {
	var list struct {
		Data *[]organization `json:"data"`
	}
	if json.Unmarshal(body, &list) != nil || list.Data == nil {
		return nil, false
	}
	return validOrgs(*list.Data), true
}

// validOrgs keeps organizations with an org- id, each once.
func validOrgs(orgs []organization) []organization {
	out := orgs[:0:0]
	seen := map[string]bool{}
	for _, o := range orgs {
		if !strings.HasPrefix(o.ID, "org-") || len(o.ID) > 128 || seen[o.ID] {
			continue
		}
		seen[o.ID] = true
		out = append(out, o)
	}
	return out
}

// models lists k's model ids. A status other than 200 is returned with no
// models; only a network error is an error.
func (c *Checker) models(ctx context.Context, k *key) ([]string, int, error) {
	status, _, body, err := c.call(ctx, k, http.MethodGet, "/models", nil)
	if err != nil || status != http.StatusOK {
		return nil, status, err
	}
	ids, ok := parseModels(body)
	if !ok {
		return nil, 0, nil
	}
	return ids, status, nil
}

// parseModels reads a /v1/models list; ok is false when body is not one.
func parseModels(body []byte) ([]string, bool) {
	var list struct {
		Data *[]struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &list) != nil || list.Data == nil {
		return nil, false
	}
	ids := make([]string, 0, len(*list.Data))
	for _, m := range *list.Data {
		if m.ID != "" && len(m.ID) <= 256 {
			ids = append(ids, m.ID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), true
}

// probeBody is the seed's zero-cost liveness check: OpenAI refuses
// max_tokens -1 with a 400 before running (or billing) anything, and the
// refusal carries the key's rate-limit headers.
const probeBody = `{"model":"babbage-002","messages":[{"role":"user","content":"hi"}],"max_tokens":-1}`

// probe sends the liveness probe and says what its answer means for k, as
// the pool's Policy classifies it.
func (c *Checker) probe(ctx context.Context, k *key) (State, string, RateLimits, error) {
	status, header, body, err := c.call(ctx, k, http.MethodPost, "/chat/completions", []byte(probeBody))
	if err != nil {
		return 0, "", RateLimits{}, err
	}
	a := c.answer(k, status, header, body)
	state, reason := probeVerdict(a, c.t.policy.Classify(a))
	if reason == "unexpected" {
		c.logf(slog.LevelInfo, "keypool: unexpected answer to the key check; letting the key through", k, "status", status)
		reason = fmt.Sprintf("checked (unexpected %d)", status)
	}
	return state, reason, a.Limits, nil
}

// probeVerdict says what the probe's answer a means for the key, given its
// outcome under the pool's Policy, as the seed reads it: the 400 the probe
// asks for is a live key; a revoked key (and, for the probe, a key refused
// it: the plainest request there is) is revoked; an over-quota one is over
// quota; a rate-limited one is a live key whose budget is spent for now (the
// seed took a trial key's for over quota, which took a daily-limited key out
// until an operator's recheck); anything else lets the key through
// ("unexpected").
func probeVerdict(a *Answer, out Outcome) (State, string) {
	var typ, code string
	if a.Error != nil {
		typ, code = a.Error.Type, a.Error.Code
	}
	switch out {
	case OutcomeRevoked, OutcomeKeyRejected:
		return StateRevoked, fmt.Sprintf("check: %d %s", a.Status, errorName(typ, code, "access_terminated"))
	case OutcomeOverQuota:
		return StateOverQuota, fmt.Sprintf("check: %d %s", a.Status, errorName(typ, code, "insufficient_quota", "billing_not_active"))
	case OutcomeRateLimited, OutcomeTooLarge:
		return StateReady, "checked (rate-limited)"
	case OutcomeClientError:
		if a.Status == http.StatusBadRequest {
			return StateReady, "checked"
		}
	}
	return StateReady, "unexpected"
}

// errorName names an error for a reason: the first of names that is its
// type or code, else its code ("-" for none).
func errorName(typ, code string, names ...string) string {
	for _, n := range names {
		if typ == n || code == n {
			return n
		}
	}
	return orDash(code)
}

// checkBodyLimit bounds what a check reads of an answer (a model list is a
// few kilobytes).
const checkBodyLimit = 4 << 20

// call sends one check request for k straight to its upstream (not through
// the transport: a check must not fail over to another key), through its
// type's adapter: a check speaks OpenAI's paths.
func (c *Checker) call(ctx context.Context, k *key, method, path string, body []byte) (int, http.Header, []byte, error) {
	return c.send(ctx, k, method, path, body, adapterOf(k.up.Type))
}

// callService is call for a path of the upstream's own service, not
// OpenAI's: it goes as it is, past the type's adapter.
func (c *Checker) callService(ctx context.Context, k *key, method, path string, body []byte) (int, http.Header, []byte, error) {
	return c.send(ctx, k, method, path, body, nil)
}

// send is call through ad, or straight to the base transport when ad is
// nil.
func (c *Checker) send(ctx context.Context, k *key, method, path string, body []byte, ad adapter) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
	defer cancel()
	u := *k.up.base
	u.Path = joinPath(u.Path, "/v1"+path)
	u.RawPath = ""
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	setKeyHeaders(req.Header, k)
	var resp *http.Response
	if ad != nil {
		resp, err = ad.send(c.t.base, req, &adaptInfo{up: &k.up.Upstream, body: body, secret: k.cred.secret})
	} else {
		resp, err = c.t.base.RoundTrip(req)
	}
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, checkBodyLimit))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, b, nil
}

// setKeyHeaders puts k's credentials on h: its Authorization, and for an
// organization clone or a key given an organization or project, those headers
// (never for service-account keys).
func setKeyHeaders(h http.Header, k *key) {
	switch k.up.Auth {
	case AuthCaller:
		return // the caller's own credentials go as they are
	case AuthNone:
		delete(h, "Authorization")
	default:
		h["Authorization"] = k.auth()
	}
	delete(h, "Api-Key")
	delete(h, "Openai-Organization")
	delete(h, "Openai-Project")
	if k.cred.ServiceAccount() {
		return
	}
	if k.cred.org != "" {
		h["Openai-Organization"] = []string{k.cred.org}
	}
	if k.cred.project != "" {
		h["Openai-Project"] = []string{k.cred.project}
	}
}

// modelSet is one model list and its families. Keys of one organization
// list the same models, so a pool of thousands of keys holds a few sets; the
// maps are never changed once built.
type modelSet struct {
	models, families map[string]bool
}

// internModels returns the shared set for a sorted model list. Requires p.mu.
func (p *Pool) internModels(models []string) *modelSet {
	name := strings.Join(models, "\n")
	if set := p.modelSets[name]; set != nil {
		return set
	}
	set := &modelSet{models: make(map[string]bool, len(models)), families: map[string]bool{}}
	for _, m := range models {
		set.models[m] = true
		set.families[ModelFamily(m)] = true
	}
	if len(p.modelSets) >= 1024 {
		clear(p.modelSets) // sets in use stay alive through their keys
	}
	p.modelSets[name] = set
	return set
}

// inPoolOrder returns the results of keys in the pool's order, each clone
// right after the key it was cloned from.
func (p *Pool) inPoolOrder(keys []*key, results map[*key]CheckResult) []CheckResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]CheckResult, 0, len(results))
	added := map[*key]bool{}
	var add func(k *key)
	add = func(k *key) {
		if r, ok := results[k]; ok && !added[k] {
			added[k] = true
			out = append(out, r)
			for _, id := range r.Clones {
				if cl := p.byID[id]; cl != nil {
					add(cl)
				}
			}
		}
	}
	for _, k := range p.keys {
		if !k.clone {
			add(k)
		}
	}
	for _, k := range keys { // clones whose parent was not in this pass
		add(k)
	}
	return out
}

// checkAzure checks a key of an Azure resource with one free call: GET
// /openai/models lists what the resource could deploy (a 401 there is a
// revoked key). Its list is not what the key serves (that is the
// resource's deployments), so the key keeps no model list: any model is
// tried, and a missing deployment answers model_not_found.
func (c *Checker) checkAzure(ctx context.Context, k *key, res CheckResult, start time.Time) CheckResult {
	status, header, body, err := c.call(ctx, k, http.MethodGet, "/models", nil)
	if err != nil {
		return c.failed(res, k, err, start)
	}
	a := c.answer(k, status, header, body)
	out := c.t.policy.Classify(a)
	state, reason := probeVerdict(a, out)
	switch {
	case out == OutcomeSuccess:
		state, reason = StateReady, "checked"
	case reason == "unexpected":
		c.logf(slog.LevelInfo, "keypool: unexpected answer to the key check; letting the key through", k, "status", status)
		reason = fmt.Sprintf("checked (unexpected %d)", status)
	}
	return c.settled(res, k, state, reason, nil, a.Limits, start)
}
