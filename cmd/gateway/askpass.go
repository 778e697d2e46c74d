package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/tokengate/tokengate/client"
)

func askpassCommand() *ffcli.Command {
	return &ffcli.Command{
		Name:       "askpass",
		ShortUsage: "gateway askpass PROMPT",
		ShortHelp:  "answer ssh's password prompt with a token from the environment",
		LongHelp: strings.TrimSpace(`
An SSH_ASKPASS helper. For a password prompt it prints the token from, in
this order, TOKENGATE_TOKEN; the first line printed by the command in
TOKENGATE_TOKEN_CMD (run with sh -c, at most 20s); or the file named by
TOKENGATE_TOKEN_FILE, which must be yours and of mode 0600. It answers no
other question, such as whether to trust a host key. ssh runs SSH_ASKPASS
with the prompt as its only argument, so point SSH_ASKPASS at a script:

  #!/bin/sh
  exec gateway askpass "$1"

gateway sync needs no script: it sets SSH_ASKPASS itself.`),
		FlagSet: flag.NewFlagSet("gateway askpass", flag.ContinueOnError),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("askpass takes one argument, ssh's prompt (got %d)", len(args))
			}
			return client.Askpass(ctx, args[0], os.Getenv, os.Stdout, os.Stderr)
		},
	}
}

// isAskpassChild reports whether ssh started this process as the
// SSH_ASKPASS of a `gateway sync`: sync marks the environment of the ssh
// it runs, and ssh passes the prompt as the only argument.
func isAskpassChild() bool {
	return os.Getenv(client.EnvAskpass) != "" && len(os.Args) == 2
}

// runAskpassChild answers ssh's prompt and exits. A token command has its
// own bound (client.TokenCommandTimeout).
func runAskpassChild() {
	err := client.Askpass(context.Background(), os.Args[1], os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway: "+err.Error())
		os.Exit(1)
	}
	os.Exit(0)
}
