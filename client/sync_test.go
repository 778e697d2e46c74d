package client

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeRsync stands in for rsync in the retry loop's tests: it logs its
// arguments and environment, then succeeds for FAKE_GOOD and otherwise
// prints FAKE_LINE and exits with FAKE_STATUS. The real rsync is in e2e.
const fakeRsync = `#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_DIR/argv"
env >> "$FAKE_DIR/env"
if [ "$TOKENGATE_TOKEN" = "$FAKE_GOOD" ]; then exit 0; fi
printf '%s\n' "$FAKE_LINE" >&2
exit "${FAKE_STATUS:-12}"
`

// tokenList is a source that hands out the given tokens in turn, then the
// last one forever.
func tokenList(tokens ...string) (Source, *int) {
	calls := 0
	return Source{Name: "the test tokens", fetch: func(context.Context) (string, error) {
		tok := tokens[min(calls, len(tokens)-1)]
		calls++
		return tok, nil
	}}, &calls
}

type fakeJob struct {
	Job
	dir    string
	stderr *bytes.Buffer
}

func newFakeJob(t *testing.T, good, line string, status string) *fakeJob {
	t.Helper()
	dir := t.TempDir()
	rsync := filepath.Join(dir, "rsync")
	if err := os.WriteFile(rsync, []byte(fakeRsync), 0o700); err != nil {
		t.Fatal(err)
	}
	stderr := &bytes.Buffer{}
	return &fakeJob{dir: dir, stderr: stderr, Job: Job{
		Rsync: rsync, Args: []string{"-a", "src/", "h:dst/"},
		Retries: 3, Backoff: time.Millisecond, Askpass: "/path/to/gateway",
		Env: []string{"PATH=" + os.Getenv("PATH"), "FAKE_DIR=" + dir, "FAKE_GOOD=" + good,
			"FAKE_LINE=" + line, "FAKE_STATUS=" + status,
			EnvTokenCmd + "=echo stale", "SSH_ASKPASS=/usr/bin/other"},
		Stdout: &bytes.Buffer{}, Stderr: stderr,
	}}
}

func (f *fakeJob) runs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "argv"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func alertLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "ALERT") {
			out = append(out, l)
		}
	}
	return out
}

func TestRunRetriesWithAFreshToken(t *testing.T) {
	bad, good := newToken(t), newToken(t)
	f := newFakeJob(t, good, "tokengate: token "+bad[3:15]+" was revoked", "12")
	f.Source, _ = tokenList(bad, good)

	if err := Run(context.Background(), f.Job); err != nil {
		t.Fatalf("Run: %v; stderr:\n%s", err, f.stderr)
	}
	runs := f.runs(t)
	if len(runs) != 2 {
		t.Fatalf("rsync ran %d times, want 2: %q", len(runs), runs)
	}
	for _, r := range runs {
		if r != "--partial-dir=.tokengate-partial -a src/ h:dst/" {
			t.Errorf("rsync argv = %q", r)
		}
	}
	if !strings.Contains(f.stderr.String(), "was revoked); trying again") {
		t.Errorf("no retry note on stderr:\n%s", f.stderr)
	}

	envs, _ := os.ReadFile(filepath.Join(f.dir, "env"))
	for _, want := range []string{"SSH_ASKPASS=/path/to/gateway\n", "SSH_ASKPASS_REQUIRE=force\n",
		"DISPLAY=", EnvAskpass + "=/", EnvToken + "=" + good + "\n"} {
		if !strings.Contains(string(envs), want) {
			t.Errorf("rsync's environment lacks %q", want)
		}
	}
	for _, gone := range []string{"SSH_ASKPASS=/usr/bin/other", EnvTokenCmd + "="} {
		if strings.Contains(string(envs), gone) {
			t.Errorf("rsync's environment kept %q", gone)
		}
	}
	if strings.Contains(f.stderr.String(), bad) || strings.Contains(f.stderr.String(), good) {
		t.Error("a token was printed")
	}
}

func TestRunGivesUpWithOneAlert(t *testing.T) {
	t.Run("the source keeps returning a refused token", func(t *testing.T) {
		bad := newToken(t)
		line := "tokengate: token " + bad[3:15] + " expired at 2026-12-05T07:14:00Z"
		f := newFakeJob(t, "", line, "12")
		var calls *int
		f.Source, calls = tokenList(bad)
		err := Run(context.Background(), f.Job)
		var failure *Failure
		if !errors.As(err, &failure) || failure.ExitCode() != 12 {
			t.Fatalf("err = %v, want a Failure with rsync's status 12", err)
		}
		if len(f.runs(t)) != 1 || *calls != 4 {
			t.Errorf("rsync ran %d times and the source was asked %d times; want 1 and 4",
				len(f.runs(t)), *calls)
		}
		want := "sync: ALERT: token refused 4 times (last: token " + bad[3:15] +
			" expired at 2026-12-05T07:14:00Z); the test tokens keeps returning that token"
		if !strings.HasPrefix(failure.Message, want) {
			t.Errorf("alert = %q\nwant   %q...", failure.Message, want)
		}
		if n := len(alertLines(f.stderr.String())); n != 0 {
			t.Errorf("Run printed %d ALERT lines itself; the caller prints the one", n)
		}
	})

	t.Run("every fresh token is refused too", func(t *testing.T) {
		f := newFakeJob(t, "", "tokengate: unknown token, or wrong secret", "255")
		a, b := newToken(t), newToken(t)
		f.Source, _ = tokenList(a, b)
		f.Retries = 1
		err := Run(context.Background(), f.Job)
		var failure *Failure
		if !errors.As(err, &failure) || failure.ExitCode() != 255 {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(failure.Message, "token refused 2 times (last: token "+b[3:15]+
			": unknown token, or wrong secret); every token from the test tokens was refused") {
			t.Errorf("alert = %q", failure.Message)
		}
	})

	t.Run("a fixed token is not retried", func(t *testing.T) {
		bad := newToken(t)
		f := newFakeJob(t, "", "tokengate: token "+bad[3:15]+" was revoked", "12")
		f.Source = FixedSource(EnvToken, bad)
		err := Run(context.Background(), f.Job)
		if len(f.runs(t)) != 1 || err == nil ||
			!strings.Contains(err.Error(), "TOKENGATE_TOKEN holds one fixed token") {
			t.Fatalf("ran %d times, err = %v", len(f.runs(t)), err)
		}
	})

	t.Run("the source keeps failing", func(t *testing.T) {
		f := newFakeJob(t, "", "", "12")
		f.Source = CommandSource("token command", "echo vault sealed >&2; exit 2", f.stderr)
		f.Retries = 2
		err := Run(context.Background(), f.Job)
		var failure *Failure
		if !errors.As(err, &failure) || failure.ExitCode() != 1 || f.runs(t) != nil {
			t.Fatalf("err = %v, runs %q", err, f.runs(t))
		}
		want := `sync: ALERT: no usable token after 3 tries (the token command ` +
			`"echo vault sealed >&2; exit 2" failed: exit status 2); fix the token source`
		if !strings.HasPrefix(failure.Message, want) {
			t.Errorf("alert = %q", failure.Message)
		}
	})
}

// A failure that is not about the token is rsync's to report: no retry.
func TestRunReturnsOtherFailuresAsTheyAre(t *testing.T) {
	bad := newToken(t)
	f := newFakeJob(t, "", "tokengate: token "+bad[3:15]+" lacks write scope", "77")
	f.Source, _ = tokenList(bad)
	err := Run(context.Background(), f.Job)
	var failure *Failure
	if !errors.As(err, &failure) || failure.ExitCode() != 77 || len(f.runs(t)) != 1 {
		t.Fatalf("err = %v after %d runs; want status 77 after 1", err, len(f.runs(t)))
	}
	if strings.Contains(failure.Message, "ALERT") {
		t.Errorf("message = %q", failure.Message)
	}
}

func TestRunLeavesTheUsersPartialChoice(t *testing.T) {
	good := newToken(t)
	f := newFakeJob(t, good, "", "0")
	f.Source, _ = tokenList(good)
	f.Args = []string{"-aP", "src/", "h:dst/"}
	if err := Run(context.Background(), f.Job); err != nil {
		t.Fatal(err)
	}
	if runs := f.runs(t); len(runs) != 1 || runs[0] != "-aP src/ h:dst/" {
		t.Fatalf("rsync argv = %q", runs)
	}
}

func TestRunStopsWhenInterrupted(t *testing.T) {
	bad := newToken(t)
	f := newFakeJob(t, "", "tokengate: token "+bad[3:15]+" was revoked", "12")
	f.Source, _ = tokenList(bad, newToken(t))
	f.Backoff = time.Hour
	// Long enough for the first run even on a loaded machine; the hour of
	// backoff after it is what gets interrupted.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := Run(ctx, f.Job)
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("err = %v", err)
	}
}

func TestDelay(t *testing.T) {
	j := Job{Backoff: 2 * time.Second}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 32 * time.Second, MaxBackoff, MaxBackoff}
	for i, w := range want {
		if got := j.delay(i + 1); got != w {
			t.Errorf("delay(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := (&Job{Backoff: 0}).delay(5); got != 0 {
		t.Errorf("no backoff: delay = %v", got)
	}
	if got := (&Job{Backoff: time.Hour}).delay(1); got != MaxBackoff {
		t.Errorf("a huge backoff is not capped: %v", got)
	}
}
