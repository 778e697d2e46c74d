package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/tokengate/tokengate/client"
)

// syncOptions say where sync's tokens come from and how hard it tries.
type syncOptions struct {
	tokenCmd  string
	tokenFile string
	issuerCmd string
	scopes    string
	ttl       time.Duration
	retries   int
	backoff   time.Duration
}

func (o *syncOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.tokenCmd, "token-cmd", "",
		"command printing the token (sh -c); run again for a fresh one")
	fs.StringVar(&o.tokenFile, "token-file", "",
		"file of mode 0600 holding the token; read again for a fresh one")
	fs.StringVar(&o.issuerCmd, "issuer-token-cmd", "",
		"command printing an issuer token; sync mints a short-lived token from it")
	fs.StringVar(&o.scopes, "scope", "read,write", "scopes of minted tokens")
	fs.DurationVar(&o.ttl, "ttl", 15*time.Minute, "lifetime of minted tokens")
	fs.IntVar(&o.retries, "retries", 3, "fresh tokens to try after a refused one")
	fs.DurationVar(&o.backoff, "backoff", 2*time.Second,
		"wait before the first retry; it doubles each time, up to 1m")
	fs.String("config", "", "config file: one `flag value` per line")
}

func syncCommand() *ffcli.Command {
	var o syncOptions
	fs := flag.NewFlagSet("gateway sync", flag.ContinueOnError)
	o.register(fs)
	return &ffcli.Command{
		Name:       "sync",
		ShortUsage: "gateway sync [--token-cmd CMD | --issuer-token-cmd CMD] -- RSYNC_ARGS...",
		ShortHelp:  "run rsync through the gateway, fetching a fresh token when one is refused",
		LongHelp: strings.TrimSpace(`
Runs rsync with RSYNC_ARGS, handing the token to ssh through SSH_ASKPASS
(never on a command line). When the gateway refuses the token (expired,
revoked, unknown), sync gets a fresh one from its source and runs rsync
again, --retries times with a doubling --backoff. The token comes from
--token-cmd, --token-file, TOKENGATE_TOKEN, or is minted with
--issuer-token-cmd through the remote host and ssh options of RSYNC_ARGS.
The exit status is rsync's; when sync gives up it prints one ALERT line.`),
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return errors.New("sync: give rsync's arguments after --, " +
					"e.g. gateway sync --token-cmd CMD -- -a src/ user@gw:dst/")
			}
			return runSync(ctx, &o, args)
		},
	}
}

func runSync(ctx context.Context, o *syncOptions, args []string) error {
	if o.retries < 0 || o.backoff < 0 {
		return errors.New("sync: --retries and --backoff cannot be negative")
	}
	source, mint, err := o.source()
	if err != nil {
		return err
	}
	rsync, err := exec.LookPath("rsync")
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("sync: finding this program for SSH_ASKPASS: %w", err)
	}
	return client.Run(ctx, client.Job{
		Rsync: rsync, Args: args,
		Source: source, Mint: mint,
		Retries: o.retries, Backoff: o.backoff,
		Askpass: self, Env: os.Environ(),
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
	})
}

// source picks the one token source the flags, or TOKENGATE_* variables
// standing in for them, name.
func (o *syncOptions) source() (client.Source, *client.Mint, error) {
	set := 0
	for _, v := range []string{o.tokenCmd, o.tokenFile, o.issuerCmd} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return client.Source{}, nil, errors.New("sync: give one of --token-cmd, --token-file " +
			"and --issuer-token-cmd (or their TOKENGATE_* variables)")
	}

	switch {
	case o.tokenCmd != "":
		return client.CommandSource("token command", o.tokenCmd, os.Stderr), nil, nil
	case o.tokenFile != "":
		return client.FileSource(o.tokenFile), nil, nil
	case o.issuerCmd != "":
		if o.ttl <= 0 {
			return client.Source{}, nil, errors.New("sync: --ttl must be positive")
		}
		return client.CommandSource("issuer token command", o.issuerCmd, os.Stderr),
			&client.Mint{Scopes: o.scopes, TTL: o.ttl}, nil
	}
	if tok := strings.TrimSpace(os.Getenv(client.EnvToken)); tok != "" {
		return client.FixedSource(client.EnvToken, tok), nil, nil
	}
	return client.Source{}, nil, errors.New("sync: no token source: give --token-cmd, " +
		"--token-file or --issuer-token-cmd, or set " + client.EnvToken)
}
