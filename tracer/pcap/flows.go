package pcap

import (
	"fmt"
	"net/netip"
)

// endpoints is a directed pair of normalized addresses: a sends to b (or, for
// ConnOpen/ConnClose, a is the client and b the server).
type endpoints struct{ a, b netip.AddrPort }

// conn is the state of one tracked TCP connection. seq[0] is the next
// sequence number from key.a to key.b, seq[1] the reverse direction.
type conn struct {
	key        endpoints // canonical order: key.a sorts before key.b
	seq        [2]uint32
	prev, next *conn // LRU list, most recently used at head
}

// flowTable maps connections to their state, bounded by max entries with
// least-recently-used eviction. Only a new connection allocates.
type flowTable struct {
	// hot holds the connections looked up last, checked before the map
	// (hashing a key of two addresses costs more than comparing it to a
	// few): a relay's frames come in bursts on few connections.
	hot     [4]*conn
	nextHot int
	m       map[endpoints]*conn
	head    *conn // most recently used
	tail    *conn // least recently used
	max     int
	evicted int64
}

func (ft *flowTable) init(max int) {
	ft.m = make(map[endpoints]*conn)
	ft.hot = [4]*conn{}
	ft.head, ft.tail = nil, nil
	ft.max = max
}

func (ft *flowTable) len() int { return len(ft.m) }

// lookup returns the connection for ep, creating it with fresh initial
// sequence numbers if unknown, and marks it most recently used. fwd reports
// whether ep runs in the direction of seq[0].
func (ft *flowTable) lookup(ep endpoints, isn func() uint32) (c *conn, fwd, existed bool) {
	key, fwd := ep, true
	if ep.b.Compare(ep.a) < 0 {
		key, fwd = endpoints{ep.b, ep.a}, false
	}
	for _, h := range ft.hot {
		if h != nil && h.key == key {
			ft.touch(h)
			return h, fwd, true
		}
	}
	if c = ft.m[key]; c != nil {
		ft.touch(c)
		ft.cache(c)
		return c, fwd, true
	}
	for len(ft.m) >= ft.max && ft.tail != nil {
		ft.remove(ft.tail)
		ft.evicted++
	}
	c = &conn{key: key, seq: [2]uint32{isn(), isn()}}
	ft.m[key] = c
	ft.pushFront(c)
	ft.cache(c)
	return c, fwd, false
}

// touch marks c most recently used.
func (ft *flowTable) touch(c *conn) {
	if ft.head != c {
		ft.unlink(c)
		ft.pushFront(c)
	}
}

// cache puts c in hot, in place of the entry put there longest ago.
func (ft *flowTable) cache(c *conn) {
	ft.hot[ft.nextHot] = c
	ft.nextHot = (ft.nextHot + 1) % len(ft.hot)
}

func (ft *flowTable) remove(c *conn) {
	if ft.m[c.key] != c {
		return
	}
	delete(ft.m, c.key)
	ft.unlink(c)
	for i, h := range ft.hot {
		if h == c {
			ft.hot[i] = nil
		}
	}
}

func (ft *flowTable) unlink(c *conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else if ft.head == c {
		ft.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else if ft.tail == c {
		ft.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

func (ft *flowTable) pushFront(c *conn) {
	c.next = ft.head
	if ft.head != nil {
		ft.head.prev = c
	}
	ft.head = c
	if ft.tail == nil {
		ft.tail = c
	}
}

// normalize validates src and dst and returns them with IPv4-mapped IPv6
// addresses unmapped and zones dropped, so that both directions and both
// spellings of an IPv4 address name the same connection.
func (w *Writer) normalize(src, dst netip.AddrPort) (endpoints, error) {
	if sa, da := src.Addr(), dst.Addr(); sa.Is4() && da.Is4() {
		return endpoints{src, dst}, nil // plain IPv4 (not mapped, no zone): nothing to change
	}
	if !src.IsValid() || !dst.IsValid() {
		return endpoints{}, fmt.Errorf("invalid address pair %v -> %v", src, dst)
	}
	sa, da := src.Addr().Unmap().WithZone(""), dst.Addr().Unmap().WithZone("")
	if sa.Is4() != da.Is4() {
		return endpoints{}, fmt.Errorf("mixed address families %v -> %v", src, dst)
	}
	return endpoints{netip.AddrPortFrom(sa, src.Port()), netip.AddrPortFrom(da, dst.Port())}, nil
}
