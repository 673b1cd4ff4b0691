package relay

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// The pipe's wire: each side receives on <prefix>.relay.<node>.<pipe ID>
// and publishes to the other's. A chunk is the bytes as read, numbered
// from 1 in Sb-Seq; an empty chunk is a keepalive, and one with Sb-End the
// last. NATS keeps one publisher's messages in order but may drop them (a
// slow consumer, a reconnect): a chunk out of turn ends the pipe, which the
// connection survives as any lost socket (it detaches; the client resumes).
const (
	hdrSeq = "Sb-Seq"
	hdrEnd = "Sb-End"

	chunkSize  = 32 << 10
	idleBuffer = 2 << 10
	// What a side's subscription may hold unread: the bytes that wait for a
	// slow socket. Beyond it NATS drops chunks and the pipe ends.
	pendingMsgs  = 1024
	pendingBytes = 4 << 20
	// writeTimeout bounds one write of a chunk to the local socket.
	writeTimeout = 10 * time.Second
)

// pipe carries one local socket's bytes to and from the peer's pipe.
type pipe struct {
	nc   *nats.Conn
	sub  *nats.Subscription
	own  string // the subject this side receives on
	peer string // the other side's (setPeer); guarded by sendMu
	// keepalive: a side with nothing to send for this long sends an empty
	// chunk; one that hears nothing for three of them ends the pipe (the
	// peer node died).
	keepalive time.Duration
	log       *slog.Logger

	seq     uint64 // last chunk sent; only the sender (start's, or end's) touches it
	sendMu  sync.Mutex
	local   net.Conn
	over    bool // end ran: start starts nothing
	endOnce sync.Once
	ended   chan struct{}
	onEnd   func() // the Service forgets the pipe
}

// openPipe subscribes a new pipe's subject: chunks sent to it before start
// wait (bounded) in the subscription. The subscription reaches the server
// before anything nc sends next: the peer learns the subject only from
// such a message (the command, its reply), so it never sends too early.
func openPipe(nc *nats.Conn, prefix, node string, keepalive time.Duration, log *slog.Logger) (*pipe, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("relay: pipe ID: %w", err)
	}
	p := &pipe{nc: nc, own: prefix + ".relay." + node + "." + base64.RawURLEncoding.EncodeToString(b[:]),
		keepalive: keepalive, log: log, ended: make(chan struct{})}
	sub, err := nc.SubscribeSync(p.own)
	if err != nil {
		return nil, fmt.Errorf("relay: subscribe %s: %w", p.own, err)
	}
	if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("relay: pending limits: %w", err)
	}
	p.sub = sub
	return p, nil
}

// start carries local until either side ends: leftover first, then what
// local reads goes to the peer, what the peer sends is written to local.
// wg counts its two goroutines.
func (p *pipe) start(local net.Conn, leftover []byte, wg *sync.WaitGroup) {
	p.sendMu.Lock()
	if p.over { // ended before it started (a shutdown)
		p.sendMu.Unlock()
		_ = local.Close()
		return
	}
	p.local = local
	wg.Add(2)
	p.sendMu.Unlock()
	go func() {
		defer wg.Done()
		p.send(local, leftover)
	}()
	go func() {
		defer wg.Done()
		p.receive(local)
	}()
}

func (p *pipe) send(local net.Conn, leftover []byte) {
	defer p.end("local socket ended")
	if len(leftover) > 0 && p.publish(leftover, false) != nil {
		return
	}
	// An idle pipe reads into a small buffer; one that fills it is busy
	// and reads whole chunks until it idles again.
	buf := make([]byte, idleBuffer)
	for {
		_ = local.SetReadDeadline(time.Now().Add(p.keepalive))
		n, err := local.Read(buf)
		if n > 0 {
			if p.publish(buf[:n], false) != nil {
				return
			}
			if n == len(buf) && len(buf) < chunkSize {
				buf = make([]byte, chunkSize)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if p.publish(nil, false) != nil {
				return
			}
			if len(buf) > idleBuffer {
				buf = make([]byte, idleBuffer)
			}
		default:
			return
		}
	}
}

func (p *pipe) receive(local net.Conn) {
	var next uint64 = 1
	for {
		m, err := p.sub.NextMsg(3 * p.keepalive)
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) {
				p.end("the peer fell silent")
			} else {
				p.end("subscription ended")
			}
			return
		}
		seq, _ := strconv.ParseUint(m.Header.Get(hdrSeq), 10, 64)
		if seq != next {
			p.end(fmt.Sprintf("chunk %d lost (got %d)", next, seq))
			return
		}
		next++
		if len(m.Data) > 0 {
			_ = local.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := local.Write(m.Data); err != nil {
				p.end("local socket write failed")
				return
			}
		}
		if m.Header.Get(hdrEnd) != "" {
			p.finish("the peer ended", false)
			return
		}
	}
}

// publish sends one chunk to the peer.
func (p *pipe) publish(data []byte, last bool) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.seq++
	m := &nats.Msg{Subject: p.peer, Data: data, Header: nats.Header{hdrSeq: {strconv.FormatUint(p.seq, 10)}}}
	if last {
		m.Header[hdrEnd] = []string{"1"}
	}
	return p.nc.PublishMsg(m)
}

// end tells the peer (once), stops receiving and closes the local socket;
// both loops then return.
// setPeer names the other side's subject, once it is known.
func (p *pipe) setPeer(subject string) {
	p.sendMu.Lock()
	p.peer = subject
	p.sendMu.Unlock()
}

func (p *pipe) end(why string) { p.finish(why, true) }

// finish is end; tell is false when the peer ended first (it needs no
// last chunk).
func (p *pipe) finish(why string, tell bool) {
	p.endOnce.Do(func() {
		p.log.Debug("relay pipe ended", "pipe", p.own, "why", why)
		p.sendMu.Lock()
		peer := p.peer
		p.sendMu.Unlock()
		if peer != "" && tell {
			_ = p.publish(nil, true)
		}
		_ = p.sub.Unsubscribe()
		p.sendMu.Lock()
		local := p.local
		p.over = true
		p.sendMu.Unlock()
		if local != nil {
			_ = local.Close()
		}
		close(p.ended)
		if p.onEnd != nil {
			p.onEnd()
		}
	})
}
