package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// side is one server under test, as the stock clients reach it.
type side struct {
	name string // "gateway" or "openssh"
	user string
	port int
	root string   // host path of the directory the client sees as its root
	logs string   // where client runs keep their stderr
	env  []string // extra client environment (the token for sshpass)
	auth []string // ssh options that pick the login method
	wrap []string // what runs ssh (sshpass for the token)
}

// sshArgv is the ssh command rsync runs: no config files, no host key
// prompts, no connection sharing; cipher "" keeps the client's defaults.
func (s *side) sshArgv(cipher string, verbose bool) []string {
	argv := append([]string{}, s.wrap...)
	argv = append(argv, "ssh", "-F", "/dev/null", "-p", strconv.Itoa(s.port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ConnectTimeout=10",
		"-o", "IdentityAgent=none")
	argv = append(argv, s.auth...)
	if verbose {
		argv = append(argv, "-v")
	} else {
		argv = append(argv, "-o", "LogLevel=ERROR")
	}
	if cipher != "" {
		argv = append(argv, "-c", cipher)
	}
	return argv
}

// remote is the rsync spec of a path under the side's root.
func (s *side) remote(path string) string {
	return fmt.Sprintf("%s@127.0.0.1:%s", s.user, path)
}

// rsync runs one stock rsync client and times it from fork to exit.
func (s *side) rsync(ctx context.Context, cipher string, timeout time.Duration,
	args ...string) (time.Duration, error) {
	return s.rsyncFrom(ctx, "", cipher, timeout, args...)
}

// rsyncFrom is rsync with the client's source address set (any 127/8
// address is loopback); "" leaves it to the kernel. Its stderr goes to a
// file, not a pipe: a pipe would make the wait last as long as any process
// that inherited it, not rsync's own life.
func (s *side) rsyncFrom(ctx context.Context, source, cipher string, timeout time.Duration,
	args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stderr, err := os.CreateTemp(s.logs, s.name+"-rsync-*.err")
	if err != nil {
		return 0, err
	}
	defer os.Remove(stderr.Name())
	defer stderr.Close()
	ssh := s.sshArgv(cipher, false)
	if source != "" {
		ssh = append(ssh, "-o", "BindAddress="+source)
	}
	argv := append([]string{"-e", strings.Join(ssh, " ")}, args...)
	cmd := exec.CommandContext(ctx, "rsync", argv...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stderr = stderr
	started := time.Now()
	err = cmd.Run()
	took := time.Since(started)
	if err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		return took, fmt.Errorf("%s: rsync %s: %v: %s", s.name, strings.Join(args, " "), err,
			clip(string(msg), 400))
	}
	return took, nil
}

// negotiated is what one ssh login settled on, from `ssh -v`.
type negotiated struct {
	Kex     string `json:"kex,omitempty"`
	Cipher  string `json:"cipher,omitempty"`
	MAC     string `json:"mac,omitempty"`
	Refused string `json:"refused,omitempty"` // why the combination is n/a
}

var (
	kexLine    = regexp.MustCompile(`kex: algorithm: (\S+)`)
	cipherLine = regexp.MustCompile(`kex: server->client cipher: (\S+) MAC: (\S+)`)
)

// negotiate logs in once with `ssh -v` and reads the algorithms chosen. The
// command is refused by both servers (neither runs anything but rsync); the
// key exchange has happened by then.
func (s *side) negotiate(ctx context.Context, cipher string) (negotiated, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	argv := append(s.sshArgv(cipher, true), s.user+"@127.0.0.1", "true")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdin = strings.NewReader("")
	cmd.WaitDelay = 5 * time.Second
	out, _ := cmd.CombinedOutput()
	text := string(out)
	if i := strings.Index(text, "no matching cipher found"); i >= 0 {
		return negotiated{Refused: "no matching cipher (the server does not offer it)"}, nil
	}
	var n negotiated
	if m := kexLine.FindStringSubmatch(text); m != nil {
		n.Kex = m[1]
	}
	if m := cipherLine.FindStringSubmatch(text); m != nil {
		n.Cipher, n.MAC = m[1], m[2]
	}
	if n.Cipher == "" {
		return n, fmt.Errorf("%s: ssh -v: no cipher negotiated: %s", s.name, clip(text, 600))
	}
	return n, nil
}

// gatewaySide is the gateway, reached with the token through sshpass.
func (b *bench) gatewaySide() *side {
	return &side{
		name: "gateway", user: "bench", port: b.gwPort, root: b.gwRoot(), logs: b.logs(),
		env:  []string{"SSHPASS=" + b.token},
		wrap: []string{"sshpass", "-e"},
		auth: []string{"-o", "PubkeyAuthentication=no",
			"-o", "PreferredAuthentications=password,keyboard-interactive"},
	}
}

// opensshSide is the throwaway sshd, reached with its client key.
func (b *bench) opensshSide() *side {
	return &side{
		name: "openssh", user: "root", port: b.sshPort, root: b.sshRoot(), logs: b.logs(),
		auth: []string{"-i", b.sshKey, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "PreferredAuthentications=publickey"},
	}
}

func (b *bench) logs() string    { return filepath.Join(b.work, "logs") }
func (b *bench) gwRoot() string  { return filepath.Join(b.work, "gw", "data", "bench") }
func (b *bench) sshRoot() string { return filepath.Join(b.work, "sshd", "data") }

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
