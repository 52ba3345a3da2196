package config_test

import (
	"fmt"

	"github.com/keypool/keypool/internal/config"
)

func ExampleParse() {
	file := `
authorization: tok1,tok2
timeout: 120
upstreams:
  - sk: "sk-a,sk-b"
    endpoint: https://api.openai.com/v1
    deny: ["o1*"]
`
	cfg, err := config.Parse([]byte(file), "config.yaml", ".")
	if err != nil {
		fmt.Println(err)
		return
	}
	ups, _ := cfg.Upstreams()
	fmt.Println(len(ups[0].Keys), "keys,", ups[0].Timeout, "timeout, tokens", cfg.Authorization)

	_, err = config.Parse([]byte("upstreams:\n  - sk: sk-a\n    endpiont: https://api.openai.com/v1\n    type: azure\n"), "config.yaml", ".")
	fmt.Println(err)
	// Output:
	// 2 keys, 2m0s timeout, tokens [[redacted] [redacted]]
	// config.yaml:3: unknown field "endpiont" in upstream 1 (did you mean "endpoint"?)
	// config.yaml:2: upstream 1: type azure needs an endpoint: the resource, such as https://NAME.openai.azure.com
}
