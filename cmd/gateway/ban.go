package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/auth"
)

// limiterOptions are the brute-force defence's settings.
type limiterOptions struct {
	threshold      int
	window         time.Duration
	banTime        time.Duration
	maxBanTime     time.Duration
	tokenThreshold int
	allow          string
	off            bool
}

func (l *limiterOptions) register(fs *flag.FlagSet) {
	fs.IntVar(&l.threshold, "ban-threshold", 10, "failed logins within --ban-window that ban a source")
	fs.DurationVar(&l.window, "ban-window", 10*time.Minute, "window for counting failed logins")
	fs.DurationVar(&l.banTime, "ban-time", 15*time.Minute, "first ban; doubles on each repeat")
	fs.DurationVar(&l.maxBanTime, "ban-max-time", 24*time.Hour, "longest ban")
	fs.IntVar(&l.tokenThreshold, "token-fail-threshold", 0,
		"failed logins within --ban-window after which a token ID is refused for the window "+
			"(0: off; anyone who knows an ID could lock its owner out)")
	fs.StringVar(&l.allow, "allow-networks", "127.0.0.0/8,::1/128",
		"comma-separated networks never banned")
	fs.BoolVar(&l.off, "no-ban", false, "disable the brute-force defence")
}

func (l *limiterOptions) build(rdb redis.UniversalClient) (*auth.Limiter, error) {
	if l.off {
		return nil, nil
	}
	allow, err := parseNetworks(l.allow)
	if err != nil {
		return nil, fmt.Errorf("--allow-networks: %w", err)
	}
	if l.threshold < 1 || l.tokenThreshold < 0 {
		return nil, errors.New("--ban-threshold must be at least 1, --token-fail-threshold at least 0")
	}
	return auth.NewLimiter(rdb, auth.LimiterConfig{
		Threshold: l.threshold, Window: l.window, BanTime: l.banTime,
		MaxBanTime: l.maxBanTime, TokenThreshold: l.tokenThreshold, AllowList: allow,
	}), nil
}

func parseNetworks(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func banCommand() *ffcli.Command {
	return &ffcli.Command{
		Name:        "ban",
		ShortUsage:  "gateway ban <list|remove> [flags]",
		ShortHelp:   "inspect and lift bans of source addresses",
		FlagSet:     flag.NewFlagSet("gateway ban", flag.ContinueOnError),
		Subcommands: []*ffcli.Command{banListCommand(), banRemoveCommand()},
		Exec:        func(context.Context, []string) error { return flag.ErrHelp },
	}
}

func banListCommand() *ffcli.Command {
	return adminCommand(adminSpec{
		name:  "list",
		usage: "gateway ban list",
		help:  "list banned source addresses",
		calls: 4,
		run: func(ctx context.Context, rdb *redis.Client, args []string) error {
			bans, err := auth.NewLimiter(rdb, auth.LimiterConfig{}).Bans(ctx)
			if err != nil {
				return fmt.Errorf("listing bans: %w", err)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ADDRESS\tLEFT\tBANS")
			for _, b := range bans {
				fmt.Fprintf(w, "%s\t%s\t%d\n", b.Addr, b.Remaining.Round(time.Second), b.Count)
			}
			return w.Flush()
		},
	})
}

func banRemoveCommand() *ffcli.Command {
	return adminCommand(adminSpec{
		name:  "remove",
		usage: "gateway ban remove ADDR",
		help:  "lift a ban and forget the address's failures",
		run: func(ctx context.Context, rdb *redis.Client, args []string) error {
			if len(args) != 1 {
				return errors.New("give exactly one address")
			}
			ip, err := netip.ParseAddr(args[0])
			if err != nil {
				return fmt.Errorf("%q is not an IP address", args[0])
			}
			removed, err := auth.NewLimiter(rdb, auth.LimiterConfig{}).Unban(ctx, ip)
			if err != nil {
				return fmt.Errorf("removing ban: %w", err)
			}
			if !removed {
				fmt.Fprintf(os.Stderr, "%s was not banned\n", ip)
				return nil
			}
			fmt.Fprintf(os.Stderr, "lifted the ban on %s\n", ip)
			return nil
		},
	})
}
