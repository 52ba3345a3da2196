package server_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/secret"
	"github.com/keypool/keypool/internal/server"
)

// ExampleNew serves the pool of a transport to clients that present the
// token "tok-1"; a client without it gets OpenAI's 401.
func ExampleNew() {
	tr, err := keypool.New(keypool.WithUpstream("https://api.openai.com/v1", "sk-example"))
	if err != nil {
		panic(err)
	}
	s, err := server.New(server.Options{Transport: tr, Tokens: []secret.String{secret.New("tok-1")}})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	// Output: 401 application/json
}
