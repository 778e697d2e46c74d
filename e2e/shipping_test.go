package e2e

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokengate/tokengate/internal/redistest"
	"github.com/tokengate/tokengate/internal/syslogtest"
)

// Denials reach a TLS syslog collector that the gateway trusts through
// --syslog-ca, as RFC 5424 messages carrying the JSON event.
func TestSyslogOverTLS(t *testing.T) {
	serverTLS, _ := syslogtest.SelfSigned(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cert := serverTLS.Certificates[0].Certificate[0]
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), 0o600); err != nil {
		t.Fatal(err)
	}
	collector := syslogtest.StartStream(t, "127.0.0.1:0", serverTLS)

	r := redistest.Start(t)
	g := startGateway(t, r, withArgs("--syslog", "tls://"+collector.Addr, "--syslog-ca", caFile))
	res := g.rsync(mintUnstoredToken(t), "-a", g.remote("x"), t.TempDir()+"/")
	expectRefused(t, res, "unknown token")

	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		m, err := collector.Next(time.Until(deadline))
		if err != nil {
			t.Fatal(err)
		}
		if m.Appname == nil || *m.Appname != "tokengate" || m.Message == nil {
			t.Fatalf("unexpected syslog message %+v", m)
		}
		var e event
		if err := json.Unmarshal([]byte(*m.Message), &e); err != nil {
			t.Fatalf("MSG is not the JSON event: %q", *m.Message)
		}
		if e.str("event.action") == "auth.denied" {
			if e.str("event.reason") != "token_unknown" || *m.Severity != 4 {
				t.Fatalf("denial shipped as %v with severity %d", e, *m.Severity)
			}
			return
		}
	}
	t.Fatal("the denial never reached the TLS collector")
}

// Every gateway appends to one Redis stream, so one consumer sees the fleet.
func TestEventStreamFromTwoGateways(t *testing.T) {
	r := redistest.Start(t)
	g1 := startGateway(t, r, withArgs("--name", "gw-one"))
	g2 := startGateway(t, r, withArgs("--name", "gw-two"))
	for _, g := range []*gateway{g1, g2} {
		expectRefused(t, g.rsync(mintUnstoredToken(t), "-a", g.remote("x"), t.TempDir()+"/"), "unknown token")
	}
	// Admin commands append to the same stream.
	created := tokenID(t, g1.createToken("x", "read", time.Hour))

	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := r.CLI("XRANGE", "tokengate:events", "-", "+")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, line := range strings.Split(out, "\n") {
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var e event
			if json.Unmarshal([]byte(line), &e) != nil {
				continue
			}
			if e.str("event.action") == "auth.denied" && e.str("event.reason") == "token_unknown" {
				seen[e.str("host.name")] = true
			}
			if e.str("event.action") == "token.created" && e.str("token.id") == created {
				seen["admin"] = true
			}
		}
		if seen["gw-one"] && seen["gw-two"] && seen["admin"] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream holds events from %v, want gw-one, gw-two and admin:\n%s", seen, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
