package swload

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

type state uint8

const (
	stConnecting state = iota // TCP connect in progress
	stHandshake               // upgrade request sent, waiting for 101
	stProto                   // upgraded; Centrifugo connect/subscribe replies pending
	stOpen                    // WebSocket open
	stClosing                 // close frame sent, waiting for the server's
)

// client is one connection. Idle, it holds no buffers: in, out and frag are
// nil unless a partial frame or write is pending.
type client struct {
	fd       int
	st       state
	watchOut bool  // EPOLLOUT is in the registered events
	target   int32 // index in Config.Targets
	idx      int32 // global connection index (for Config.Channel)
	openIdx  int   // index in reactor.open while stOpen or stClosing, else -1
	started  int64 // run-relative ns at socket()
	deadline int64 // handshake deadline, run-relative ns
	accept   string
	in       []byte
	out      []byte
	frag     []byte
	fragOp   byte
}

// Failure reasons: a small fixed set plus "http-NNN".
const (
	failSocket    = "socket"
	failConnect   = "connect"
	failTimeout   = "handshake-timeout"
	failHandshake = "bad-handshake"
	failEOF       = "handshake-eof"
	failAborted   = "aborted"
	failCFError   = "centrifugo-error"
	failCFClosed  = "centrifugo-closed"
)

// reactor is one epoll loop and the connections it owns. Only its own
// goroutine touches its fields; the run's shared state is atomic.
type reactor struct {
	run     *run
	id      int
	epfd    int
	wakefd  int
	conns   map[int]*client
	pending map[int]*client // still connecting or handshaking
	open    []*client
	rng     *mrand.Rand
	buf     []byte
	wbuf    []byte
	pbuf    []byte // payloads built while r.buf holds input being consumed
	events  []unix.EpollEvent

	next        int // next global connection index this reactor opens
	inflight    int
	maxInflight int
	tried       int
	share       int
	reported    bool
	closing     bool
	closeDL     int64
	nextSend    int64
	sendEvery   int64
	sendDone    bool // Config.Messages reached: nothing more to send
	rr          int

	stats reactorStats
}

type reactorStats struct {
	opened        int
	failed        map[string]int
	closedByPeer  int
	closedClean   int
	closedForced  int
	pings         int
	lastOpenDone  int64
	connect, rtt  histogram
	latency       histogram // ModeListen: send time ("t", Unix ns) to receipt
	firstRecv     int64     // ModeListen: Unix ns of the first and last message
	lastRecv      int64
	bySend        map[int64]*SendReceipt // ModeListen: per send time, at most maxSendTimes
	sentBytes     int64
	receivedBytes int64
	reads         int64 // read(2) calls that returned data
	messages      int64 // WebSocket data messages (a Centrifugo one may hold several publications)
}

func newReactor(rn *run, id int) (*reactor, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("swload: epoll_create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("swload: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("swload: epoll_ctl eventfd: %w", err)
	}
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	cfg := &rn.cfg
	share := cfg.Conns / cfg.Reactors
	if id < cfg.Conns%cfg.Reactors {
		share++
	}
	r := &reactor{
		run:         rn,
		id:          id,
		epfd:        epfd,
		wakefd:      wakefd,
		conns:       make(map[int]*client, share),
		pending:     make(map[int]*client),
		rng:         mrand.New(mrand.NewChaCha8(seed)),
		buf:         make([]byte, 64<<10),
		events:      make([]unix.EpollEvent, 512),
		next:        id,
		share:       share,
		maxInflight: max(1, (cfg.Concurrency+cfg.Reactors-1)/cfg.Reactors),
		sendEvery:   int64(float64(cfg.Reactors) / max(cfg.MsgRate, 1e-9) * 1e9),
	}
	r.stats.failed = map[string]int{}
	return r, nil
}

// wake interrupts epoll_wait so the reactor sees a phase change at once.
func (r *reactor) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(r.wakefd, one[:])
}

func (r *reactor) loop() {
	defer r.teardown()
	for {
		now := r.run.now()
		phase := r.run.phase.Load()
		if phase >= phaseClose && !r.closing {
			r.startClose(now)
		}
		if r.closing {
			if len(r.conns) == 0 {
				return
			}
			if now >= r.closeDL {
				return // teardown closes what is left
			}
		} else {
			r.openMore(now)
			if phase == phaseSend {
				r.sendDue(now)
			}
			r.expire(now)
			if !r.reported && r.tried == r.share && r.inflight == 0 {
				r.reported = true
				r.run.openDone <- struct{}{}
			}
		}
		n, err := unix.EpollWait(r.epfd, r.events, r.timeout(now, phase))
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			r.run.setErr(fmt.Errorf("swload: epoll_wait: %w", err))
			return
		}
		for i := 0; i < n; i++ {
			ev := r.events[i]
			fd := int(ev.Fd)
			if fd == r.wakefd {
				var b [8]byte
				_, _ = unix.Read(r.wakefd, b[:])
				continue
			}
			c := r.conns[fd]
			if c == nil {
				continue
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLERR) != 0 && (c.st == stConnecting || c.watchOut) {
				r.writable(c)
				if r.conns[fd] != c {
					continue
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 && c.st != stConnecting {
				r.readable(c)
			}
		}
	}
}

// timeout is how long epoll_wait may sleep, in ms: until the next
// connection is due, the next message is due, or at most 100 ms so that
// handshake deadlines are checked.
func (r *reactor) timeout(now int64, phase int32) int {
	wait := int64(100 * time.Millisecond)
	if r.closing {
		wait = min(wait, r.closeDL-now)
	} else {
		if r.tried < r.share && r.inflight < r.maxInflight {
			wait = min(wait, r.openAt(r.next)-now)
		}
		if phase == phaseSend && len(r.open) > 0 && !r.sendDone {
			wait = min(wait, r.nextSend-now)
		}
	}
	if wait <= 0 {
		return 0
	}
	return int((wait + int64(time.Millisecond) - 1) / int64(time.Millisecond))
}

func (r *reactor) openAt(k int) int64 {
	if r.run.cfg.Rate < 0 {
		return 0
	}
	return int64(float64(k) / r.run.cfg.Rate * 1e9)
}

func (r *reactor) openMore(now int64) {
	cfg := &r.run.cfg
	for budget := 64; budget > 0 && r.tried < r.share && r.inflight < r.maxInflight && now >= r.openAt(r.next); budget-- {
		k := r.next
		r.next += cfg.Reactors
		r.tried++
		r.dial(k, now)
	}
}

func (r *reactor) dial(k int, now int64) {
	cfg := &r.run.cfg
	target := cfg.Targets[k%len(cfg.Targets)]
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		r.fail(nil, failSocket, now)
		return
	}
	if len(cfg.Sources) > 0 {
		src := cfg.Sources[k%len(cfg.Sources)]
		// Let connect() pick the port, so ports are unique per 4-tuple
		// rather than per source address.
		_ = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
			unix.Close(fd)
			r.fail(nil, failSocket, now)
			return
		}
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	// Registered with EPOLLOUT below: connect completion is reported as writable.
	c := &client{fd: fd, st: stConnecting, watchOut: true, target: int32(k % len(cfg.Targets)), idx: int32(k),
		openIdx: -1, started: now, deadline: now + int64(cfg.HandshakeTimeout)}
	r.conns[fd] = c
	r.pending[fd] = c
	r.inflight++
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		r.fail(c, failSocket, now)
		return
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(target.Port()), Addr: target.Addr().As4()})
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		r.fail(c, failConnect, now)
		return
	}
	// Completion (or failure) is reported as EPOLLOUT.
}

// writable handles EPOLLOUT: a finished TCP connect, or room to flush.
func (r *reactor) writable(c *client) {
	if c.st == stConnecting {
		now := r.run.now()
		if soErr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
			r.fail(c, failConnect, now)
			return
		}
		c.st = stHandshake
		r.setWatchOut(c, false)
		r.write(c, r.handshakeRequest(c))
		return
	}
	r.flush(c)
}

func (r *reactor) handshakeRequest(c *client) []byte {
	cfg := &r.run.cfg
	var raw [16]byte
	for i := 0; i < 16; i += 8 {
		v := r.rng.Uint64()
		for j := 0; j < 8; j++ {
			raw[i+j] = byte(v >> (8 * j))
		}
	}
	key := base64.StdEncoding.EncodeToString(raw[:])
	c.accept = acceptKey(key)
	b := r.wbuf[:0]
	b = append(b, "GET "...)
	b = append(b, cfg.Path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, cfg.Targets[c.target].String()...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nUser-Agent: swload\r\nSec-WebSocket-Key: "...)
	b = append(b, key...)
	if cfg.Deflate {
		b = append(b, "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"...)
	}
	b = append(b, "\r\n\r\n"...)
	r.wbuf = b
	return b
}

func (r *reactor) setWatchOut(c *client, on bool) {
	if c.watchOut == on {
		return
	}
	c.watchOut = on
	events := uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	if on {
		events |= unix.EPOLLOUT
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(c.fd)}
	_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// write sends b now if it can, queueing the rest behind EPOLLOUT. b may be
// a reactor buffer: what is queued is copied.
func (r *reactor) write(c *client, b []byte) {
	r.stats.sentBytes += int64(len(b))
	if len(c.out) > 0 {
		c.out = append(c.out, b...)
		return
	}
	n, err := unix.Write(c.fd, b)
	if err != nil {
		if !errors.Is(err, unix.EAGAIN) {
			r.lost(c)
			return
		}
		n = 0
	}
	if n < len(b) {
		c.out = append(c.out, b[n:]...)
		r.setWatchOut(c, true)
	}
}

func (r *reactor) flush(c *client) {
	for len(c.out) > 0 {
		n, err := unix.Write(c.fd, c.out)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			r.lost(c)
			return
		}
		c.out = c.out[n:]
	}
	c.out = nil
	r.setWatchOut(c, false)
}

func (r *reactor) readable(c *client) {
	var data []byte
	var n int
	var err error
	if len(c.in) == 0 {
		n, err = unix.Read(c.fd, r.buf)
		if n <= 0 || err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			r.lost(c)
			return
		}
		data = r.buf[:n]
	} else {
		if cap(c.in)-len(c.in) < 16<<10 {
			grown := make([]byte, len(c.in), 2*cap(c.in)+16<<10)
			copy(grown, c.in)
			c.in = grown
		}
		n, err = unix.Read(c.fd, c.in[len(c.in):cap(c.in)])
		if n <= 0 || err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			r.lost(c)
			return
		}
		c.in = c.in[:len(c.in)+n]
		data = c.in
	}
	r.stats.receivedBytes += int64(n)
	r.stats.reads++
	used := r.consume(c, data)
	if r.conns[c.fd] != c {
		return // closed while consuming
	}
	rest := data[used:]
	switch {
	case len(rest) == 0:
		c.in = nil
	case len(c.in) == 0:
		c.in = append(make([]byte, 0, max(len(rest), 4<<10)), rest...)
	default:
		c.in = c.in[:copy(c.in, rest)]
	}
}

// consume handles what data holds and returns how many bytes it used.
func (r *reactor) consume(c *client, data []byte) int {
	used := 0
	if c.st == stHandshake {
		end := bytes.Index(data, []byte("\r\n\r\n"))
		if end < 0 {
			if len(data) > 16<<10 {
				r.fail(c, failHandshake, r.run.now())
			}
			return 0
		}
		if reason := checkResponse(data[:end+2], c.accept); reason != "" {
			r.fail(c, reason, r.run.now())
			return 0
		}
		used = end + 4
		if r.run.cfg.Protocol == ProtocolCentrifugo {
			c.st = stProto
			r.pbuf = appendCFConnect(r.pbuf[:0], r.run.cfg.Token)
			r.write(c, appendFrame(r.wbuf[:0], opText, r.pbuf, r.rng.Uint32()))
			if r.conns[c.fd] != c {
				return used
			}
		} else {
			r.established(c)
		}
	}
	for c.st == stOpen || c.st == stClosing || c.st == stProto {
		if r.run.cfg.Deflate && used < len(data) {
			// A compressed frame (RSV1) is counted like any other, not
			// inflated (Config.Deflate): the parser need not see the bit.
			data[used] &^= 0x40
		}
		h, ok, err := parseHeader(data[used:])
		if err != nil {
			r.lost(c)
			return used
		}
		if !ok || len(data)-used < h.hdrSize+h.length {
			return used
		}
		payload := data[used+h.hdrSize : used+h.hdrSize+h.length]
		used += h.hdrSize + h.length
		if h.masked {
			for i := range payload {
				payload[i] ^= h.key[i&3]
			}
		}
		if !r.frame(c, h, payload) {
			return used
		}
	}
	return used
}

// checkResponse validates the upgrade response head; "" means accepted.
func checkResponse(head []byte, accept string) string {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	parts := bytes.SplitN(line, []byte(" "), 3)
	if len(parts) < 2 || !bytes.HasPrefix(parts[0], []byte("HTTP/1.")) {
		return failHandshake
	}
	code, err := strconv.Atoi(string(parts[1]))
	if err != nil || code < 100 || code > 599 {
		return failHandshake
	}
	if code != 101 {
		return "http-" + strconv.Itoa(code)
	}
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(l, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Sec-WebSocket-Accept")) {
			if string(bytes.TrimSpace(value)) == accept {
				return ""
			}
			return failHandshake
		}
	}
	return failHandshake
}

// frame handles one frame; false means the client was closed.
func (r *reactor) frame(c *client, h frameHeader, payload []byte) bool {
	switch h.op {
	case opPing:
		if c.st == stOpen || c.st == stProto {
			r.stats.pings++
			r.write(c, appendFrame(r.wbuf[:0], opPong, payload, r.rng.Uint32()))
		}
	case opPong:
	case opClose:
		if c.st == stProto {
			r.fail(c, failCFClosed, r.run.now())
			return false
		}
		if c.st == stClosing {
			r.stats.closedClean++
		} else {
			// The server closed first: answer with its code, then hang up.
			r.stats.closedByPeer++
			code := payload
			if len(code) > 2 {
				code = code[:2]
			}
			r.write(c, appendFrame(r.wbuf[:0], opClose, code, r.rng.Uint32()))
		}
		r.drop(c)
		return false
	case opText, opBinary:
		if !h.fin {
			c.fragOp = h.op
			c.frag = append(c.frag[:0], payload...)
			break
		}
		return r.message(c, payload)
	case opCont:
		c.frag = append(c.frag, payload...)
		if len(c.frag) > maxFrame {
			r.lost(c)
			return false
		}
		if h.fin {
			msg := c.frag
			c.frag = nil
			return r.message(c, msg)
		}
	default:
		r.lost(c)
		return false
	}
	return true
}

// message handles one complete message; false means the client was closed.
func (r *reactor) message(c *client, msg []byte) bool {
	r.stats.messages++
	if r.run.cfg.Protocol == ProtocolCentrifugo {
		return r.cfMessage(c, msg)
	}
	r.received(msg)
	return true
}

// received counts a message for the run and records its delay.
func (r *reactor) received(msg []byte) {
	r.run.received.Add(1)
	if r.run.cfg.Mode == ModeListen {
		now := time.Now().UnixNano()
		if r.stats.firstRecv == 0 {
			r.stats.firstRecv = now
		}
		r.stats.lastRecv = now
		if t, ok := sendTime(msg); ok {
			r.stats.latency.record(time.Duration(now - t))
			r.noteSend(t, now)
		}
		return
	}
	if t, ok := sendTime(msg); ok {
		r.stats.rtt.record(time.Duration(r.run.now() - t))
	}
}

// noteSend counts a receipt of the message sent at t (Unix ns), so that a
// driver can tell when each message of a burst had reached every member.
// Distinct send times beyond maxSendTimes are not tracked: a sender cannot
// grow the client's memory without bound.
func (r *reactor) noteSend(t, now int64) {
	s := r.stats.bySend[t]
	if s == nil {
		if len(r.stats.bySend) >= maxSendTimes {
			return
		}
		if r.stats.bySend == nil {
			r.stats.bySend = map[int64]*SendReceipt{}
		}
		s = &SendReceipt{Sent: t, First: now}
		r.stats.bySend[t] = s
	}
	s.Received++
	s.First = min(s.First, now)
	s.Last = max(s.Last, now)
}

// cfMessage handles one frame of Centrifugo's protocol: its lines are
// replies, pings and pushes. False means the client was closed.
func (r *reactor) cfMessage(c *client, msg []byte) bool {
	for len(msg) > 0 {
		var line []byte
		line, msg, _ = bytes.Cut(msg, []byte{'\n'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		l := classifyCF(line)
		switch l.kind {
		case cfPing:
			r.write(c, appendFrame(r.wbuf[:0], opText, cfPong, r.rng.Uint32()))
			r.stats.pings++
		case cfReply:
			if c.st != stProto {
				break
			}
			cfg := &r.run.cfg
			if l.id == cfConnectID && cfg.Channel != "" {
				r.pbuf = appendCFSubscribe(r.pbuf[:0], channelFor(cfg.Channel, cfg.IndexBase+int(c.idx)))
				r.write(c, appendFrame(r.wbuf[:0], opText, r.pbuf, r.rng.Uint32()))
			} else if l.id == cfConnectID || l.id == cfSubscribeID {
				r.established(c)
			}
		case cfError:
			if c.st == stProto {
				r.fail(c, failCFError, r.run.now())
			}
		case cfPub:
			r.received(line)
		case cfBad:
			r.lost(c)
		}
		if r.conns[c.fd] != c {
			return false
		}
	}
	return true
}

func (r *reactor) established(c *client) {
	now := r.run.now()
	c.st = stOpen
	c.accept = ""
	r.inflight--
	delete(r.pending, c.fd)
	r.stats.opened++
	r.stats.lastOpenDone = now
	r.stats.connect.record(time.Duration(now - c.started))
	c.openIdx = len(r.open)
	r.open = append(r.open, c)
	r.run.noteOpen(1)
}

// fail ends a connection that never opened.
func (r *reactor) fail(c *client, reason string, now int64) {
	r.stats.failed[reason]++
	r.stats.lastOpenDone = now
	if c != nil {
		r.inflight--
		delete(r.pending, c.fd)
		delete(r.conns, c.fd)
		unix.Close(c.fd)
	}
}

// lost ends a connection on an I/O or protocol error.
func (r *reactor) lost(c *client) {
	switch c.st {
	case stConnecting, stHandshake, stProto:
		r.fail(c, failEOF, r.run.now())
		return
	case stOpen:
		r.stats.closedByPeer++
	case stClosing:
		r.stats.closedForced++
	}
	r.drop(c)
}

// drop closes an established connection's socket and forgets it.
func (r *reactor) drop(c *client) {
	if c.openIdx >= 0 {
		last := r.open[len(r.open)-1]
		r.open[c.openIdx] = last
		last.openIdx = c.openIdx
		r.open = r.open[:len(r.open)-1]
		c.openIdx = -1
		r.run.noteOpen(-1)
	}
	delete(r.conns, c.fd)
	unix.Close(c.fd)
	c.in, c.out, c.frag = nil, nil, nil
}

// expire fails handshakes past their deadline.
func (r *reactor) expire(now int64) {
	if r.inflight == 0 {
		return
	}
	for _, c := range r.pending {
		if now >= c.deadline {
			r.fail(c, failTimeout, now)
		}
	}
}

func (r *reactor) sendDue(now int64) {
	cfg := &r.run.cfg
	if len(r.open) == 0 || r.sendDone {
		return
	}
	if r.nextSend == 0 || now-r.nextSend > int64(time.Second) {
		r.nextSend = now // start, or catch up without a burst after a stall
	}
	for budget := 1024; budget > 0 && now >= r.nextSend && len(r.open) > 0; budget-- {
		if cfg.Messages > 0 {
			if r.run.sent.Add(1) > int64(cfg.Messages) {
				r.run.sent.Add(-1)
				r.sendDone = true
				return
			}
		} else {
			r.run.sent.Add(1)
		}
		r.rr = (r.rr + 1) % len(r.open)
		c := r.open[r.rr]
		r.nextSend += r.sendEvery
		if c.st != stOpen {
			continue
		}
		msg := appendMessage(r.buf[:0], r.run.now(), cfg.MsgSize)
		r.wbuf = appendFrame(r.wbuf[:0], opText, msg, r.rng.Uint32())
		r.write(c, r.wbuf)
	}
}

// startClose begins the closing handshake on every open connection and
// abandons the ones still opening.
func (r *reactor) startClose(now int64) {
	r.closing = true
	r.closeDL = now + int64(r.run.cfg.CloseTimeout)
	for _, c := range r.conns {
		switch c.st {
		case stConnecting, stHandshake, stProto:
			r.fail(c, failAborted, now)
		case stOpen:
			c.st = stClosing
			r.write(c, appendFrame(r.wbuf[:0], opClose, []byte{0x03, 0xE8}, r.rng.Uint32())) // 1000
		}
	}
	if !r.reported {
		r.reported = true
		r.run.openDone <- struct{}{}
	}
}

func (r *reactor) teardown() {
	for _, c := range r.conns {
		if c.st == stClosing {
			r.stats.closedForced++
		}
		r.drop(c)
	}
	if !r.reported {
		r.reported = true
		r.run.openDone <- struct{}{}
	}
	unix.Close(r.epfd)
	unix.Close(r.wakefd)
}
