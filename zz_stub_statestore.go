package keypool

// STUB, to be deleted at merge: a compile-only stand-in for the root
// helper's WithStateStore (issue 15), so that internal/app builds on the
// records branch. It keeps nothing and loads nothing; the real option (New
// loads once, the pool saves each change) replaces this file.
func WithStateStore(s StateStore) Option {
	return optionFunc(func(*config) error { return nil })
}
