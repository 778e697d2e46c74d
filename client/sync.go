// Package client runs rsync through the gateway with a token that stays
// fresh: it hands the token to ssh through SSH_ASKPASS, watches stderr for
// the gateway refusing it, and retries with a fresh token from its source.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// PartialDir is where the receiving rsync keeps a partly sent file, so a
// retry resumes it instead of starting over (see Run).
const PartialDir = ".tokengate-partial"

// MaxBackoff caps the wait between two tries.
const MaxBackoff = time.Minute

// Job is one sync: an rsync command line and where its tokens come from.
type Job struct {
	Rsync string   // the rsync program
	Args  []string // the user's rsync arguments
	// Source hands out the tokens rsync uses, or with Mint set, the issuer
	// tokens they are minted from.
	Source  Source
	Mint    *Mint
	Retries int           // fresh tokens to try after a refused one
	Backoff time.Duration // wait before the first retry; doubles each time
	Askpass string        // the program ssh runs as SSH_ASKPASS: this binary
	Env     []string      // the environment rsync starts from
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

// Failure is how a sync ends when rsync did not succeed: rsync's exit
// status, and one line that says why.
type Failure struct {
	Status  int
	Message string
}

func (f *Failure) Error() string { return f.Message }

// ExitCode is the status the process exits with.
func (f *Failure) ExitCode() int { return f.Status }

// Run runs rsync until it succeeds, fails for a reason other than its
// token, or the retries are spent. The user's arguments reach rsync
// unchanged except for --partial-dir, added from the first run on: the
// only refusal that interrupts a file halfway is a revocation cutting a
// live session, which happens in a run before any retry. A partial
// directory, unlike --partial, never leaves a truncated file under its
// real name when the job finally fails. Arguments that already decide
// (--partial, -P, --partial-dir, --inplace, --append) are left alone.
func Run(ctx context.Context, job Job) error {
	line := parseRsyncArgs(job.Args)
	args := job.Args
	if !line.keepsPartial {
		args = append([]string{"--partial-dir=" + PartialDir}, args...)
	}
	var remote Remote
	if job.Mint != nil {
		var err error
		if remote, err = line.remote(lookupEnv(job.Env, "RSYNC_RSH")); err != nil {
			return fmt.Errorf("sync: minting tokens: %w", err)
		}
	}

	state, err := os.MkdirTemp("", "tokengate-askpass-")
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	defer os.RemoveAll(state)
	env := tokenEnv{base: job.Env, askpass: job.Askpass, state: state}

	source := job.Source
	if job.Mint != nil {
		source = mintingSource(job.Source, remote, *job.Mint, env, job.Stderr)
	}
	return job.run(ctx, source, args, env)
}

// run is the retry loop. Every try asks the source for a token; a token
// the gateway already refused in this run is not sent again.
func (j *Job) run(ctx context.Context, source Source, args []string, env tokenEnv) error {
	var (
		refused  = map[string]Refusal{}
		last     error // why the last try failed
		status   = 1   // the last failed child's exit status
		tries    int
		refusals int
	)
	for tries < j.Retries+1 {
		if tries > 0 {
			wait := j.delay(tries)
			fmt.Fprintf(j.Stderr, "gateway: sync: %v; trying again in %v (retry %d of %d)\n",
				last, wait, tries, j.Retries)
			select {
			case <-ctx.Done():
				return interrupted(status)
			case <-time.After(wait):
			}
		}
		tries++

		token, err := source.Token(ctx)
		var final *finalError
		var refusal *refusedError
		switch {
		case ctx.Err() != nil:
			return interrupted(status)
		case errors.As(err, &final):
			return &Failure{Status: final.status, Message: final.message}
		case errors.As(err, &refusal):
			last = err
			refusals++
			if refusal.status != 0 {
				status = refusal.status
			}
			continue
		case err != nil:
			last = err
			continue
		}
		if r, ok := refused[token]; ok {
			last = &refusedError{refusal: r, again: true}
			refusals++
			continue
		}

		out, err := runChild(ctx, append([]string{j.Rsync}, args...), env, token,
			j.Stdin, j.Stdout, j.Stderr)
		if err != nil {
			return fmt.Errorf("sync: starting rsync: %w", err)
		}
		status = out.status
		switch {
		case status == 0:
			return nil
		case ctx.Err() != nil:
			return interrupted(status)
		case out.refusal == nil:
			return &Failure{Status: status,
				Message: fmt.Sprintf("sync: rsync exited with status %d", status)}
		}
		r := withID(*out.refusal, token)
		refused[token] = r
		last = &refusedError{refusal: r}
		refusals++
		if source.Fixed {
			break
		}
	}
	return &Failure{Status: status, Message: alert(source, last, tries, refusals)}
}

// delay is the wait before retry n (1, 2, ...): Backoff, doubling, capped.
func (j *Job) delay(n int) time.Duration {
	d := j.Backoff
	for i := 1; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// alert is the one line a sync that gave up prints, for the mail cron
// sends: what went wrong and what to do about it.
func alert(source Source, last error, tries, refusals int) string {
	var refusal *refusedError
	if !errors.As(last, &refusal) {
		return fmt.Sprintf("sync: ALERT: no usable token after %d %s (%v); "+
			"fix the token source and rerun", tries, plural(tries, "try", "tries"), last)
	}

	what := "token"
	if refusal.issuer {
		what = "issuer token"
	}
	head := what + " refused (" + refusal.refusal.Words + ")"
	switch {
	case refusals == tries && tries > 1:
		head = fmt.Sprintf("%s refused %d times (last: %s)", what, tries, refusal.refusal.Words)
	case tries > 1:
		head = fmt.Sprintf("gave up after %d tries; last: %s refused (%s)",
			tries, what, refusal.refusal.Words)
	}
	var advice string
	switch {
	case source.Fixed:
		advice = source.Name + " holds one fixed token, so sync cannot get a fresh one; " +
			"use --token-cmd, --token-file or --issuer-token-cmd"
	case refusal.again:
		advice = source.Name + " keeps returning that token; fix the token source and rerun"
	default:
		advice = "every token from " + source.Name + " was refused; " +
			"fix the token source and rerun"
	}
	return "sync: ALERT: " + head + "; " + advice
}

func interrupted(status int) error {
	return &Failure{Status: status, Message: "sync: interrupted"}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// lookupEnv reads name from an environment list; the last entry wins, as
// it does for exec.
func lookupEnv(env []string, name string) string {
	value := ""
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			value = v
		}
	}
	return value
}
