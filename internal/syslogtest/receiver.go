// Package syslogtest runs RFC 5424 syslog collectors on loopback for tests:
// TCP and TLS with octet-counting framing, and UDP.
package syslogtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/octetcounting"
	"github.com/leodido/go-syslog/v4/rfc5424"
)

// Receiver is a syslog collector on loopback, as a SIEM's relay would run
// one: it parses every message it gets as RFC 5424, with octet-counting
// framing on TCP and TLS and one message per datagram on UDP.
type Receiver struct {
	t    testing.TB
	Addr string
	msgs chan *rfc5424.SyslogMessage
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	ln     net.Listener
	pc     net.PacketConn
	conns  []net.Conn
	errs   []error
	closed bool
}

// StartStream listens on addr ("127.0.0.1:0" for any port), with TLS
// when cfg is not nil.
func StartStream(t testing.TB, addr string, cfg *tls.Config) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	r := newReceiver(t, ln.Addr().String())
	r.ln = ln
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.Close)
	return r
}

// StartUDP listens for datagrams on a free loopback port.
func StartUDP(t testing.TB) *Receiver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := newReceiver(t, pc.LocalAddr().String())
	r.pc = pc
	r.wg.Add(1)
	go r.readDatagrams()
	t.Cleanup(r.Close)
	return r
}

func newReceiver(t testing.TB, addr string) *Receiver {
	return &Receiver{
		t:    t,
		Addr: addr,
		msgs: make(chan *rfc5424.SyslogMessage, 1024),
		stop: make(chan struct{}),
	}
}

func (r *Receiver) accept() {
	defer r.wg.Done()
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			conn.Close()
			return
		}
		r.conns = append(r.conns, conn)
		r.wg.Add(1)
		r.mu.Unlock()
		go func() {
			defer r.wg.Done()
			octetcounting.NewParser(syslog.WithListener(r.emit)).Parse(conn)
		}()
	}
}

func (r *Receiver) readDatagrams() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, _, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := rfc5424.NewParser().Parse(buf[:n])
		r.emit(&syslog.Result{Message: m, Error: err})
	}
}

func (r *Receiver) emit(res *syslog.Result) {
	if res.Error != nil {
		r.mu.Lock()
		r.errs = append(r.errs, res.Error)
		r.mu.Unlock()
		return
	}
	m, ok := res.Message.(*rfc5424.SyslogMessage)
	if !ok {
		return
	}
	select {
	case r.msgs <- m:
	case <-r.stop:
	}
}

// Next waits up to timeout for the next message.
func (r *Receiver) Next(timeout time.Duration) (*rfc5424.SyslogMessage, error) {
	select {
	case m := <-r.msgs:
		return m, nil
	case <-time.After(timeout):
		r.mu.Lock()
		defer r.mu.Unlock()
		return nil, errors.Join(append([]error{errors.New("no syslog message in time")},
			r.errs...)...)
	}
}

// Close stops the collector as a restart would: the listener and every
// connection close, and the port is free again.
func (r *Receiver) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	close(r.stop)
	if r.ln != nil {
		r.ln.Close()
	}
	if r.pc != nil {
		r.pc.Close()
	}
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// SelfSigned makes a loopback server certificate and a client config that
// trusts only it.
func SelfSigned(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "syslog test collector"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	}
	return server, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}
