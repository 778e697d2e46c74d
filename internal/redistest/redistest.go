// Package redistest starts a real redis-server on a free loopback port for
// tests, and stops it when the test ends.
package redistest

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is one redis-server process owned by a test.
type Server struct {
	t    testing.TB
	Port int
	cmd  *exec.Cmd
}

// Start runs redis-server without persistence on a free loopback port.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is missing; `make test` installs it (scripts/deps.sh)")
	}
	s := &Server{t: t, Port: FreePort(t)}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// FreePort asks the kernel for an unused loopback port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// URL is the redis:// address of the server.
func (s *Server) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.Port) }

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// Restart starts the server again on the same port (empty: nothing persists).
func (s *Server) Restart() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", "--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if out, err := s.CLI("PING"); err == nil && strings.TrimSpace(out) == "PONG" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatal("redis-server did not answer PING within 10s")
}

// Stop kills the server; Restart brings it back.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// CLI runs redis-cli against this server and returns its output.
func (s *Server) CLI(args ...string) (string, error) {
	all := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)}, args...)
	out, err := exec.Command("redis-cli", all...).CombinedOutput()
	return string(out), err
}
