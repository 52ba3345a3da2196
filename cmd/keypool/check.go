package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
	"github.com/keypool/keypool/internal/config"
)

func newCheckCmd() *cobra.Command {
	var (
		keysFile, configFile, baseURL string
		jsonOut                       bool
		rate                          float64
		concurrency                   int
		timeout                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check keys and print their state, spending no quota",
		Long: `check asks the upstream about every key, as the keypool checker does: its
organizations (a key with several gets a clone per extra organization), its
models, and a deliberately invalid request that OpenAI refuses before it costs
anything, whose answer tells a live key from a revoked or over-quota one, and a
trial key from a paid one. No completion is ever spent.

Keys come from --config FILE (every upstream of a keypool or openai-api-route
config), from --keys-file FILE (one key per line, # comments), or else from
OPENAI_KEY (comma-separated). Keys without a config go to --base-url, which
defaults to OPENAI_BASE_URL, else ` + config.DefaultEndpoint + `.

Progress goes to stderr; the table (or --json) to stdout, keys shown by ID only.
The exit status is 1 when no key ended up usable.`,
		Example: `  OPENAI_KEY=sk-…,sk-… keypool check
  keypool check --keys-file keys.txt --json
  keypool check --config config.yaml --rate 2`,
		// Not cobra.NoArgs: its message repeats the argument, and a stray
		// argument here is likely a key.
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return errors.New("check takes no arguments; give keys with OPENAI_KEY, --keys-file or --config")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return usageErrorf("--timeout must be positive")
			}
			if rate <= 0 {
				return usageErrorf("--rate must be positive")
			}
			if concurrency < 1 {
				return usageErrorf("--concurrency must be at least 1")
			}
			ups, cfg, err := checkSources(configFile, keysFile, baseURL)
			if err != nil {
				return err
			}
			var opts []keypool.CheckOption
			if cfg != nil {
				opts = app.CheckerOptions(cfg)
				for _, w := range cfg.Warnings {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
				}
			}
			// Flags win over the config; without a config they are the settings.
			if cfg == nil || cmd.Flags().Changed("rate") {
				opts = append(opts, keypool.WithCheckRate(rate))
			}
			if cfg == nil || cmd.Flags().Changed("concurrency") {
				opts = append(opts, keypool.WithCheckConcurrency(concurrency))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return runCheck(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), ups, opts, jsonOut)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "check every upstream of this config `file`")
	f.StringVar(&keysFile, "keys-file", "", "check the keys in this `file`, one per line")
	f.StringVar(&baseURL, "base-url", "", "upstream of OPENAI_KEY and --keys-file (default $OPENAI_BASE_URL, else "+config.DefaultEndpoint+")")
	f.BoolVar(&jsonOut, "json", false, "print a JSON array instead of a table")
	f.Float64Var(&rate, "rate", 5, "key checks started per second")
	f.IntVar(&concurrency, "concurrency", 4, "key checks in flight at once")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "time limit of the whole run")
	cmd.MarkFlagsMutuallyExclusive("config", "keys-file")
	cmd.MarkFlagsMutuallyExclusive("config", "base-url")
	return cmd
}

// checkSources gathers the upstreams to check: a config's, a keys file's, or
// OPENAI_KEY's, in that order of preference. The config is returned too, for
// its checker settings.
func checkSources(configFile, keysFile, baseURL string) ([]keypool.Upstream, *config.Config, error) {
	if configFile != "" {
		// Only the upstreams and the checker: a check has no use for the
		// admin token or the client tokens, set or not.
		cfg, err := config.LoadSections(configFile, config.UpstreamsSection)
		if err != nil {
			return nil, nil, err
		}
		ups, err := cfg.Upstreams()
		if err != nil {
			return nil, nil, err
		}
		if len(ups) == 0 {
			return nil, nil, fmt.Errorf("%s: no upstreams, so no keys to check", configFile)
		}
		return ups, cfg, nil
	}
	var keys []keypool.Key
	var err error
	if keysFile != "" {
		keys, err = config.ReadKeysFile(keysFile)
		if err == nil && len(keys) == 0 {
			err = fmt.Errorf("%s holds no key", keysFile)
		}
	} else if keys, err = app.EnvKeys(); err == nil && keys == nil {
		err = errors.New("no keys to check: set OPENAI_KEY, or pass --keys-file FILE or --config FILE")
	}
	if err != nil {
		return nil, nil, err
	}
	return []keypool.Upstream{{BaseURL: app.BaseURL(baseURL), Keys: keys}}, nil, nil
}
