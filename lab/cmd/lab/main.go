// Command lab is xdplab's one entry point: it serves the systems under test,
// builds topologies, fetches kernels and boots them.
//
// Each subcommand lives in its own file and registers itself in init, so a
// new command is one new file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type command struct {
	name    string // may contain a space: "kv serve"
	summary string
	run     func(args []string) error
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

// usageError is an error whose message is already the whole one-line answer.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usage() {
	fmt.Fprintln(os.Stderr, "usage: lab COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-16s %s\n", n, commands[n].summary)
	}
}

// lookup finds the longest registered command that prefixes args.
func lookup(args []string) (command, []string, bool) {
	for n := len(args); n > 0; n-- {
		if c, ok := commands[strings.Join(args[:n], " ")]; ok {
			return c, args[n:], true
		}
	}
	return command{}, nil, false
}

func main() {
	args := os.Args[1:]
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage()
		os.Exit(2)
	}
	c, rest, ok := lookup(args)
	if !ok {
		fmt.Fprintf(os.Stderr, "lab: unknown command %q (run 'lab help' for the list)\n", strings.Join(args, " "))
		os.Exit(2)
	}
	if err := c.run(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintf(os.Stderr, "lab %s: %v\n", c.name, err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// exitError carries an exit code through without printing anything, for
// commands that propagate a child's status (lab vm run).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// newFlags returns a FlagSet for a subcommand; parse it with parseFlags.
func newFlags(name string) *flag.FlagSet {
	return flag.NewFlagSet("lab "+name, flag.ContinueOnError)
}

// parseFlags parses like fs.Parse, but a bad flag is a one-line usage
// error (exit 2), and -h prints the flags.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(os.Stderr)
		fmt.Fprintf(os.Stderr, "usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return usageError{fmt.Sprintf("%v (see '%s -h')", err, fs.Name())}
	}
	return nil
}
