//go:build !linux

package proxy

import "net"

// withQuickAck is Linux-only; elsewhere the connection is left as it is.
func withQuickAck(conn net.Conn) (net.Conn, func()) { return conn, func() {} }
