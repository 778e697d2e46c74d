package e2e

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tokengate/tokengate/internal/redistest"
)

// dialWithHeader connects from a local address, optionally sends a PROXY v1
// header, and tries a password login.
func dialWithHeader(g *gateway, from, header, password string) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(g.port))
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if header != "" {
		if _, err := conn.Write([]byte(header)); err != nil {
			return err
		}
	}
	cfg := &gossh.ClientConfig{User: "lb", Auth: []gossh.AuthMethod{gossh.Password(password)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey()}
	c, _, _, err := gossh.NewClientConn(conn, "gw", cfg)
	if err != nil {
		return err
	}
	return c.Close()
}

// Behind a trusted balancer the PROXY header's source is the client that
// events name; anyone else may not send a header, and the balancer must.
func TestProxyProtocol(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r, withArgs("--proxy-protocol-from", "127.0.0.1/32"))
	tok := g.createToken("pp", "read", time.Hour)
	header := fmt.Sprintf("PROXY TCP4 198.51.100.7 127.0.0.1 40000 %d\r\n", g.port)

	if err := dialWithHeader(g, "127.0.0.1", header, tok); err != nil {
		t.Fatalf("login through the balancer: %v", err)
	}
	g.waitEvent("auth.granted", map[string]string{"source.ip": "198.51.100.7", "source.port": "40000"})

	if err := dialWithHeader(g, "127.0.0.1", "", tok); err == nil {
		t.Fatal("the balancer's address logged in without a PROXY header")
	}
	if err := dialWithHeader(g, "127.0.0.2", header, tok); err == nil {
		t.Fatal("an untrusted peer chose its address with a PROXY header")
	}
	g.waitEvent("auth.denied", map[string]string{"event.reason": "proxy_header_invalid"})
	if err := dialWithHeader(g, "127.0.0.2", "", tok); err != nil {
		t.Fatalf("a direct client was refused: %v", err)
	}
	g.waitEvent("auth.granted", map[string]string{"source.ip": "127.0.0.2"})
}
