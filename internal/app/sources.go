package app

import (
	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/config"
)

// KeySources returns where each key that serve would load comes from, by
// ID: the keys of file, else of ./config.yaml when present, else of
// OPENAI_KEY (see Load); none and no error when there is nothing to load.
// It reads the keys files. Commands that show key IDs from elsewhere
// (records) use it to say where each key is written; the keys of a
// config that changed since, and the organization clones the checker
// made, have none.
func KeySources(file string) (map[keypool.KeyID]string, error) {
	var ups []keypool.Upstream
	if file = ConfigFile(file); file != "" {
		cfg, err := config.Load(file)
		if err != nil {
			return nil, err
		}
		if ups, err = cfg.Upstreams(); err != nil {
			return nil, err
		}
	} else {
		keys, err := EnvKeys()
		if err != nil {
			return nil, err
		}
		ups = []keypool.Upstream{{Keys: keys}}
	}
	sources := map[keypool.KeyID]string{}
	for _, u := range ups {
		for _, k := range u.Keys {
			if k.Source() != "" {
				sources[k.ID()] = k.Source()
			}
		}
	}
	return sources, nil
}
