package config

import (
	"fmt"
	"os"

	"github.com/keypool/keypool"
)

// ReadKeysFile reads the keys file at path with keypool.ReadKeys: one key a
// line, # comments. Its errors name the line and the file, never a key.
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
