package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections on a loopback port to a target. Pause
// makes it stop reading what clients send, as a frozen server (SIGSTOP, a
// VM paused) would: the sockets stay open, the clients' writes fill the
// kernel's buffers and then block. Resume lets it go on. Down plays a
// network that goes away (a phone in a lift): every connection is reset,
// no FIN, no close frame, and new ones are reset until Up.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	paused chan struct{} // non-nil while paused; closed by Resume
	down   bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

// StartProxy listens on a random 127.0.0.1 port and forwards to target
// (host:port) until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.Resume()
		p.CloseConns()
		p.wg.Wait()
	})
	p.wg.Go(p.accept)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			reset(c)
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(c, s); c.Close() })
		p.wg.Go(func() { p.forward(c, s); s.Close() })
	}
}

// forward copies client to server, waiting while paused.
func (p *Proxy) forward(c, s net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		p.mu.Lock()
		gate := p.paused
		p.mu.Unlock()
		if gate != nil {
			<-gate
		}
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Pause stops reading from clients (at most one more read of 32 KiB per
// connection may be under way).
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused == nil {
		p.paused = make(chan struct{})
	}
}

// Resume reads from clients again. Harmless when not paused.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused != nil {
		close(p.paused)
		p.paused = nil
	}
}

// CloseConns ends every proxied connection: a client write blocked on one
// fails at once.
func (p *Proxy) CloseConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// Down resets every proxied connection, both ends, and every new one until
// Up: to the client and to the target the network just vanished.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		reset(c)
	}
	p.conns = nil
}

// Up lets connections through again.
func (p *Proxy) Up() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// reset closes c with a TCP RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
