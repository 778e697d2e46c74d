package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/peterbourgon/ff/v3/ffcli"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tokengate/tokengate/auth"
	"github.com/tokengate/tokengate/session"
)

func devCommand() *ffcli.Command {
	var o serveOptions
	var scopes string
	fs := flag.NewFlagSet("gateway dev", flag.ContinueOnError)
	o.register(fs)
	fs.StringVar(&scopes, "scope", "read,write", "scopes of the token dev prints")
	return &ffcli.Command{
		Name:       "dev",
		ShortUsage: "gateway dev",
		ShortHelp:  "try tokengate on one machine: embedded store, temporary dirs, a fresh token",
		FlagSet:    fs,
		Options:    ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			if !set["listen"] {
				o.listen = "127.0.0.1:2222"
			}
			if !set["log-format"] {
				o.logFormat = "text"
			}
			return runDev(ctx, &o, scopes, set)
		},
	}
}

// runDev starts an in-memory Redis-compatible store on a loopback port,
// makes temporary data and state dirs, creates a token, and serves.
func runDev(ctx context.Context, o *serveOptions, scopes string, set map[string]bool) error {
	store := miniredis.NewMiniRedis()
	if err := store.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("starting the embedded store: %w", err)
	}
	defer store.Close()
	// The embedded store only ages keys when told to; keep its clock real so
	// TTLs run out as they would in Redis.
	go func() {
		last := time.Now()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				store.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	o.redisURL = "redis://" + store.Addr() + "/0"

	tmp, err := os.MkdirTemp("", "tokengate-dev-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if !set["data-dir"] {
		o.dataDir = filepath.Join(tmp, "data")
	}
	if !set["state-dir"] {
		o.stateDir = filepath.Join(tmp, "state")
	}
	sample := filepath.Join(tmp, "sample")
	if err := os.MkdirAll(sample, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(sample, "hello.txt"),
		[]byte("hello from tokengate dev\n"), 0o644); err != nil {
		return err
	}

	// Port 2222 may be taken by another trial; any free loopback port will do.
	if !set["listen"] {
		if l, err := net.Listen("tcp", o.listen); err != nil {
			o.listen = "127.0.0.1:0"
		} else {
			l.Close()
		}
	}
	if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
		return err
	}
	if !o.insecureNoJail {
		var err error
		if o.jail, err = session.NewJail(o.jailConfig()); err != nil {
			fmt.Fprintf(os.Stderr, "dev: the jail is unavailable here (%v);\n"+
				"dev: running rsync UNCONFINED, which only `gateway dev` ever does by itself\n", err)
			o.insecureNoJail = true
		}
	}

	var c createOptions
	c.root, c.scopes, c.ttl, c.note = "demo", scopes, 24*time.Hour, "gateway dev"
	tok, rec, err := c.newTokenRecord(time.Now())
	if err != nil {
		return err
	}
	rdb, err := newRedis(o.redisURL, o.redisTimeout)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := auth.NewStore(rdb).Create(ctx, rec); err != nil {
		return err
	}

	return serve(ctx, o, func(addr net.Addr, key gossh.PublicKey) {
		_, port, _ := net.SplitHostPort(addr.String())
		sshCmd := "sshpass -e ssh -p " + port +
			" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
		fmt.Printf(`
tokengate dev: FOR TRYING THINGS OUT ONLY. Everything lives in %s and is
deleted on exit; the store is in memory. Stop with Ctrl-C.

  store    redis://%s   (try: redis-cli -p %s --scan --pattern 'tokengate:*')
  gateway  127.0.0.1:%s, host key %s
  token    %s
           scope %s, root %q, expires %s

Push the sample directory, then pull it back:

  export SSHPASS='%s'
  rsync -av -e '%s' %s/ dev@127.0.0.1:sample/
  rsync -av -e '%s' dev@127.0.0.1:sample/ ./tokengate-copy/

`, tmp, store.Addr(), portOf(store.Addr()), port, gossh.FingerprintSHA256(key),
			tok.String(), rec.Scopes, rec.Root, rec.ExpiresAt.UTC().Format(time.RFC3339),
			tok.String(), sshCmd, sample, sshCmd)
	})
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
