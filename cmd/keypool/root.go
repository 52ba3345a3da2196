package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/keypool/keypool/internal/secret"
)

// newRootCmd returns the keypool command, printing to stdout and stderr.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "keypool",
		Short: "A pool of OpenAI API keys as one reliable client",
		Long: `keypool turns a pool of OpenAI API keys into one reliable client: every
request gets the best key available and fails over when a key is revoked, out
of quota, rate-limited or failing.

Keys are always shown by their ID (kp_…), never by their secret.

Exit status: 0 on success, 1 when a command ran and failed, 2 for a mistake
in the command line (an unknown command or flag, a bad value).`,
		Version: moduleVersion(),
		// run prints the error once; usage is for --help.
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          unknownCommand,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	// --version, long only: -v is "verbose" in most tools, and cobra would
	// take it for --version when no command defines -v.
	root.Flags().Bool("version", false, "print keypool's version (keypool version tells more)")
	root.SetVersionTemplate("keypool {{.Version}}\n")
	root.AddCommand(newCheckCmd(), newDemoCmd(), newIDCmd(), newKeysCmd(), newRecordsCmd(), newServeCmd(), newVersionCmd())
	// Before markUsageErrors: cobra's completion command, which it adds,
	// keeps the writer it finds when made.
	root.SetOut(stdout)
	root.SetErr(stderr)
	markUsageErrors(root)
	return root
}

// run executes the CLI with args and returns the exit status: 0; 1 after
// printing the error of a command that failed on stderr; 2 after printing
// a mistake in the command line and where to read the usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "keypool:", secret.NewScrubber(givenSecrets(args)...).Scrub(err.Error()))
	code := exitCode(err)
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// givenSecrets lists the secrets a run was given: the keys of OPENAI_KEY,
// KEYPOOL_ADMIN_TOKEN, FEISHU_WEBHOOK, --admin-token's value, and every
// argument that is a key (sk-…), alone, after "=" or in a comma-separated
// list. The library and the config never put one in an error, but cobra's
// own messages repeat a flag's value or an unknown command, and a key may
// have been typed in the wrong place.
func givenSecrets(args []string) []string {
	out := []string{os.Getenv("KEYPOOL_ADMIN_TOKEN"), os.Getenv("FEISHU_WEBHOOK")}
	out = append(out, strings.Split(os.Getenv("OPENAI_KEY"), ",")...)
	for i, arg := range args {
		if value, ok := strings.CutPrefix(arg, "--admin-token="); ok {
			out = append(out, value)
		} else if arg == "--admin-token" && i+1 < len(args) {
			out = append(out, args[i+1])
		}
		for _, part := range strings.FieldsFunc(arg, func(r rune) bool { return r == '=' || r == ',' || unicode.IsSpace(r) }) {
			if strings.HasPrefix(part, "sk-") {
				out = append(out, part)
			}
		}
	}
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	return out
}
