package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keypool/keypool"
	"github.com/keypool/keypool/internal/app"
)

func newIDCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "id [FILE | -]...",
		Short: "Print the ID (kp_…) of keys, to find the key behind an ID",
		Long: `id prints the ID that keypool shows for each key (in check, keys, records,
metrics and logs), with where the key was read: one line "kp_… SOURCE" per
key, never the key itself.

Keys come from the files named (one key per line, # comments, as keys_file),
from stdin with -, or with no argument from OPENAI_KEY (comma-separated).
SOURCE is FILE:LINE, stdin:LINE or OPENAI_KEY[N], N counted from 1.
A key in a config's sk or keys has the ID its line would give here.

Keys are not read from a terminal (they would show on screen, and in the
scrollback): pipe them in. A line that is not a key is an error that names
its line number, not its text.`,
		Example: `  keypool id                     # the keys of OPENAI_KEY
  keypool id keys.txt | grep kp_0746b34a640078cd
  pass show openai/keys | keypool id -`,
		// Arguments are file names; one that is not a file may be a key
		// typed in the wrong place, so no error repeats it.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runID(cmd.OutOrStdout(), cmd.InOrStdin(), args)
		},
	}
}

// runID prints the ID and source of every key that args name (see newIDCmd).
func runID(out io.Writer, stdin io.Reader, args []string) error {
	var keys []keypool.Key
	if len(args) == 0 {
		env, err := app.EnvKeys()
		if err != nil {
			return fmt.Errorf("id: %w", err)
		}
		if env == nil {
			return errors.New("id: no keys: name a keys file, pass - to read them from stdin, or set OPENAI_KEY")
		}
		keys = env
	}
	for i, arg := range args {
		more, err := idKeys(arg, i+1, stdin)
		if err != nil {
			return err
		}
		keys = append(keys, more...)
	}
	if len(keys) == 0 {
		return errors.New("id: no keys read (only blank lines and comments)")
	}
	for _, k := range keys {
		if _, err := fmt.Fprintf(out, "%s %s\n", k.ID(), dash(k.Source())); err != nil {
			return err
		}
	}
	return nil
}

// idKeys reads the keys of argument n, arg: a file, or stdin for "-".
func idKeys(arg string, n int, stdin io.Reader) ([]keypool.Key, error) {
	if arg == "-" {
		if f, ok := stdin.(interface{ Fd() uintptr }); ok && term.IsTerminal(int(f.Fd())) {
			return nil, errors.New("id: stdin is a terminal: pipe the keys in (keys typed here would show on screen)")
		}
		keys, err := keypool.ReadKeys(namedReader{stdin, "stdin"})
		if err != nil {
			return nil, fmt.Errorf("id: stdin: %w", err)
		}
		return keys, nil
	}
	f, err := os.Open(arg)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // its path is the argument, which may be a key
		}
		return nil, fmt.Errorf("id: argument %d is not a keys file you can read (%w); id never takes keys as arguments: pipe them to keypool id -", n, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("id: argument %d is a directory, not a keys file", n)
	}
	keys, err := keypool.ReadKeys(f)
	if err != nil {
		return nil, fmt.Errorf("id: %s: %w", arg, err)
	}
	return keys, nil
}

// namedReader gives a reader the name keypool.ReadKeys puts in its keys'
// sources ("stdin:3").
type namedReader struct {
	io.Reader
	name string
}

func (r namedReader) Name() string { return r.name }
