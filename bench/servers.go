package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// jailUID and jailGID are the gateway's default jail ids. The sshd side runs
// rrsync as the same ids, so both servers write files the same way.
const jailUID, jailGID = 64050, 64050

// proc is one server process the bench started, in its own process group.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

// start runs argv with its output in logPath. The process dies with the
// bench (Pdeathsig) even if the bench is killed before it can stop it.
func (b *bench) start(name, logPath string, argv ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	b.procs = append(b.procs, p)
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop ends the process, its group and whatever is left below it: sshd's
// per-connection children start sessions of their own.
func (p *proc) stop() {
	if !p.running() {
		return
	}
	below := descendants(p.pid())
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.exited
	}
	for _, pid := range below {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// logTail is the end of a process's log, for error messages.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls ok every 50ms until it is true, the process exits, or the
// timeout passes.
func waitFor(p *proc, timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ok() {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("%s exited at start: %s", p.name, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %s: %s", p.name, timeout, p.logTail())
}

// startRedis runs a redis-server without persistence on a free loopback port.
func (b *bench) startRedis() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	b.redisAddr = fmt.Sprintf("127.0.0.1:%d", port)
	p, err := b.start("redis-server", filepath.Join(b.work, "redis.log"), "redis-server",
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: b.redisAddr})
	defer rdb.Close()
	return waitFor(p, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err() == nil
	})
}

func (b *bench) redisURL() string { return "redis://" + b.redisAddr + "/0" }

// startGateway runs `gateway serve` on a free port, with its ops listener
// (metrics) on another, and waits for its ready event. It reuses the state
// dir, so a restart keeps the host key.
func (b *bench) startGateway() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	ops, err := freePort()
	if err != nil {
		return err
	}
	b.gwPort, b.opsAddr = port, fmt.Sprintf("127.0.0.1:%d", ops)
	b.gwStarts++
	logPath := filepath.Join(b.work, fmt.Sprintf("gateway-%d.log", b.gwStarts))
	p, err := b.start("gateway", logPath, b.opts.gateway, "serve",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--redis", b.redisURL(),
		"--data-dir", filepath.Join(b.work, "gw", "data"),
		"--state-dir", filepath.Join(b.work, "gw", "state"),
		"--ops", "--ops-listen", b.opsAddr)
	if err != nil {
		return err
	}
	b.gw = p
	b.report.Setup["gateway"] = strings.Join(p.cmd.Args[1:], " ")
	return waitFor(p, 20*time.Second, func() bool {
		log, _ := os.ReadFile(logPath)
		return bytes.Contains(log, []byte(`"gateway.ready"`))
	})
}

// restartGateway gives a case a fresh process, so its memory is measured
// from a clean baseline rather than after earlier transfers.
func (b *bench) restartGateway() error {
	if b.gw != nil {
		b.gw.stop()
	}
	return b.startGateway()
}

// createToken runs `gateway token create` for the bench's root. Its session
// cap is raised above what cases 5 and 6 hold at once, as an admin would for
// a heavy client; the gateway's default cap would refuse them.
func (b *bench) createToken(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.opts.gateway, "token", "create", "--redis", b.redisURL(),
		"--root", "bench", "--scope", "read,write", "--ttl", "24h", "--note", "bench",
		"--max-sessions", strconv.Itoa(max(b.scale.Idle, b.scale.Concurrent)+100))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("token create: %v: %s", err, stderr.String())
	}
	b.token = strings.TrimSpace(string(out))
	if !strings.HasPrefix(b.token, "tg_") {
		return fmt.Errorf("token create printed %q", b.token)
	}
	return nil
}

// sshdConfig is the throwaway sshd's whole configuration: key auth for root
// only, rrsync forced on the data dir and run as the jail's ids, nothing
// else offered. rrsync's single-run lock is off (-no-lock): it refuses a
// second concurrent login, and the gateway has no such lock. MaxStartups is
// raised so the concurrency case measures sshd, not its default cap on
// unauthenticated connections. sshd runs the forced command through root's
// shell, and bash sources ~/.bashrc when started by sshd unless it is
// nested (SHLVL set): SetEnv SHLVL=1 keeps whatever root's .bashrc holds on
// this machine out of the measurement, as a dedicated account's would be.
const sshdConfig = `ListenAddress 127.0.0.1:%[1]d
HostKey %[2]s/host_ed25519
PidFile none
UsePAM no
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile %[2]s/authorized_keys
StrictModes no
ForceCommand /usr/bin/setpriv --reuid=%[4]d --regid=%[4]d --clear-groups /usr/bin/rrsync -no-lock %[3]s
PermitTTY no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 1000
LoginGraceTime 30
LogLevel ERROR
SetEnv SHLVL=1
`

// startSSHD makes a host key and a client key, writes the config and runs
// sshd in the foreground on a free loopback port.
func (b *bench) startSSHD(ctx context.Context) error {
	dir := filepath.Join(b.work, "sshd")
	// rrsync runs as the jail uid and must get through to the data dir.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	for _, key := range []string{"host_ed25519", "client_ed25519"} {
		cmd := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "",
			"-C", "tokengate-bench", "-f", filepath.Join(dir, key))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client_ed25519.pub"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return err
	}
	b.sshKey = filepath.Join(dir, "client_ed25519")

	// sshd refuses to start without its privilege separation dir, which
	// the package only makes when its service starts.
	if _, err := os.Stat("/run/sshd"); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			return err
		}
		b.madeRunSSHD = true
	}

	port, err := freePort()
	if err != nil {
		return err
	}
	b.sshPort = port
	conf := filepath.Join(dir, "sshd_config")
	text := fmt.Sprintf(sshdConfig, port, dir, b.sshRoot(), jailUID)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	b.report.Setup["sshd_config"] = text
	p, err := b.start("sshd", filepath.Join(b.work, "sshd.log"), "/usr/sbin/sshd", "-D", "-e",
		"-f", conf)
	if err != nil {
		return err
	}
	b.sshd = p
	return waitFor(p, 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// stopAll stops every process the bench started, newest first.
func (b *bench) stopAll() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		b.procs[i].stop()
	}
	if b.madeRunSSHD {
		_ = os.Remove("/run/sshd")
	}
}
