// Command gateway is tokengate's single binary: the SSH gateway (`serve`),
// a one-machine trial (`dev`), and the admin's token commands. This file and
// its siblings only wire flags, environment and config files to the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/session"
)

// envPrefix names the environment variables: --data-dir is TOKENGATE_DATA_DIR.
const envPrefix = "TOKENGATE"

func main() {
	// The jail re-executes this binary to build a session's namespaces
	// before it execs rsync; that child must do nothing else.
	if session.IsJailChild() {
		session.RunJailChild()
	}
	// ssh runs SSH_ASKPASS with its prompt as the only argument, not a
	// subcommand; `gateway sync` marks the ssh it starts so this answers.
	if isAskpassChild() {
		runAskpassChild()
	}

	// The admin commands report Redis failures as errors; go-redis's own
	// retry chatter is only noise there. serve routes it to its logger.
	redis.SetLogger(redisLog{})

	root := &ffcli.Command{
		Name:       "gateway",
		ShortUsage: "gateway <serve|dev|token|ban|sync|askpass> [flags]",
		ShortHelp:  "an SSH gateway that serves rsync to holders of API tokens",
		FlagSet:    flag.NewFlagSet("gateway", flag.ContinueOnError),
		Subcommands: []*ffcli.Command{
			serveCommand(),
			devCommand(),
			tokenCommand(),
			banCommand(),
			syncCommand(),
			askpassCommand(),
		},
		Exec: func(context.Context, []string) error { return flag.ErrHelp },
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ParseAndRun(ctx, os.Args[1:])
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "gateway: "+err.Error())
		var ec exitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

type exitCoder interface{ ExitCode() int }

// ffOptions are the same for every command: flags beat environment
// variables, which beat the config file named by --config.
func ffOptions() []ff.Option {
	return []ff.Option{
		ff.WithEnvVarPrefix(envPrefix),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ff.PlainParser),
	}
}
