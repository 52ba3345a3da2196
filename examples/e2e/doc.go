// Package e2e holds end-to-end tests: the official openai-go client and
// github.com/sashabaranov/go-openai, as real clients, against the keypool
// proxy (or the keypool transport used as a library) over the fake upstream.
// It has no code of its own outside its tests.
//
// It lives in the examples module so that the SDKs are requirements of the
// examples, not of the library. It may use the library's internal packages
// (the proxy handler, the fake upstream): this module's path lies below the
// library's, and Go allows an internal package to be imported from anywhere
// below the directory that holds it.
package e2e
