// Package sdrcmd holds what the sdr-* subcommands share: usage errors that
// exit 2, and Caddy's logger for their messages, so that they behave like
// Caddy's own commands.
package sdrcmd

import (
	"fmt"
	"log/slog"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"go.uber.org/zap/exp/zapslog"
)

// ExitUsage is the exit status of a command given arguments or flags it
// does not take (an unknown subcommand, a stray argument), as with the
// shell's builtins; a command that ran and failed exits 1.
const ExitUsage = 2

// UsageError prints err and cmd's usage on stderr and returns an error that
// makes caddy exit with ExitUsage.
func UsageError(cmd *cobra.Command, err error) error {
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	fmt.Fprintf(cmd.ErrOrStderr(), "Error: %v\n%s", err, cmd.UsageString())
	return exitStatus(ExitUsage)
}

// exitStatus returns the error that makes caddy's main exit with code. The
// command wrapper of Caddy's cmd package is the only way to make one.
func exitStatus(code int) error {
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return code, nil })(&cobra.Command{}, nil)
}

// Args wraps a cobra argument check so that a failed one is a usage error.
func Args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return UsageError(cmd, err)
		}
		return nil
	}
}

// Strict makes cmd's argument and flag errors usage errors. check is its
// argument check (nil: no arguments).
func Strict(cmd *cobra.Command, check cobra.PositionalArgs) {
	if check == nil {
		check = cobra.NoArgs
	}
	cmd.Args = Args(check)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return UsageError(c, err) })
}

// Group makes cmd a command that only holds subcommands: run without one
// it prints its help; with an unknown one, a usage error.
func Group(cmd *cobra.Command) {
	cmd.Args = cobra.ArbitraryArgs
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return UsageError(c, err) })
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		return UsageError(c, fmt.Errorf("unknown subcommand %q for %q", args[0], c.CommandPath()))
	}
}

// Logger is Caddy's logger, named, as slog: a subcommand's messages look
// like those of caddy run.
func Logger(name string) *slog.Logger {
	return slog.New(zapslog.NewHandler(caddy.Log().Core(), zapslog.WithName(name)))
}

// Run makes a cobra RunE of f, which returns an exit status and an error as
// Caddy's command functions do: the error is logged through Caddy's logger
// and the status is the process's, as for Caddy's own commands. f gets the
// command (for its flags and output) and its arguments.
func Run(f func(cmd *cobra.Command, args []string) (int, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		code, err := f(cmd, args)
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return code, err })(cmd, args)
	}
}
