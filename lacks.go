package keypool

import "time"

// What the pool learns from model_not_found answers is bounded: a client
// may name any number of models that do not exist, and each one's answer
// must not grow the pool. A scope (an organization, or a key whose
// organization is not known) remembers the models it lacks; an upstream
// remembers for a while the models its keys said do not exist while none
// had shown it serves them, and answers requests for them at once.

const (
	// maxScopeLacks bounds the models one scope remembers it lacks.
	maxScopeLacks = 64
	// maxScopeName bounds a scope's name, taken from answer headers.
	maxScopeName = 128
	// maxMissing bounds the models an upstream holds missing.
	maxMissing = 1024
	// missingFor is how long an upstream holds a model missing.
	missingFor = 10 * time.Minute
)

// lackSet is a bounded set of model names: past its capacity, the oldest
// name is forgotten (a key is then asked once more, at worst).
type lackSet struct {
	set   map[string]bool
	order []string // oldest first
	max   int
}

func newLackSet(max int) *lackSet { return &lackSet{set: map[string]bool{}, max: max} }

// has reports whether s holds model; a nil set holds nothing.
func (s *lackSet) has(model string) bool { return s != nil && s.set[model] }

// add puts model in s, forgetting the oldest name when s is full.
func (s *lackSet) add(model string) {
	if s.set[model] {
		return
	}
	if len(s.order) >= s.max {
		delete(s.set, s.order[0])
		s.order = s.order[1:]
	}
	s.set[model] = true
	s.order = append(s.order, model)
}

// names returns the models of s, sorted; nil for an empty or nil set.
func (s *lackSet) names() []string {
	if s == nil || len(s.set) == 0 {
		return nil
	}
	return sortedKeys(s.set)
}

// missingSet holds the models an upstream's keys said do not exist: each
// gathers votes (one per scope that answered model_not_found) and, with
// enough, is held missing until it expires. Bounded: past maxMissing
// entries the oldest is forgotten.
type missingSet struct {
	m     map[string]*missingModel
	order []string // oldest first
}

type missingModel struct {
	votes   int
	voters  [missingVotes]*scope
	expires time.Time // zero while votes are gathered
}

func newMissingSet() *missingSet { return &missingSet{m: map[string]*missingModel{}} }

// has reports whether model is held missing at now.
func (s *missingSet) has(model string, now time.Time) bool {
	e := s.m[model]
	return e != nil && !e.expires.IsZero() && now.Before(e.expires)
}

// vote records that scope sc answered model_not_found for model, and holds
// the model missing once enough scopes (or every scope there is, when
// fewer) have said so.
func (s *missingSet) vote(model string, sc *scope, scopes int, now time.Time) {
	e := s.m[model]
	if e == nil || !e.expires.IsZero() && !now.Before(e.expires) {
		if e == nil {
			if len(s.order) >= maxMissing {
				delete(s.m, s.order[0])
				s.order = s.order[1:]
			}
			s.order = append(s.order, model)
		}
		e = &missingModel{}
		s.m[model] = e
	}
	for _, v := range e.voters[:e.votes] {
		if v == sc {
			return
		}
	}
	if e.votes < missingVotes {
		e.voters[e.votes] = sc
		e.votes++
	}
	if e.votes >= min(missingVotes, max(scopes, 1)) {
		e.expires = now.Add(missingFor)
	}
}

// forget drops model: a key has shown it exists.
func (s *missingSet) forget(model string) {
	if e := s.m[model]; e != nil {
		delete(s.m, model)
		// order keeps its name until it comes round; deleting it there
		// would cost a search, and a stale name only frees a slot early.
	}
}
