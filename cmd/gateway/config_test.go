package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Flags beat TOKENGATE_* variables, which beat the config file.
func TestSettingsPrecedence(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "gateway.conf")
	err := os.WriteFile(conf, []byte("# comment\nlisten :1111\ndata-dir /from/file\n"+
		"state-dir /from/file/state\nredis-timeout 7s\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TOKENGATE_DATA_DIR", "/from/env")
	t.Setenv("TOKENGATE_STATE_DIR", "/from/env/state")

	var o serveOptions
	cmd := newServeCommand(&o)
	err = cmd.Parse([]string{"--config", conf, "--state-dir", "/from/flag"})
	if err != nil {
		t.Fatal(err)
	}
	if o.listen != ":1111" || o.redisTimeout != 7*time.Second {
		t.Errorf("file values not applied: listen %q timeout %v", o.listen, o.redisTimeout)
	}
	if o.dataDir != "/from/env" {
		t.Errorf("data-dir = %q, want the environment's", o.dataDir)
	}
	if o.stateDir != "/from/flag" {
		t.Errorf("state-dir = %q, want the flag's", o.stateDir)
	}
}

// A config file with an unknown setting is a clear error, not a silent no-op.
func TestConfigUnknownSetting(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "gateway.conf")
	if err := os.WriteFile(conf, []byte("lisen :1111\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var o serveOptions
	if err := newServeCommand(&o).Parse([]string{"--config", conf}); err == nil {
		t.Fatal("a misspelt setting was accepted")
	}
}

func TestFlagsAfterArguments(t *testing.T) {
	var overlap time.Duration
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.DurationVar(&overlap, "overlap", time.Minute, "")
	if err := fs.Parse([]string{"abc", "--overlap", "5m", "def"}); err != nil {
		t.Fatal(err)
	}
	args, err := interleaved(fs, fs.Args())
	if err != nil || len(args) != 2 || args[0] != "abc" || args[1] != "def" || overlap != 5*time.Minute {
		t.Fatalf("args %v, overlap %v, err %v", args, overlap, err)
	}
}

// Settings that would switch a limit off by accident are refused.
func TestServeSettingsValidated(t *testing.T) {
	for _, args := range [][]string{
		{"--idle-timeout", "0"}, {"--max-session-lifetime", "-1s"}, {"--redis-timeout", "0"},
		{"--max-live-sessions", "0"}, {"--expiry-warning-fraction", "5"}, {"--log-format", "xml"},
	} {
		var o serveOptions
		if err := newServeCommand(&o).Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := o.validate(); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	var o serveOptions
	if err := newServeCommand(&o).Parse(nil); err != nil || o.validate() != nil {
		t.Fatalf("the defaults do not validate: %v", o.validate())
	}
}
