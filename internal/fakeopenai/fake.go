// Package fakeopenai is an in-process fake of api.openai.com, the only upstream
// keypool's tests ever see.
//
// A Server answers for a set of scripted keys the way the real API does (see
// OPENAI-WIRE.md): error bodies, x-ratelimit-* headers computed from real
// buckets (refilling continuously, or counting in fixed windows), chat and
// Responses streams, embeddings, transcriptions. It records which key and
// organization served every request, so tests can assert where a client sent
// its traffic.
//
// Rate limits belong to organizations, not keys, as the real API's do: every
// key that lists an Org ID spends that organization's one pair of buckets
// (per model family for a PerModel key), so two keys of one org do not
// double its capacity. A key without Orgs has a personal org of its own, and
// so budgets of its own. A key with a Project and a ProjectTPM also spends
// its project's token bucket, shared by the keys of that org and project.
//
// Like the real API behind its CDN edge, a Server compresses every answer
// (gzip, or deflate when only that is accepted) whose request's
// Accept-Encoding allows it, JSON, errors and event streams alike, flushing
// the encoder after each event; Config.NoCompression turns this off. Note
// that Go's http.Transport asks for gzip on its own and decodes it
// transparently, unless the caller set Accept-Encoding itself.
//
// Most tests want NewTestServer; tests that run under testing/synctest serve a
// Server over ServePipe instead.
package fakeopenai

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Behavior is the script a Key follows. The account-level ones (Revoked,
// OverQuota, BillingInactive, Terminated) answer before any model check or
// bucket logic; the others shape how generation requests are served.
type Behavior int

const (
	// OK serves every request.
	OK Behavior = iota
	// Revoked answers every request with 401 invalid_api_key, the key masked in
	// the message.
	Revoked
	// OverQuota answers quota-spending requests with 429 insufficient_quota.
	// Listing models, /v1/me and /v1/organizations still work, as they do for a
	// real key without credit.
	OverQuota
	// BillingInactive answers quota-spending requests with 429
	// billing_not_active (code null); listings still work.
	BillingInactive
	// Terminated answers every request with 429 access_terminated.
	Terminated
	// Flaky fails generation requests number 1…FailFirst, then FailFirst+
	// FailEvery, FailFirst+2·FailEvery, … with Key.FailStatus (500 when 0).
	// Only requests that pass validation and the model check are counted; the
	// failures carry no rate-limit headers and charge nothing.
	Flaky
	// SlowHeaders waits Key.Delay before handling a generation request (before
	// the buckets are consulted), or until the client goes away.
	SlowHeaders
	// StreamHang writes 200 headers of a stream and then nothing until the
	// client goes away; a non-stream request waits for the client to go away.
	StreamHang
	// StreamErrorFirst sends a 200 stream whose first event is a server_error;
	// a non-stream request gets a 500.
	StreamErrorFirst
	// StreamErrorMidway sends a few normal stream events, then a server_error
	// event, and ends the stream without its normal ending. Non-stream
	// requests are served normally.
	StreamErrorMidway
)

var behaviorNames = [...]string{"OK", "Revoked", "OverQuota", "BillingInactive", "Terminated",
	"Flaky", "SlowHeaders", "StreamHang", "StreamErrorFirst", "StreamErrorMidway"}

func (b Behavior) String() string {
	if b >= 0 && int(b) < len(behaviorNames) {
		return behaviorNames[b]
	}
	return fmt.Sprintf("Behavior(%d)", int(b))
}

// Org is an organization a key belongs to. The org, not the key, owns the
// request and token buckets: every key that lists the same ID spends the same
// buckets, as keys of one real organization do.
//
// An org is one thing however many keys list it: its Title, Slug, RPM, TPM
// and Window are those of the first key added that lists the ID, any field
// that key left zero filled in from the next keys that set it (an org that
// no other key lists is defined afresh by a key that replaces its only key).
// Default is each key's own.
type Org struct {
	ID       string // "org-…"; sent back in OpenAI-Organization checks and 429 messages
	Title    string
	Slug     string // the openai-organization response header and the name in /v1/me and /v1/organizations; "" = derived from Title (or ID)
	Default  bool   // this key's org charged when no OpenAI-Organization header is sent; none marked = the first
	RPM, TPM int    // the org's limits; 0 = those of the key whose request first created the org's buckets
	// Window, when > 0, makes the org's requests bucket count in fixed
	// windows of this length; 0 = as the key that first created the buckets
	// says (Key.Window).
	Window time.Duration
}

// Key is one scripted API key. The zero value of every field but Secret means
// "an ordinary paid key that serves DefaultModels in one personal org".
type Key struct {
	Secret   string
	Behavior Behavior

	// Trial makes the requests bucket a per-DAY bucket of 200 (or RPM) and the
	// token bucket 40000 (or TPM) per minute, and adds the free-tier sentence
	// to rate-limit messages.
	Trial bool
	// RPM and TPM size the buckets of the key's orgs when the Org sets no
	// limit of its own; 0 = 3000 and 150000 (200 and 40000 for a trial). RPM
	// is requests per day for a trial. The buckets belong to the org: the
	// first request to draw on them sizes them, from its org's RPM and TPM
	// when set, else from its key's; later keys' RPM, TPM, Trial and Window
	// do not resize them.
	RPM, TPM int
	// PerModel gives every model family (a model id without its dated
	// snapshot suffix) its own buckets in each org, as the real API limits
	// each model separately. false = all models of an org share one pair of
	// buckets. Keys of one org should agree on it: each key's requests draw on
	// the buckets its own PerModel names.
	PerModel bool
	// Window, when > 0, makes the requests bucket count in fixed windows of
	// this length instead of refilling continuously, as many
	// OpenAI-compatible services (and per-day limits) do: it holds RPM (or the
	// org's RPM; the defaults above otherwise) requests per window, windows
	// start when the bucket is created, remaining is the limit less what the
	// current window spent, x-ratelimit-reset-requests counts down to the
	// window's end whatever is spent, and nothing frees before that end, when
	// the bucket is full again. An Org's Window wins over the key's. 0 =
	// continuous refill (per minute, or per day for a trial). The token
	// bucket always refills continuously.
	Window time.Duration
	// NoRetryAfter leaves the Retry-After header off this key's 429s, as
	// some services do; the message and the reset headers still tell the
	// wait.
	NoRetryAfter bool

	// Project, when set ("proj_…"), is the project the key belongs to in
	// each of its orgs: every answer to the key names it in openai-project,
	// and a request whose OpenAI-Project header names another project gets
	// 401 mismatched_project. "" = no project (the header is then accepted
	// and ignored).
	Project string
	// ProjectTPM is the project's own tokens-per-minute limit, below its
	// org's: the keys of one org and one Project share one project token
	// bucket (per model family with PerModel), which a request must fit as
	// well as its org's buckets, and answers carry
	// x-ratelimit-{limit,remaining,reset}-project-tokens. As with org
	// buckets, the first request to draw on it sizes it. 0 = no project
	// limit: the project's keys spend only their org's buckets.
	ProjectTPM int

	Models []string // nil = DefaultModels()
	Orgs   []Org    // nil = one personal default org derived from Secret

	// Unverified marks the key's organization as not verified: gpt-image-1 gets
	// a 403 and streaming a gpt-5-class or o3 model gets a 400.
	Unverified bool

	// StreamInterval paces streams: the pause before each stream event after
	// the first, so that a stream takes time as a real one does. 0 = no
	// pause. A pause ends early when the client goes away (the stream stops)
	// or the Server is closed (the rest is sent at once).
	StreamInterval time.Duration

	// StreamCutShort ends a Replicate prediction's event stream after a
	// few output events without its done event, as a dropped connection
	// does.
	StreamCutShort bool

	Delay                            time.Duration // SlowHeaders
	FailFirst, FailEvery, FailStatus int           // Flaky; FailStatus 0 = 500
}

// Config configures a Server. The zero value is ready to use.
type Config struct {
	// Now is the clock for the buckets, records and timestamps; nil = time.Now.
	Now func() time.Time

	// NoCompression sends every answer as plain bytes, whatever the request's
	// Accept-Encoding says. false (the zero value) = compress like the real
	// API: gzip when the request accepts it, else deflate when it accepts
	// that, with Content-Encoding and Vary: Accept-Encoding set; a request
	// without Accept-Encoding, or accepting only identity, gets plain bytes.
	NoCompression bool
}

// Record is what the Server saw and answered for one request.
type Record struct {
	Time         time.Time
	Method, Path string
	Key          string // the secret as sent ("" when missing)
	Org          string // the OpenAI-Organization header as sent ("" if none)
	OrgUsed      string // the org the request was attributed to once the key and org header were accepted; its buckets are the ones consulted
	Project      string // the OpenAI-Project header as sent
	Model        string
	Stream       bool
	Status       int  // 499 when the client went away before any answer
	Spent        bool // a completion, response, embedding, transcription or image was served in full (quota spent)

	PromptTokens, CompletionTokens int

	// Deployment is the Azure deployment a request on an Azure path named
	// ("" for OpenAI's paths); Path is then the Azure path as sent.
	Deployment string

	// Encoding is the Content-Encoding the answer was sent in: "gzip" or
	// "deflate" when it was compressed, "" for plain bytes (or no answer).
	Encoding string
}

// Server is a fake api.openai.com. Create it with New (or NewTestServer); it is
// an http.Handler serving the /v1 API. It is safe for simultaneous use by
// multiple goroutines: keys can be added and re-scripted while it serves.
type Server struct {
	now       func() time.Time
	closed    chan struct{}
	closeOnce sync.Once

	noCompression bool // Config.NoCompression
	encoders      writerPools

	mu          sync.Mutex // guards everything below, and every Record reachable from records
	keys        map[string]*keyState
	orgs        map[string]*orgState // every org some key lists, by ID
	buckets     map[bucketID]*limits // orgs' buckets (bucketID.project "")
	projects    map[bucketID]*bucket // projects' token buckets
	deployments map[string]string    // Azure deployment → model
	records     []*Record
	seq         uint64
	// predictions are Replicate's, by ID (replicate.go).
	predictions map[string]*replicatePrediction
	inFlight    int
}

// keyState is a key's script and its mutable state. The script fields never
// change once built except Behavior (SetBehavior), so handlers may read
// models and orgs without the lock.
type keyState struct {
	key       Key
	models    map[string]bool
	modelList json.RawMessage // the /v1/models answer
	orgs      []Org           // as the key lists them; Server.org resolves one to the org's own description
	flaky     int             // generation requests seen by the Flaky script; guarded by Server.mu
	// defaultModels: the key's Models was nil, so it serves
	// ReplicateModels on Replicate's routes too.
	defaultModels bool
}

// orgState is one organization: its description, merged from the keys that
// list it, and how many of the Server's keys list it.
type orgState struct {
	org  Org
	keys int
}

// New returns a Server that answers for keys.
func New(cfg Config, keys ...Key) *Server {
	s := &Server{now: cfg.Now, noCompression: cfg.NoCompression, closed: make(chan struct{}), keys: map[string]*keyState{},
		orgs: map[string]*orgState{}, buckets: map[bucketID]*limits{}, projects: map[bucketID]*bucket{}, deployments: map[string]string{}}
	if s.now == nil {
		s.now = time.Now
	}
	for _, k := range keys {
		s.AddKey(k)
	}
	return s
}

// AddKey adds k, or replaces the key with the same Secret (its Flaky count
// starts afresh). Buckets belong to orgs, not keys: the buckets (and project
// buckets) of an org that no other key lists start afresh, a personal org's
// among them, while an org shared with other keys keeps what they spent. It
// is safe while serving. An empty Secret panics.
func (s *Server) AddKey(k Key) {
	if k.Secret == "" {
		panic("fakeopenai: AddKey: empty Secret")
	}
	ks := newKeyState(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []string // orgs the replaced key listed
	if old := s.keys[k.Secret]; old != nil {
		for _, o := range old.orgs {
			s.orgs[o.ID].keys--
			gone = append(gone, o.ID)
		}
	}
	fresh := map[string]bool{} // orgs whose buckets start afresh
	for _, o := range ks.orgs {
		st := s.orgs[o.ID]
		if st == nil || st.keys == 0 { // no other key lists it: k defines it
			if st != nil { // the replaced key's alone: it may have buckets
				fresh[o.ID] = true
			}
			st = &orgState{org: o}
			s.orgs[o.ID] = st
		} else {
			st.org.fill(o)
		}
		st.keys++
	}
	s.keys[k.Secret] = ks
	for _, id := range gone {
		if s.orgs[id].keys == 0 {
			delete(s.orgs, id)
			fresh[id] = true
		}
	}
	if len(fresh) == 0 {
		return
	}
	for id := range s.buckets {
		if fresh[id.org] {
			delete(s.buckets, id)
		}
	}
	for id := range s.projects {
		if fresh[id.org] {
			delete(s.projects, id)
		}
	}
}

// SetBehavior changes the script of the key with secret while serving and
// restarts its Flaky count. An unknown secret panics.
func (s *Server) SetBehavior(secret string, b Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys[secret]
	if ks == nil {
		panic("fakeopenai: SetBehavior: unknown key")
	}
	ks.key.Behavior = b
	ks.flaky = 0
}

// Records returns a copy of what the Server saw, in arrival order. A request
// still being served shows its status so far.
func (s *Server) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, len(s.records))
	for i, r := range s.records {
		out[i] = *r
	}
	return out
}

// Reset forgets the records (buckets and scripts are kept).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = nil
}

// Count is the number of recorded requests sent with secret, whatever their status.
func (s *Server) Count(secret string) int {
	return s.countRecords(func(r *Record) bool { return r.Key == secret })
}

// Completions is the number of recorded requests of secret that spent quota:
// a generation, embedding, transcription or image served in full.
func (s *Server) Completions(secret string) int {
	return s.countRecords(func(r *Record) bool { return r.Key == secret && r.Spent })
}

func (s *Server) countRecords(match func(*Record) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.records {
		if match(r) {
			n++
		}
	}
	return n
}

// InFlight is the number of requests being served right now. Tests use it to
// see that a hanging stream ended once its client went away.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// Close releases every handler that is waiting (SlowHeaders, StreamHang) so
// that an httptest.Server can shut down. Later requests are still answered,
// but no longer wait.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

// DefaultModels returns the model ids a Key serves when its Models is nil.
func DefaultModels() []string {
	return []string{
		"gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5-chat-latest",
		"gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
		"o4-mini", "o3", "o3-mini", "o1", "o1-mini", "o1-pro", "o3-pro",
		"gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "chatgpt-4o-latest",
		"gpt-4-turbo", "gpt-4", "gpt-3.5-turbo",
		"gpt-image-1", "dall-e-2", "dall-e-3",
		"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
		"whisper-1", "gpt-4o-transcribe", "tts-1", "tts-1-hd", "gpt-4o-mini-tts",
		"omni-moderation-latest", "babbage-002", "davinci-002",
	}
}

// NewTestServer starts New(cfg, keys...) on an httptest.Server (127.0.0.1),
// closes both when t ends, and returns the Server and the base URL ending in "/v1".
func NewTestServer(t testing.TB, cfg Config, keys ...Key) (*Server, string) {
	t.Helper()
	s := New(cfg, keys...)
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		s.Close()
		ts.Close()
	})
	return s, ts.URL + "/v1"
}

func newKeyState(k Key) *keyState {
	defaults := k.Models == nil
	k.Models = slices.Clone(k.Models)
	if k.Models == nil {
		k.Models = DefaultModels()
	}
	ks := &keyState{key: k, models: map[string]bool{}, defaultModels: defaults}
	for _, m := range k.Models {
		ks.models[m] = true
	}
	ks.modelList = modelList(k.Models)
	ks.orgs = slices.Clone(k.Orgs)
	if len(ks.orgs) == 0 {
		ks.orgs = []Org{{
			ID:      "org-" + digest("org", k.Secret)[:24],
			Title:   "Personal",
			Slug:    "user-" + digest("user", k.Secret)[:24],
			Default: true,
		}}
	}
	if !slices.ContainsFunc(ks.orgs, func(o Org) bool { return o.Default }) {
		ks.orgs[0].Default = true
	}
	return ks
}

// defaultOrg is the org charged when no OpenAI-Organization header is sent.
func (ks *keyState) defaultOrg() Org {
	i := slices.IndexFunc(ks.orgs, func(o Org) bool { return o.Default })
	return ks.orgs[i]
}

func (ks *keyState) org(id string) (Org, bool) {
	i := slices.IndexFunc(ks.orgs, func(o Org) bool { return o.ID == id })
	if i < 0 {
		return Org{}, false
	}
	return ks.orgs[i], true
}

// org is o as the Server knows it: the org's own description (merged from
// every key that lists it) with o's Default. It requires Server.mu held.
func (s *Server) org(o Org) Org {
	if st := s.orgs[o.ID]; st != nil {
		def := o.Default
		o = st.org
		o.Default = def
	}
	return o
}

// fill sets the fields of o that are zero from from; ID and Default are left alone.
func (o *Org) fill(from Org) {
	if o.Title == "" {
		o.Title = from.Title
	}
	if o.Slug == "" {
		o.Slug = from.Slug
	}
	if o.RPM == 0 {
		o.RPM = from.RPM
	}
	if o.TPM == 0 {
		o.TPM = from.TPM
	}
	if o.Window == 0 {
		o.Window = from.Window
	}
}

// slug is what the openai-organization header says for o: a slug, never the org- id.
func (o Org) slug() string {
	if o.Slug != "" {
		return o.Slug
	}
	src := o.Title
	if src == "" {
		src = strings.TrimPrefix(o.ID, "org-")
	}
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(src) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// digest is a stable hex name derived from parts, for ids that must look real
// and stay the same across runs.
func digest(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:])
}
