package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/tokengate/tokengate/auth"
)

// The environment through which a token reaches askpass. A token is never
// an argument: any user can read any process's argv.
const (
	EnvToken     = "TOKENGATE_TOKEN"      // the token itself
	EnvTokenCmd  = "TOKENGATE_TOKEN_CMD"  // a command that prints it (sh -c)
	EnvTokenFile = "TOKENGATE_TOKEN_FILE" // a file of mode 0600 that holds it

	// EnvAskpass marks the askpass that ssh runs on behalf of sync. Its
	// value is sync's private directory, where askpass notes each ssh it
	// has answered.
	EnvAskpass = "TOKENGATE_ASKPASS"
)

// Askpass answers one ssh prompt: for a password prompt it writes the token
// and a newline to stdout; for anything else, or without a token, it
// returns one line saying why. stderr receives a token command's stderr.
func Askpass(ctx context.Context, prompt string, getenv func(string) string,
	stdout, stderr io.Writer) error {
	// ssh also asks through askpass whether to trust a new host key, or to
	// confirm the use of a key; a token is never the answer to those.
	if hint := getenv("SSH_ASKPASS_PROMPT"); hint != "" {
		return fmt.Errorf("askpass: not answering ssh's %s question %q: "+
			"only password prompts get the token", hint, lastLine(prompt))
	}
	if !IsPasswordPrompt(prompt) {
		return fmt.Errorf("askpass: not answering ssh's question %q: "+
			"only password prompts get the token%s", lastLine(prompt), hostKeyAdvice(prompt))
	}

	if dir := getenv(EnvAskpass); dir != "" && !firstAnswer(dir, os.Getppid()) {
		noteRefused(dir, os.Getppid())
		stopAsking(os.Getppid())
		return errors.New("askpass: the gateway refused the token; " +
			"not sending it again on this connection")
	}

	tok, from, err := tokenFromEnv(ctx, getenv, stderr)
	if err != nil {
		return fmt.Errorf("askpass: %w", err)
	}
	if _, err := auth.ParseToken(tok); err != nil {
		return fmt.Errorf("askpass: %s gave something that is not a tokengate token", from)
	}
	if _, err := fmt.Fprintln(stdout, tok); err != nil {
		return fmt.Errorf("askpass: writing the token for ssh: %w", err)
	}
	return nil
}

// IsPasswordPrompt reports whether ssh is asking for a password: its
// password method asks "user@host's password: ", keyboard-interactive
// shows the gateway's "Password: ", which newer ssh prefixes with
// "(user@host) ". Passphrases, host keys and one-time codes are not passwords.
func IsPasswordPrompt(prompt string) bool {
	last := strings.ToLower(lastLine(prompt))
	return strings.HasSuffix(last, "password:")
}

func lastLine(prompt string) string {
	lines := strings.Split(strings.TrimSpace(prompt), "\n")
	return shorten(strings.TrimSpace(lines[len(lines)-1]), 100)
}

func hostKeyAdvice(prompt string) string {
	if strings.Contains(prompt, "authenticity of host") ||
		strings.Contains(prompt, "continue connecting") {
		return "; add the gateway's host key to known_hosts first " +
			"(its fingerprint is in the gateway's gateway.ready log line)"
	}
	return ""
}

// tokenFromEnv finds the token in the order TOKENGATE_TOKEN,
// TOKENGATE_TOKEN_CMD, TOKENGATE_TOKEN_FILE, and says which one gave it.
func tokenFromEnv(ctx context.Context, getenv func(string) string,
	stderr io.Writer) (token, from string, err error) {
	if tok := strings.TrimSpace(getenv(EnvToken)); tok != "" {
		return tok, EnvToken, nil
	}
	if cmd := getenv(EnvTokenCmd); strings.TrimSpace(cmd) != "" {
		tok, err := runTokenCommand(ctx, cmd, stderr)
		if err != nil {
			return "", "", fmt.Errorf("%s %w", EnvTokenCmd, err)
		}
		return tok, EnvTokenCmd, nil
	}
	if path := getenv(EnvTokenFile); path != "" {
		tok, err := readTokenFile(path)
		if err != nil {
			return "", "", fmt.Errorf("refusing %s: %w", EnvTokenFile, err)
		}
		return tok, EnvTokenFile, nil
	}
	return "", "", errors.New("no token: set " + EnvToken + ", " + EnvTokenCmd +
		" or " + EnvTokenFile)
}

// askpass's notes in sync's private directory: one file per ssh process.
const (
	answeredNote = "answered-"
	refusedNote  = "refused-"
)

// firstAnswer notes in dir that the ssh process parent got its answer and
// reports whether this is the first time. A refused login makes ssh ask
// again; a second answer could only repeat a token the gateway refused.
func firstAnswer(dir string, parent int) bool {
	f, err := os.OpenFile(filepath.Join(dir, answeredNote+processName(parent)),
		os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		// Without its notes askpass answers as a plain askpass would.
		return !errors.Is(err, os.ErrExist)
	}
	_ = f.Close()
	return true
}

// noteRefused tells sync that the gateway refused a login on this ssh:
// ssh asks again only then. sync reads it when ssh does not show the
// gateway's banner (ssh -q, or a LogLevel above INFO).
func noteRefused(dir string, parent int) {
	f, err := os.OpenFile(filepath.Join(dir, refusedNote+processName(parent)),
		os.O_CREATE|os.O_WRONLY, 0o600)
	if err == nil {
		_ = f.Close()
	}
}

// takeRefusedLogins reports whether askpass noted a refused login in dir
// since the last call, and clears the notes.
func takeRefusedLogins(dir string) bool {
	notes, _ := filepath.Glob(filepath.Join(dir, refusedNote+"*"))
	for _, n := range notes {
		_ = os.Remove(n)
	}
	return len(notes) > 0
}

// processName names one process even if its pid is reused: the pid and
// the process's start time, when it can be read.
func processName(pid int) string {
	return strconv.Itoa(pid) + "-" + processStart(pid)
}

// processStart is the start time of pid, which with the pid names one
// process even if the pid is reused; "" when it cannot be read.
func processStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name in parentheses may hold spaces; count after it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(b[i+1:]))
	const startTime = 22 - 3 // field 22 of stat(5); the remainder starts at field 3
	if len(fields) <= startTime {
		return ""
	}
	return fields[startTime]
}

// stopAsking ends the ssh that asked. When askpass fails, ssh sends an
// empty password instead and asks again, up to six times a connection, and
// every refused try counts toward the gateway banning this host. Ending
// that ssh is the only way to stop it; rsync then reports the failed login.
func stopAsking(parent int) {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(parent) + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "ssh" {
		return
	}
	_ = syscall.Kill(parent, syscall.SIGTERM)
}
