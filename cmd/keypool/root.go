package main

import (
	"context"
	"fmt"
	"io"
	"regexp"

	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "keypool",
		Short: "A pool of OpenAI API keys as one reliable client",
		Long: `keypool turns a pool of OpenAI API keys into one reliable client: every
request gets the best key available and fails over when a key is revoked, out
of quota, rate-limited or failing.

Keys are always shown by their ID (kp_…), never by their secret.`,
		Version: moduleVersion(),
		// run prints the error once; usage is for --help.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.AddCommand(newCheckCmd(), newDemoCmd(), newKeysCmd(), newRecordsCmd(), newServeCmd(), newVersionCmd())
	return root
}

// run executes the CLI with args and returns the exit status: 0, or 1 after
// printing the error on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "keypool:", keyShaped.ReplaceAllString(err.Error(), "sk-…"))
		return 1
	}
	return 0
}

// keyShaped matches text that looks like an OpenAI key. The library and the
// config never put one in an error, but cobra's own messages repeat a flag's
// value, and a key may have been typed in the wrong place.
var keyShaped = regexp.MustCompile(`sk-[A-Za-z0-9_-]+`)
