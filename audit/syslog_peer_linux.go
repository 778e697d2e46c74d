package audit

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the collector has closed or reset a stream
// connection. Writing into a connection whose peer has gone still succeeds
// once, into the kernel's buffer, and that event is silently lost; asking the
// kernel for the socket's TCP state first saves the first event after every
// collector restart, without reading (and so consuming TLS records) from it.
func peerClosed(conn net.Conn) bool {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	state := uint8(unix.BPF_TCP_ESTABLISHED)
	err = raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			state = info.State
		}
	})
	return err != nil || state != unix.BPF_TCP_ESTABLISHED
}
