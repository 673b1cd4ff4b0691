package session

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/gobwas/ws"

	"github.com/switchboardgw/switchboard/internal/proxyproto"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

// The edge behind a load balancer speaking the PROXY protocol, as
// internal/app builds it (-proxy-protocol required, -trusted-proxies): the
// client's address is the header's, for $connect, the events and the
// registry, and the reactor, reading the raw socket after the header, gets
// every frame.
func TestTheClientBehindAPROXYHeaderIsTheSourceOfItsConnection(t *testing.T) {
	var mu sync.Mutex
	var seen []string // source IPs $connect saw
	r := newRig(t, func(req *backend.ConnectRequest) backend.ConnectResponse {
		mu.Lock()
		seen = append(seen, req.RequestContext.Identity.SourceIP)
		mu.Unlock()
		return backend.ConnectResponse{}
	}, behindProxy(proxyproto.Config{Required: true, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}))

	for i, tc := range []struct{ header, client string }{
		{"PROXY TCP4 203.0.113.7 198.51.100.2 40000 443\r\n", "203.0.113.7"},
		{"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n", "2001:db8::7"},
	} {
		d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_, err = c.Write([]byte(tc.header))
			}
			return c, err
		}}
		c, _ := r.dialWith(t, d, r.url)
		ev := r.expect(t, connectSubject, "")
		mu.Lock()
		saw := seen[i]
		mu.Unlock()
		if saw != tc.client {
			t.Errorf("$connect saw source %q, want the header's %s", saw, tc.client)
		}
		if got := ev.body.RequestContext.Identity.SourceIP; got != tc.client {
			t.Errorf("CONNECT source %q, want the header's %s", got, tc.client)
		}
		rec, err := r.reg.Lookup(t.Context(), ev.connID)
		if err != nil || rec.SourceIP != tc.client {
			t.Errorf("registry record %+v, %v; want source %s", rec, err, tc.client)
		}
		if got := r.says(t, c, ev.connID, "ping through proxy").body.RequestContext.Identity.SourceIP; got != tc.client {
			t.Errorf("MESSAGE source %q, want the header's %s", got, tc.client)
		}
		r.reaches(t, c, ev.connID, "pong through proxy")
	}
}
