package keypool_test

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
)

type atomicBool struct{ v atomic.Bool }

func (b *atomicBool) set(x bool) { b.v.Store(x) }
func (b *atomicBool) get() bool  { return b.v.Load() }

func httptestServer(f http.HandlerFunc) *httptest.Server { return httptest.NewServer(f) }
