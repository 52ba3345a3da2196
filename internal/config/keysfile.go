package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/keypool/keypool"
)

// ReadKeysFile reads the keys file at path with keypool.ReadKeys: one key a
// line, # comments. Each key's source is "path:line". Its errors name the
// line and the file, never a key.
func ReadKeysFile(path string) ([]keypool.Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keypool: keys file: %w", err)
	}
	defer f.Close()
	keys, err := keypool.ReadKeys(f)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return keys, nil
}

// ParseKeyList parses a comma-separated list of keys (the OPENAI_KEY
// convention) with keypool.ParseKeys, and gives each key the source
// "label[N]": N is the key's place in the list, counted from 1 as the
// errors of ParseKeys count, over every entry between commas (empty ones
// too), so that an operator counting commas finds it. A key listed twice
// keeps its first place. Errors name the place, never a key.
func ParseKeyList(list, label string) ([]keypool.Key, error) {
	keys, err := keypool.ParseKeys(list)
	if err != nil || len(keys) == 0 {
		return keys, err
	}
	place := make(map[keypool.KeyID]int, len(keys))
	for i, entry := range strings.Split(list, ",") {
		if entry = strings.TrimSpace(entry); entry != "" {
			id := keypool.NewKey(entry).ID()
			if _, seen := place[id]; !seen {
				place[id] = i + 1
			}
		}
	}
	for i, k := range keys {
		keys[i] = k.WithSource(label + "[" + strconv.Itoa(place[k.ID()]) + "]")
	}
	return keys, nil
}
