package keypool

// What the pool learns from model_not_found answers is bounded: a client
// may name any number of models that do not exist, and each one's answer
// must not grow the pool. A key whose answers name its organization (the
// openai-organization and openai-project headers) learns for that whole
// scope at once, so the next keys of the scope are not asked again; a key
// whose scope is not known learns for itself.

const (
	// maxKeyLacks bounds the models one key remembers it lacks.
	maxKeyLacks = 32
	// maxScopeLacks bounds the models one scope remembers it lacks.
	maxScopeLacks = 1024
	// maxScopeName bounds a scope's name, taken from answer headers.
	maxScopeName = 128
	// maxScopes bounds the scopes of one upstream that hold lacks.
	maxScopes = 1024
)

// lackSet is a bounded set of model names: past its capacity, the oldest
// name is forgotten (the key is then asked once more, at worst).
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
