package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/tokengate/tokengate/auth"
)

// TokenCommandTimeout bounds one run of a token command. askpass runs the
// command while ssh is logging in, so it stays well inside the gateway's
// 30s login grace.
const TokenCommandTimeout = 20 * time.Second

// maxTokenOutput bounds what is read from a token command or file; a token
// is 53 bytes.
const maxTokenOutput = 64 << 10

// Source hands out tokens. Every call asks afresh, so a source that renews
// itself (a vault CLI, an agent that rewrites a file) gets the chance to.
type Source struct {
	// Name says where tokens come from, in messages: the token command "...".
	Name string
	// Fixed is set when asking again can only return the same token.
	Fixed bool

	fetch func(ctx context.Context) (string, error)
}

// Token asks the source for a token and checks its form. No error ever
// quotes what the source printed: it may be a token.
func (s Source) Token(ctx context.Context) (string, error) {
	tok, err := s.fetch(ctx)
	if err != nil {
		return "", err
	}
	if _, err := auth.ParseToken(tok); err != nil {
		return "", fmt.Errorf("%s gave something that is not a tokengate token", s.Name)
	}
	return tok, nil
}

// CommandSource runs command with sh -c for each token and takes the first
// line of its stdout; its stderr goes to stderr. kind names it in messages:
// "token command", "issuer token command".
func CommandSource(kind, command string, stderr io.Writer) Source {
	name := fmt.Sprintf("the %s %q", kind, shorten(command, 80))
	return Source{Name: name, fetch: func(ctx context.Context) (string, error) {
		tok, err := runTokenCommand(ctx, command, stderr)
		if err != nil {
			return "", fmt.Errorf("%s %w", name, err)
		}
		return tok, nil
	}}
}

// FileSource reads each token from a file that only its owner can read.
func FileSource(path string) Source {
	return Source{Name: "the token file " + path, fetch: func(context.Context) (string, error) {
		return readTokenFile(path)
	}}
}

// FixedSource hands out one token, named by where it came from
// (TOKENGATE_TOKEN); a refused one cannot be replaced.
func FixedSource(name, token string) Source {
	return Source{Name: name, Fixed: true, fetch: func(context.Context) (string, error) {
		if token == "" {
			return "", fmt.Errorf("%s is empty", name)
		}
		return token, nil
	}}
}

// runTokenCommand runs command in its own process group, so that a
// timeout ends the shell and whatever it started, and returns the first
// line of its output.
func runTokenCommand(ctx context.Context, command string, stderr io.Writer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, TokenCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	out := &cappedBuffer{max: maxTokenOutput}
	cmd.Stdout, cmd.Stderr = out, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A background child that keeps stdout open must not hold us past the bound.
	cmd.WaitDelay = time.Second

	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "", fmt.Errorf("did not finish within %v", TokenCommandTimeout)
	}
	// A command that exited 0 but left a background child holding its
	// stdout still printed its token; only a failed exit is a failure.
	if err != nil && !(errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState.Success()) {
		return "", fmt.Errorf("failed: %v", err)
	}
	tok := firstLine(out.Bytes())
	if tok == "" {
		return "", errors.New("printed nothing")
	}
	return tok, nil
}

// readTokenFile reads a token from a regular file that belongs to this
// user and that nobody else may read: a token in a file anyone can read is
// as good as published, so such a file is refused rather than used.
func readTokenFile(path string) (string, error) {
	// O_NONBLOCK keeps a FIFO planted at path from hanging the open.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()

	// The checks read the open file, so the file read is the file checked.
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s is not a regular file", path)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return "", fmt.Errorf("token file %s belongs to uid %d, not to you (uid %d); "+
			"a token file must be your own", path, st.Uid, os.Geteuid())
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("token file %s has mode %04o, so others may read it; "+
			"run chmod 600 %s", path, perm, path)
	}

	b, err := io.ReadAll(io.LimitReader(f, maxTokenOutput))
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := firstLine(b)
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return string(bytes.TrimSpace(b))
}

// shorten keeps messages to one readable line.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// cappedBuffer keeps the first max bytes written to it and discards the
// rest, so a chatty child never blocks on a full pipe.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
