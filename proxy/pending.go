package proxy

import (
	"net"
	"net/netip"
	"sync"
)

// pendingLogins counts connections that have not finished logging in, in
// all and per source address, so that sockets which never authenticate
// cannot pile up and starve real clients.
type pendingLogins struct {
	mu        sync.Mutex
	total     int
	bySource  map[string]int
	max       int
	maxSource int
	// exempt networks (the allow-list) are held to the total cap only.
	exempt []netip.Prefix
}

func newPendingLogins(max, maxSource int, exempt []netip.Prefix) *pendingLogins {
	return &pendingLogins{bySource: map[string]int{}, max: max, maxSource: maxSource,
		exempt: exempt}
}

// enter admits a connection or refuses it; release (safe to call more than
// once) gives its place back.
func (p *pendingLogins) enter(addr net.Addr) (release func(), ok bool) {
	src := addr.String()
	perSource := p.maxSource
	if ip, ok := addrIP(addr); ok {
		src = ip.String()
		for _, n := range p.exempt {
			if n.Contains(ip) {
				perSource = p.max
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.total >= p.max || p.bySource[src] >= perSource {
		return func() {}, false
	}
	p.total++
	p.bySource[src]++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.total--
			if p.bySource[src]--; p.bySource[src] <= 0 {
				delete(p.bySource, src)
			}
		})
	}, true
}
