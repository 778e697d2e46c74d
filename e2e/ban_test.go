package e2e

import (
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tokengate/tokengate/internal/redistest"
)

// tryLogin makes one password login from a given local address with the Go
// SSH client (fast enough for a thousand attempts); it reports whether the
// login succeeded and whether the gateway closed the connection before the
// handshake.
func tryLogin(g *gateway, from, password string) (ok, closedEarly bool) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(g.port))
	if err != nil {
		return false, true
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cfg := &gossh.ClientConfig{User: "bot", Auth: []gossh.AuthMethod{gossh.Password(password)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey()}
	c, _, _, err := gossh.NewClientConn(conn, "127.0.0.1", cfg)
	if err != nil {
		atAuth := strings.Contains(err.Error(), "unable to authenticate") ||
			strings.Contains(err.Error(), "too many authentication failures")
		return false, !atAuth
	}
	c.Close()
	return true, false
}

// A thousand wrong tokens from one address ban it after the threshold, with
// one source.banned event; another address still logs in; the ban expires;
// an allow-listed address is never banned. The metrics endpoint counts it.
func TestBruteForceBan(t *testing.T) {
	r := redistest.Start(t)
	opsPort := freePort(t)
	g := startGateway(t, r, withArgs("--ban-threshold", "10", "--ban-time", "3s",
		"--allow-networks", "127.0.0.3/32", "--ops", "--ops-listen", "127.0.0.1:"+itoa(opsPort)))
	g.seed("b", map[string]string{"f": "f\n"})
	good := g.createToken("b", "read", time.Hour)
	wrong := mintUnstoredToken(t)

	refused, early := 0, 0
	for i := 0; i < 1000; i++ {
		ok, closed := tryLogin(g, "127.0.0.1", wrong)
		if ok {
			t.Fatal("a wrong token logged in")
		}
		if closed {
			early++
		} else {
			refused++
		}
	}
	// The tenth refusal bans the source (and says so); later ones never reach auth.
	if denied := len(g.events("auth.denied")); refused != 10 || early != 990 || denied != 10 {
		t.Fatalf("%d refused, %d cut before auth, %d auth.denied events; want 10, 990, 10",
			refused, early, denied)
	}
	if n := len(g.events("source.banned")); n != 1 {
		t.Fatalf("%d source.banned events, want exactly 1", n)
	}
	g.waitEvent("source.banned", map[string]string{"source.ip": "127.0.0.1"})

	// The banned address cannot even use a good token; another can.
	if ok, _ := tryLogin(g, "127.0.0.1", good); ok {
		t.Fatal("banned address logged in")
	}
	if ok, _ := tryLogin(g, "127.0.0.2", good); !ok {
		t.Fatal("another address was refused")
	}
	for i := 0; i < 15; i++ {
		if ok, _ := tryLogin(g, "127.0.0.3", wrong); ok {
			t.Fatal("wrong token logged in")
		}
	}
	if ok, _ := tryLogin(g, "127.0.0.3", good); !ok {
		t.Fatal("allow-listed address was banned")
	}

	// The ban expires by itself.
	time.Sleep(3500 * time.Millisecond)
	if ok, _ := tryLogin(g, "127.0.0.1", good); !ok {
		t.Fatal("ban did not expire")
	}

	// The counters moved as the attempts did.
	resp, err := http.Get("http://127.0.0.1:" + itoa(opsPort) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	if v := families["tokengate_bans_total"].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("tokengate_bans_total = %v, want 1", v)
	}
	failures := 0.0
	for _, m := range families["tokengate_auth_attempts_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "reason" && l.GetValue() == "token_unknown" {
				failures += m.GetCounter().GetValue()
			}
		}
	}
	if failures != 25 {
		t.Errorf("token_unknown attempts counted %v, want 25 (10 + 15)", failures)
	}
}

// `gateway ban list` shows a ban and `gateway ban remove` lifts it early.
func TestBanCLI(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r, withArgs("--ban-threshold", "3", "--ban-time", "1h",
		"--allow-networks", "127.0.0.3/32"))
	good := g.createToken("c", "read", time.Hour)
	for i := 0; i < 3; i++ {
		tryLogin(g, "127.0.0.1", mintUnstoredToken(t))
	}
	if ok, _ := tryLogin(g, "127.0.0.1", good); ok {
		t.Fatal("not banned after the threshold")
	}
	out, err := exec.Command(gatewayBin, "ban", "list", "--redis", r.URL()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "127.0.0.1") {
		t.Fatalf("ban list: %v\n%s", err, out)
	}
	out, err = exec.Command(gatewayBin, "ban", "remove", "--redis", r.URL(), "127.0.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("ban remove: %v\n%s", err, out)
	}
	if ok, _ := tryLogin(g, "127.0.0.1", good); !ok {
		t.Fatal("still banned after ban remove")
	}
	out, _ = exec.Command(gatewayBin, "ban", "remove", "--redis", r.URL(), "not-an-ip").CombinedOutput()
	if !strings.Contains(string(out), "not an IP address") {
		t.Fatalf("bad address: %s", out)
	}
}

// Every refusal takes at least the constant failure delay, so the time to
// answer does not tell an unknown token from a wrong secret.
func TestRefusalsTakeTheSameMinimumTime(t *testing.T) {
	r := redistest.Start(t)
	g := startGateway(t, r)
	real := g.createToken("d", "read", time.Hour)
	for name, tok := range map[string]string{
		"unknown": mintUnstoredToken(t), "wrong secret": withOtherSecret(t, real),
		"malformed": "tg_nonsense",
	} {
		start := time.Now()
		if ok, _ := tryLogin(g, "127.0.0.1", tok); ok {
			t.Fatalf("%s logged in", name)
		}
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Errorf("%s refused after %v, before the 250ms floor", name, took)
		}
	}
}
