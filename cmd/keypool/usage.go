package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Exit statuses, as kubectl, gh and most Unix tools use them: a script can
// tell "you called it wrong" from "it ran and failed".
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed: no usable key, a store that is down
	exitUsage   = 2 // the command line is wrong: unknown command or flag, a bad value
)

// usageError is a mistake in the command line. run exits with exitUsage for
// one, exitFailure for any other error.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf returns a usageError with a formatted message.
func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// asUsage marks err, if not nil, as a usage error.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	var u *usageError
	if errors.As(err, &u) {
		return err
	}
	return &usageError{err}
}

// exitCode is the exit status for the error a command returned.
func exitCode(err error) int {
	var u *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &u):
		return exitUsage
	}
	return exitFailure
}

// markUsageErrors makes every way cobra refuses a command line a
// usageError, for root and every command under it: bad flags and flag
// values (the flag error func), arguments a command does not take (each
// Args), and flags given together that must not be, or required ones
// left out (checked in root's PersistentPreRunE, before cobra checks them
// again after it with errors of no type). cobra's own commands
// (completion, help) are added first, so that they are marked too.
func markUsageErrors(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return asUsage(err) })
	prev := root.PersistentPreRunE
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if err := cmd.ValidateRequiredFlags(); err != nil {
			return asUsage(err)
		}
		if err := cmd.ValidateFlagGroups(); err != nil {
			return asUsage(err)
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		// cobra sets this default only on the path of its own message.
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2
		}
		if !c.Runnable() && c.HasSubCommands() {
			// cobra shows the help of a command that only groups others,
			// and exits 0, before it looks at the arguments: so "keypool
			// completion tcsh" would succeed.
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
			if c.Args == nil {
				c.Args = unknownCommand
			}
		}
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error { return asUsage(args(cmd, a)) }
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// unknownCommand is root's Args: cobra's own check of a root command's
// arguments (an unknown command) returns an error of no type.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageErrorf("%s", msg)
}

// enumValue is a string flag that takes one of a fixed list of values: a
// value not in the list is refused while flags are parsed (a usage
// error), and shells complete the list (enumFlag).
type enumValue struct {
	value   *string
	allowed []string
}

func (e *enumValue) String() string { return *e.value }
func (e *enumValue) Type() string   { return "string" }

func (e *enumValue) Set(s string) error {
	s = strings.ToLower(strings.TrimSpace(s))
	if !slices.Contains(e.allowed, s) {
		// The value is not repeated: cobra's message around this one
		// already quotes it, and the scrubber hides a key typed here.
		return fmt.Errorf("must be one of %s", strings.Join(e.allowed, ", "))
	}
	*e.value = s
	return nil
}

// enumFlag defines the string flag name on cmd, taking one of allowed
// ("" stays possible as the default), with completion of those values.
func enumFlag(cmd *cobra.Command, p *string, name, usage string, allowed ...string) {
	cmd.Flags().Var(&enumValue{value: p, allowed: allowed}, name, usage+" ("+strings.Join(allowed, ", ")+")")
	completeValues(cmd, name, allowed...)
}

// completeValues makes shells offer values for the flag name of cmd, and
// no file names.
func completeValues(cmd *cobra.Command, name string, values ...string) {
	// Registering twice, or a flag that does not exist, is a programmer's
	// mistake that every test run would catch.
	if err := cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)); err != nil {
		panic(err)
	}
}
