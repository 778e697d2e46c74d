package client

import (
	"context"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// tokenEnv builds the environment of the rsync and ssh that sync starts:
// ssh finds the token through SSH_ASKPASS, which is this binary, and
// askpass reads it from TOKENGATE_TOKEN. The token travels only in the
// environment, which other users cannot read, never in an argument list.
type tokenEnv struct {
	base    []string // sync's own environment
	askpass string   // the program ssh runs as SSH_ASKPASS
	state   string   // sync's private directory for askpass's notes
}

// replaced are the variables sync sets itself; any inherited value is
// dropped so that askpass can only answer with the token sync chose.
var replaced = map[string]bool{
	"SSH_ASKPASS": true, "SSH_ASKPASS_REQUIRE": true, "DISPLAY": true,
	EnvToken: true, EnvTokenCmd: true, EnvTokenFile: true, EnvAskpass: true,
}

func (e tokenEnv) with(token string) []string {
	env := make([]string, 0, len(e.base)+5)
	display := ":0"
	for _, kv := range e.base {
		name, value, _ := strings.Cut(kv, "=")
		if name == "DISPLAY" && value != "" {
			display = value
		}
		if !replaced[name] {
			env = append(env, kv)
		}
	}
	// ssh before 8.4 ignores SSH_ASKPASS_REQUIRE and uses askpass only
	// when DISPLAY is set, so it must be set, to anything.
	return append(env, "DISPLAY="+display,
		"SSH_ASKPASS="+e.askpass, "SSH_ASKPASS_REQUIRE=force",
		EnvAskpass+"="+e.state, EnvToken+"="+token)
}

// outcome is how one child (rsync, or ssh minting a token) ended.
type outcome struct {
	status  int      // exit status; 128+n when killed by signal n
	refusal *Refusal // the gateway refused the token; nil if it did not
	words   string   // the gateway's last other "tokengate:" words
}

// hiddenRefusal stands for a refusal whose banner ssh did not print.
const hiddenRefusal = "the gateway refused the login; ssh did not show why " +
	"(ssh -q, or a LogLevel above INFO, hides the gateway's banner)"

// runChild runs argv with token in its environment, passing its stdio
// through while its stderr is watched for the gateway's refusals. The
// error is set only when argv could not be started.
func runChild(ctx context.Context, argv []string, env tokenEnv, token string,
	stdin io.Reader, stdout, stderr io.Writer) (outcome, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env.with(token)
	cmd.Stdin, cmd.Stdout = stdin, stdout
	watch := newStderrWatch(stderr)
	cmd.Stderr = watch
	// Interrupted, rsync gets the chance to clean up as it does on Ctrl-C.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	// If sync itself is killed outright, rsync is told to stop too.
	cmd.SysProcAttr = childAttrs()
	// An ssh ControlMaster left running holds stderr open; do not wait on it.
	cmd.WaitDelay = 5 * time.Second

	err := cmd.Run()
	if cmd.ProcessState == nil {
		return outcome{}, err
	}
	out := outcome{status: exitStatus(cmd.ProcessState)}
	out.refusal, out.words = watch.result()
	// askpass notes a refused login even when ssh keeps the banner to itself.
	if takeRefusedLogins(env.state) && out.refusal == nil && out.words == "" {
		out.refusal = &Refusal{Words: hiddenRefusal}
	}
	return out, nil
}

// exitStatus reads a finished process's status the way a shell reports it.
func exitStatus(ps interface{ Sys() any }) int {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return 1
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
