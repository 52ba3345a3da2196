// Package e2e holds end-to-end tests: the official openai-go client and
// github.com/sashabaranov/go-openai, as real clients, against the keypool
// proxy (or the keypool transport used as a library) over the fake upstream.
// It has no code of its own outside its tests.
package e2e
