package nodecmd

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Direct commands (docs/cluster.md, "Direct commands"): a node that listens
// for them (ServerDeps.Direct) answers the same commands on a TCP
// connection from the caller, without nats-server in between: two messages
// through NATS per command are the larger part of a cross-node post's cost.
// A caller learns the address, and a secret that only nodes on the
// cluster's NATS can learn, from the built-in command CmdDirect over NATS;
// it falls back to NATS whenever the direct path is not there.

// CmdDirect asks a node for its direct address; answered by every Server.
const CmdDirect = "direct"

// Reply headers of CmdDirect; no Sb-Addr: the node has no direct listener.
const (
	hdrAddr   = "Sb-Addr"
	hdrSecret = "Sb-Direct-Secret"
)

// directMagic opens a direct connection, followed by the hex secret and a
// newline.
const directMagic = "SBDC1\n"

const (
	secretLen = 32 // bytes; hex-encoded on the wire
	// maxDirectFrame bounds one frame: a post's payload is bounded far
	// below by the API; a frame above this ends the connection.
	maxDirectFrame = 8 << 20
	// directHandshake bounds the secret's arrival on a new connection.
	directHandshake = 5 * time.Second
)

// directKeepAlive finds a peer that vanished without a word (its host
// died, a partition) within about 8 s of silence, on both ends: the
// caller then goes back to NATS and the dead-owner rule.
var directKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: time.Second, Count: 3}

func newSecret() string {
	var b [secretLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("nodecmd: crypto/rand failed: " + err.Error()) // cannot happen on Linux
	}
	return hex.EncodeToString(b[:])
}

// A frame: u32 length of what follows, u32 sequence, u16 header count,
// each header as u16 key length, key, u16 value length, value; then the
// data. A reply carries the sequence of its request.
func appendFrame(dst []byte, seq uint32, m *nats.Msg) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, seq)
	n := 0
	for _, vs := range m.Header {
		n += len(vs)
	}
	if n > 0xffff {
		return dst[:start], errors.New("nodecmd: too many headers")
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	for k, vs := range m.Header {
		for _, v := range vs {
			if len(k) > 0xffff || len(v) > 0xffff {
				return dst[:start], errors.New("nodecmd: header too long")
			}
			dst = binary.BigEndian.AppendUint16(dst, uint16(len(k)))
			dst = append(dst, k...)
			dst = binary.BigEndian.AppendUint16(dst, uint16(len(v)))
			dst = append(dst, v...)
		}
	}
	dst = append(dst, m.Data...)
	size := len(dst) - start - 4
	if size > maxDirectFrame {
		return dst[:start], fmt.Errorf("nodecmd: command of %d bytes: too large", size)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(size))
	return dst, nil
}

// readFrame reads one frame; buf is reused for its bytes.
func readFrame(r *bufio.Reader, buf []byte) (seq uint32, m *nats.Msg, _ []byte, err error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, buf, err
	}
	size := int(binary.BigEndian.Uint32(head[:]))
	if size < 6 || size > maxDirectFrame {
		return 0, nil, buf, fmt.Errorf("nodecmd: direct frame of %d bytes", size)
	}
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	b := buf[:size]
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, buf, err
	}
	seq = binary.BigEndian.Uint32(b)
	n := int(binary.BigEndian.Uint16(b[4:]))
	b = b[6:]
	m = &nats.Msg{Header: make(nats.Header, n)}
	field := func() (string, bool) {
		if len(b) < 2 {
			return "", false
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+l {
			return "", false
		}
		s := string(b[2 : 2+l])
		b = b[2+l:]
		return s, true
	}
	for range n {
		k, ok1 := field()
		v, ok2 := field()
		if !ok1 || !ok2 {
			return 0, nil, buf, errors.New("nodecmd: malformed direct frame")
		}
		m.Header[k] = append(m.Header[k], v)
	}
	if len(b) > 0 {
		m.Data = append([]byte(nil), b...) // handlers keep it (a queued post)
	}
	return seq, m, buf, nil
}

// checkSecret reads a new connection's opening and compares its secret in
// constant time.
func checkSecret(r *bufio.Reader, secret string) error {
	want := directMagic + secret + "\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, []byte(want)) != 1 {
		return errors.New("nodecmd: direct connection with a wrong secret")
	}
	return nil
}

// advertised is the address to give out for a listener: advertise if set,
// else the listener's own when it names a host.
func advertised(ln net.Listener, advertise string) (string, error) {
	if advertise != "" {
		return advertise, nil
	}
	a, ok := ln.Addr().(*net.TCPAddr)
	if !ok || a.IP == nil || a.IP.IsUnspecified() {
		return "", fmt.Errorf("nodecmd: direct listener %s has no host others can dial: set its advertised address", ln.Addr())
	}
	return a.String(), nil
}

// directReplies writes the replies of one direct connection, in the order
// they are ready.
type directReplies struct {
	mu  sync.Mutex
	c   net.Conn
	buf []byte
	log *slog.Logger
}

func (d *directReplies) send(seq uint32, reply *nats.Msg) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	if d.buf, err = appendFrame(d.buf[:0], seq, reply); err == nil {
		_ = d.c.SetWriteDeadline(time.Now().Add(DefaultTimeout))
		_, err = d.c.Write(d.buf)
	}
	if err != nil {
		d.log.Debug("direct reply not written", "err", err)
		_ = d.c.Close() // the caller applies the dead-owner rule
	}
	if cap(d.buf) > 64<<10 {
		d.buf = nil // a large reply's buffer is not kept
	}
}

// acceptDirect serves the direct listener until stopDirect closes it.
func (s *Server) acceptDirect() {
	for {
		c, err := s.direct.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("direct commands: accept failed; NATS only from now", "err", err)
			}
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetKeepAliveConfig(directKeepAlive)
		}
		s.dmu.Lock()
		if s.dconns == nil { // stopping
			s.dmu.Unlock()
			_ = c.Close()
			return
		}
		s.dconns[c] = struct{}{}
		s.dmu.Unlock()
		s.dreaders.Go(func() { s.readDirect(c) })
	}
}

// readDirect dispatches the commands of one direct connection, after its
// secret, until it or the server ends.
func (s *Server) readDirect(c net.Conn) {
	r := bufio.NewReaderSize(c, 16<<10)
	_ = c.SetReadDeadline(time.Now().Add(directHandshake))
	if err := checkSecret(r, s.secret); err != nil {
		s.log.Warn("direct commands: connection refused", "peer", c.RemoteAddr().String(), "err", err)
		s.dropDirect(c)
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	to := &directReplies{c: c, log: s.log}
	var buf []byte
	for {
		seq, m, b, err := readFrame(r, buf)
		buf = b
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("direct commands: connection ended", "err", err)
			}
			s.dropDirect(c)
			return
		}
		s.dispatch(request{m: m, to: to, seq: seq})
	}
}

// dropDirect closes a connection whose reader ended, unless the server is
// stopping: then closeDirect does, once the replies are written.
func (s *Server) dropDirect(c net.Conn) {
	s.dmu.Lock()
	stopping := s.dconns == nil
	delete(s.dconns, c)
	s.dmu.Unlock()
	if !stopping {
		_ = c.Close()
	}
}

// stopDirect stops reading direct connections (their writing side stays,
// for the replies of commands already read) and waits for the readers.
func (s *Server) stopDirect() {
	if s.direct == nil {
		return
	}
	_ = s.direct.Close()
	s.dmu.Lock()
	conns := s.dconns
	s.dconns = nil
	s.dmu.Unlock()
	for c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseRead()
		} else {
			_ = c.Close()
		}
	}
	s.dreaders.Wait()
	s.dmu.Lock()
	s.dconns = conns // closeDirect closes them
	s.dmu.Unlock()
}

// closeDirect closes the direct connections once every reply is written.
func (s *Server) closeDirect() {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	for c := range s.dconns {
		_ = c.Close()
	}
	s.dconns = nil
}

// The caller's side.

// linkRetry is how long a caller waits before asking a node for its direct
// address again, after it had none or its connection failed.
const linkRetry = 30 * time.Second

// link is what a Client knows of one node's direct path.
type link struct {
	asking  bool      // a caller is finding out; the others use NATS meanwhile
	retryAt time.Time // no direct path until then
	dc      *directConn
}

// directConn is a caller's TCP connection to a node's direct listener: any
// number of commands in flight, their replies matched by sequence.
type directConn struct {
	c    net.Conn
	wmu  sync.Mutex
	wbuf []byte

	mu      sync.Mutex
	seq     uint32
	waiting map[uint32]chan *nats.Msg
	err     error         // set once: the connection is done
	done    chan struct{} // closed with err
}

// errNotSent: the direct connection was already down; the command was not
// sent, and may go through NATS.
var errNotSent = errors.New("nodecmd: direct connection down")

func dialDirect(ctx context.Context, addr, secret string, wg *sync.WaitGroup) (*directConn, error) {
	d := net.Dialer{Timeout: time.Second, KeepAliveConfig: directKeepAlive}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(directMagic + secret + "\n")); err != nil {
		_ = c.Close()
		return nil, err
	}
	dc := &directConn{c: c, waiting: map[uint32]chan *nats.Msg{}, done: make(chan struct{})}
	wg.Go(dc.readReplies)
	return dc, nil
}

func (dc *directConn) readReplies() {
	r := bufio.NewReaderSize(dc.c, 16<<10)
	var buf []byte
	for {
		seq, m, b, err := readFrame(r, buf)
		buf = b
		if err != nil {
			dc.fail(err)
			return
		}
		dc.mu.Lock()
		if ch, ok := dc.waiting[seq]; ok {
			delete(dc.waiting, seq)
			ch <- m // capacity 1, and only the one holding the entry sends
		}
		dc.mu.Unlock()
	}
}

// fail ends the connection: every caller waiting is told.
func (dc *directConn) fail(err error) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.err != nil {
		return
	}
	dc.err = err
	close(dc.done)
	_ = dc.c.Close()
}

func (dc *directConn) down() bool {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	return dc.err != nil
}

// call sends msg and waits for its reply until timer or ctx. errNotSent
// when nothing was sent; any other error leaves open whether the owner
// executed it.
func (dc *directConn) call(ctx context.Context, msg *nats.Msg, timer *time.Timer) (*nats.Msg, error) {
	ch := waiters.Get().(chan *nats.Msg)
	dc.mu.Lock()
	if dc.err != nil {
		dc.mu.Unlock()
		waiters.Put(ch)
		return nil, errNotSent
	}
	dc.seq++
	seq := dc.seq
	dc.waiting[seq] = ch
	dc.mu.Unlock()
	forget := func() {
		dc.mu.Lock()
		delete(dc.waiting, seq)
		select {
		case <-ch:
		default:
		}
		dc.mu.Unlock()
		waiters.Put(ch)
	}
	dc.wmu.Lock()
	var err error
	if dc.wbuf, err = appendFrame(dc.wbuf[:0], seq, msg); err == nil {
		_ = dc.c.SetWriteDeadline(time.Now().Add(time.Second))
		_, err = dc.c.Write(dc.wbuf)
	}
	if cap(dc.wbuf) > 64<<10 {
		dc.wbuf = nil
	}
	dc.wmu.Unlock()
	if err != nil {
		forget()
		dc.fail(err)
		return nil, fmt.Errorf("direct: %w", err)
	}
	select {
	case m := <-ch:
		waiters.Put(ch)
		return m, nil
	case <-dc.done:
		forget()
		return nil, fmt.Errorf("direct: %w", dc.err)
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	case <-timer.C:
		forget()
		return nil, context.DeadlineExceeded
	}
}

// directTo returns node's direct connection, finding out about it first if
// it is time to: nil means NATS.
func (c *Client) directTo(ctx context.Context, node string) *directConn {
	now := time.Now()
	c.mu.Lock()
	l := c.links[node]
	if l == nil {
		if len(c.links) >= maxSubjects {
			c.dropLinks() // nodes come and go: start again
		}
		l = &link{}
		c.links[node] = l
	}
	if l.dc != nil {
		if !l.dc.down() {
			dc := l.dc
			c.mu.Unlock()
			return dc
		}
		l.dc, l.retryAt = nil, now.Add(time.Second) // it restarted, or died: not at every call
	}
	if c.closed || l.asking || now.Before(l.retryAt) {
		c.mu.Unlock()
		return nil
	}
	l.asking = true
	c.mu.Unlock()
	dc := c.discover(ctx, node)
	c.mu.Lock()
	defer c.mu.Unlock()
	l.asking = false
	if dc != nil && c.closed {
		dc.fail(net.ErrClosed)
		dc = nil
	}
	if dc == nil {
		l.retryAt = time.Now().Add(linkRetry)
		return nil
	}
	if c.links[node] == l {
		l.dc = dc
	} else {
		c.links[node] = &link{dc: dc}
	}
	return dc
}

// discover asks node over NATS for its direct address and dials it.
func (c *Client) discover(ctx context.Context, node string) *directConn {
	reply, err := c.request(ctx, node, NewRequest(CmdDirect, ""))
	if err != nil || reply.Header.Get(HdrStatus) != StatusOK {
		return nil
	}
	addr, secret := reply.Header.Get(hdrAddr), reply.Header.Get(hdrSecret)
	if addr == "" || len(secret) != 2*secretLen {
		return nil // it has no direct listener
	}
	dc, err := dialDirect(ctx, addr, secret, &c.wg)
	if err != nil {
		c.log.Debug("direct commands: dial failed; NATS", "node", node, "addr", addr, "err", err)
		return nil
	}
	return dc
}

// dropLinks forgets every node's direct path. Called with mu held.
func (c *Client) dropLinks() {
	for _, l := range c.links {
		if l.dc != nil {
			l.dc.fail(net.ErrClosed)
		}
	}
	clear(c.links)
}

// Close ends the direct connections and waits for their readers. Calls
// after it use NATS.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	c.dropLinks()
	c.mu.Unlock()
	c.wg.Wait()
}

// callDirect is request for the direct path.
func (c *Client) callDirect(ctx context.Context, dc *directConn, msg *nats.Msg) (*nats.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	timer := c.callTimer()
	defer putTimer(timer)
	return dc.call(ctx, msg, timer)
}
