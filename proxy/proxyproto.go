package proxy

import (
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// TrustProxyHeaders wraps a listener so that connections from trusted load
// balancers must start with a PROXY protocol header (v1 or v2), whose source
// address then stands for the client in logs, bans and limits. Anyone else
// must not send one: a header from an untrusted peer would let it choose the
// address it is judged by, so such a connection is refused.
func TrustProxyHeaders(ln net.Listener, trusted []netip.Prefix, timeout time.Duration) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		ReadHeaderTimeout: timeout,
		ConnPolicy: func(opts proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if ip, ok := addrIP(opts.Upstream); ok {
				for _, p := range trusted {
					if p.Contains(ip) {
						return proxyproto.REQUIRE, nil
					}
				}
			}
			return proxyproto.REJECT, nil
		},
	}
}
