package proxy

import (
	"net"
	"sync/atomic"
	"syscall"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// quickAckConn acknowledges every segment at once until the login is done.
//
// OpenSSH clients keep Nagle's algorithm on until a session starts, and
// during the key exchange they wait for our ACK before sending their next
// small packet; with Linux's delayed ACKs that cost two stalls of about 40 ms
// per connection, a third of the time to a finished small rsync. The kernel
// clears TCP_QUICKACK by itself, so it is set again after every read.
type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
	on  atomic.Bool
}

// withQuickAck wraps conn when its socket is TCP; done turns it off.
func withQuickAck(conn net.Conn) (net.Conn, func()) {
	inner := conn
	if pc, ok := conn.(*proxyproto.Conn); ok {
		inner = pc.Raw()
	}
	tcp, ok := inner.(*net.TCPConn)
	if !ok {
		return conn, func() {}
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return conn, func() {}
	}
	q := &quickAckConn{Conn: conn, raw: raw}
	q.on.Store(true)
	return q, func() { q.on.Store(false) }
}

func (q *quickAckConn) Read(p []byte) (int, error) {
	n, err := q.Conn.Read(p)
	if q.on.Load() {
		_ = q.raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
		})
	}
	return n, err
}
