package main

import (
	"os"
	"os/user"
	"strconv"

	"context"
	"flag"
	"time"

	"github.com/tokengate/tokengate/audit"

	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/redis/go-redis/v9"
)

// adminSpec describes one admin subcommand that talks to Redis.
type adminSpec struct {
	name, usage, help string
	// calls scales the deadline: the command gets calls × --redis-timeout.
	calls int
	// flags registers the command's own flags.
	flags func(fs *flag.FlagSet)
	// run does the work with a connected client.
	run func(ctx context.Context, rdb *redis.Client, args []string) error
}

// adminEvent records what an admin did in the fleet's event stream, where
// gateways' events go too, so the SIEM sees token.created and
// token.revoked next to the logins they affect. It is best effort: the
// change itself is already made.
func adminEvent(ctx context.Context, rdb *redis.Client, ev audit.Event) {
	ev.Outcome = "success"
	ev.Fields = mergeFields(ev.Fields, map[string]any{"user.name": currentUser()})
	key, _ := ctx.Value(streamKey{}).(string)
	if key == "" {
		return
	}
	_ = audit.NewStream(rdb, key, 0).Deliver(ctx, audit.EncodeJSON(ev, time.Now(), hostName()))
}

// streamKey carries --event-stream to adminEvent.
type streamKey struct{}

func mergeFields(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// currentUser names the admin who ran the command, for the audit trail.
func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

// adminCommand wires an adminSpec: the --redis flags, the shared option
// sources (flags, TOKENGATE_* variables, --config), a client for the length
// of run, and a deadline on the whole command.
func adminCommand(spec adminSpec) *ffcli.Command {
	var url, stream string
	var timeout time.Duration
	fs := flag.NewFlagSet("gateway "+spec.name, flag.ContinueOnError)
	registerRedis(fs, &url, &timeout)
	fs.StringVar(&stream, "event-stream", audit.DefaultStreamKey,
		"Redis stream that admin events (token.created, token.revoked) are appended to (empty: off)")
	if spec.flags != nil {
		spec.flags(fs)
	}
	calls := max(spec.calls, 1)
	return &ffcli.Command{
		Name:       spec.name,
		ShortUsage: spec.usage,
		ShortHelp:  spec.help,
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			args, err := interleaved(fs, args)
			if err != nil {
				return err
			}
			rdb, err := newRedis(url, timeout)
			if err != nil {
				return err
			}
			defer rdb.Close()
			ctx, cancel := context.WithTimeout(ctx, timeout*time.Duration(calls))
			defer cancel()
			ctx = context.WithValue(ctx, streamKey{}, stream)
			return spec.run(ctx, rdb, args)
		},
	}
}

// interleaved parses flags that follow positional arguments, as in
// `token rotate ID --overlap 5m`: Go's flag package stops at the first
// positional argument. It returns the positional arguments.
func interleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for len(args) > 0 {
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		if err := fs.Parse(args[1:]); err != nil {
			return nil, err
		}
		args = fs.Args()
	}
	return positional, nil
}
