package main

import (
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/peterbourgon/ff/v3"
)

// parseSyncFlags parses sync's flags as main does, with env standing in for
// the process environment.
func parseSyncFlags(t *testing.T, env map[string]string, args ...string) *syncOptions {
	t.Helper()
	for _, name := range []string{"TOKENGATE_TOKEN", "TOKENGATE_TOKEN_CMD",
		"TOKENGATE_TOKEN_FILE", "TOKENGATE_ISSUER_TOKEN_CMD"} {
		t.Setenv(name, env[name])
	}
	var o syncOptions
	fs := flag.NewFlagSet("gateway sync", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.register(fs)
	if err := ff.Parse(fs, args, ffOptions()...); err != nil {
		t.Fatal(err)
	}
	return &o
}

func TestSyncSource(t *testing.T) {
	cases := []struct {
		name  string
		env   map[string]string
		args  []string
		want  string // the source's name, or words of the error
		mint  bool
		fixed bool
	}{
		{"--token-cmd", nil, []string{"--token-cmd", "vault read x"},
			`the token command "vault read x"`, false, false},
		{"TOKENGATE_TOKEN_CMD stands in for the flag",
			map[string]string{"TOKENGATE_TOKEN_CMD": "pass show tg"}, nil,
			`the token command "pass show tg"`, false, false},
		{"the flag beats the environment",
			map[string]string{"TOKENGATE_TOKEN_CMD": "old"}, []string{"--token-cmd", "new"},
			`the token command "new"`, false, false},
		{"--token-file", nil, []string{"--token-file", "/run/tg"},
			"the token file /run/tg", false, false},
		{"--issuer-token-cmd", nil, []string{"--issuer-token-cmd", "cat i"},
			`the issuer token command "cat i"`, true, false},
		{"TOKENGATE_TOKEN is fixed", map[string]string{"TOKENGATE_TOKEN": "tg_x"}, nil,
			"TOKENGATE_TOKEN", false, true},
		{"a flag beats TOKENGATE_TOKEN", map[string]string{"TOKENGATE_TOKEN": "tg_x"},
			[]string{"--token-cmd", "c"}, `the token command "c"`, false, false},
		{"two sources", map[string]string{"TOKENGATE_TOKEN_CMD": "a"},
			[]string{"--issuer-token-cmd", "b"}, "give one of", false, false},
		{"none", nil, nil, "no token source", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, mint, err := parseSyncFlags(t, c.env, c.args...).source()
			if err != nil {
				if !strings.Contains(err.Error(), c.want) {
					t.Fatalf("err = %v, want %q", err, c.want)
				}
				return
			}
			if src.Name != c.want || (mint != nil) != c.mint || src.Fixed != c.fixed {
				t.Fatalf("source %q (fixed %v), mint %v", src.Name, src.Fixed, mint)
			}
			if mint != nil && (mint.Scopes != "read,write" || mint.TTL != 15*time.Minute) {
				t.Fatalf("mint defaults = %+v", mint)
			}
		})
	}
}

func TestSyncRefusesBadInput(t *testing.T) {
	cmd := syncCommand()
	if err := cmd.ParseAndRun(context.Background(), []string{"--token-cmd", "x"}); err == nil ||
		!strings.Contains(err.Error(), "after --") {
		t.Fatalf("no rsync arguments: err = %v", err)
	}
	o := parseSyncFlags(t, nil, "--token-cmd", "x", "--retries", "-1")
	if err := runSync(context.Background(), o, []string{"s", "h:d"}); err == nil ||
		!strings.Contains(err.Error(), "negative") {
		t.Fatalf("negative retries: err = %v", err)
	}
}

func TestAskpassCommandTakesThePrompt(t *testing.T) {
	t.Setenv("TOKENGATE_TOKEN", "")
	t.Setenv("TOKENGATE_TOKEN_CMD", "")
	t.Setenv("TOKENGATE_TOKEN_FILE", "")
	cmd := askpassCommand()
	if err := cmd.ParseAndRun(context.Background(), nil); err == nil ||
		!strings.Contains(err.Error(), "one argument") {
		t.Fatalf("no prompt: err = %v", err)
	}
	err := askpassCommand().ParseAndRun(context.Background(), []string{"Password:"})
	if err == nil || !strings.Contains(err.Error(), "askpass: no token") {
		t.Fatalf("no token: err = %v", err)
	}
}
