package proxy

import (
	"errors"
	"net"

	"github.com/pires/go-proxyproto"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tokengate/tokengate/audit"
)

// connectionFailed reports a connection that ended before login. A PROXY
// header that is missing, unwanted or malformed is a refusal and gets an
// event with a reason; other handshake failures (scanners, clients that
// hang up, the login deadline) are logged without one, since no token was
// judged.
func (s *Server) connectionFailed(conn net.Conn, err error) {
	addr := conn.RemoteAddr()
	if isProxyHeaderError(err) {
		ev := audit.Event{Action: audit.ActionAuthDenied, Outcome: "failure",
			Reason: audit.ReasonProxyHeaderInvalid, Message: "PROXY header refused: " + err.Error()}
		// The underlying socket's peer is the balancer (or the impostor).
		if pc, ok := conn.(*proxyproto.Conn); ok {
			addr = pc.Raw().RemoteAddr()
		}
		ev.SourceIP, ev.SourcePort = splitAddr(addr)
		s.cfg.Events.Emit(ev)
		return
	}
	s.cfg.Events.Logger().WithField("source.address", addr.String()).WithError(err).
		Info("proxy: handshake: failed")
}

func isProxyHeaderError(err error) bool {
	for _, e := range []error{proxyproto.ErrNoProxyProtocol, proxyproto.ErrSuperfluousProxyHeader,
		proxyproto.ErrCantReadVersion1Header, proxyproto.ErrLineMustEndWithCrlf,
		proxyproto.ErrCantReadProtocolVersionAndCommand, proxyproto.ErrInvalidAddress,
		proxyproto.ErrInvalidPortNumber, proxyproto.ErrUnsupportedProtocolVersionAndCommand,
		proxyproto.ErrUnsupportedAddressFamilyAndProtocol, proxyproto.ErrInvalidLength,
		proxyproto.ErrVersion1HeaderTooLong} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// methodRefused logs attempts with methods the gateway does not offer
// (publickey, hostbased, gssapi). "none" is every client's first probe and
// the offered methods log their own outcome, so neither is repeated here.
func (s *Server) methodRefused(meta gossh.ConnMetadata, method string, err error) {
	switch method {
	case "none", "password", "keyboard-interactive":
		return
	}
	if err == nil {
		return
	}
	ev := audit.Event{Action: audit.ActionAuthDenied, Outcome: "failure",
		Reason: audit.ReasonMethodForbidden, User: meta.User(),
		Message: "authentication method " + method + " is not offered; log in with a token",
		Fields:  map[string]any{"auth.method": method}}
	ev.SourceIP, ev.SourcePort = splitAddr(meta.RemoteAddr())
	s.cfg.Events.Emit(ev)
}
