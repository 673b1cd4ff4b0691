// Package swload is a WebSocket load generator built on its own epoll
// reactor: client sockets are raw non-blocking file descriptors and the
// handshake and framing are done here, so one process holds close to its
// open-file limit in connections with a handful of goroutines. It only ever
// targets loopback addresses.
package swload

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchboardgw/switchboard/bench/internal/defaults"
)

// Mode selects what a run measures.
type Mode string

const (
	// ModeIdle opens the connections, holds them for Config.Hold, closes them.
	ModeIdle Mode = "idle"
	// ModeEcho opens the connections, then sends text messages at
	// Config.MsgRate and measures the round trip of each reply.
	ModeEcho Mode = "echo"
	// ModeConnectRate opens the connections as fast as Config.Rate and
	// Config.Concurrency allow and reports successful connects per second.
	ModeConnectRate Mode = "connect-rate"
	// ModeListen opens the connections, then receives until Config.Expect
	// messages have arrived or Config.Hold has passed, and measures each
	// message's delay from the send time it carries ("t", Unix ns: the
	// sender is another process on the same machine).
	ModeListen Mode = "listen"
)

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("swload: invalid config")

// fdReserve is how many file descriptors are kept free for the runtime,
// stdio and the reactors' own epoll and eventfd descriptors.
const fdReserve = 100

// Config describes one run. The zero value of every field means its default.
type Config struct {
	// Mode is what to measure. Default ModeIdle.
	Mode Mode
	// Targets are host:port addresses of the server, IPv4 loopback only;
	// connections are spread over them round-robin. Required.
	Targets []netip.AddrPort
	// Path is the request path (and query) of the upgrade request. Default "/".
	Path string
	// Sources are local loopback addresses to bind, round-robin, so that more
	// than one ephemeral port range is available per target. Default: none,
	// the kernel chooses.
	Sources []netip.Addr
	// Conns is how many connections to open. Default 1000; at most the
	// process's open-file limit minus a reserve of 100.
	Conns int
	// Rate is new connections per second across the run. Default 1000;
	// negative means as fast as Concurrency allows.
	Rate float64
	// Concurrency bounds handshakes in flight. Default 256.
	Concurrency int
	// Hold is how long ModeIdle keeps the connections open once all are
	// open, and the longest ModeListen waits for Expect messages (a
	// cancelled context ends either sooner). Default 10s.
	Hold time.Duration
	// Duration bounds the sending phase of ModeEcho. Default 10s.
	Duration time.Duration
	// MsgRate is messages per second across all connections in ModeEcho.
	// Default 1000.
	MsgRate float64
	// Messages stops ModeEcho's sending after this many messages; the run
	// then waits for the replies, at most HandshakeTimeout. Default 0:
	// send until Duration.
	Messages int
	// MsgSize is the size in bytes of each message in ModeEcho. Default 64,
	// minimum 48 (the JSON envelope carrying the send time).
	MsgSize int
	// HandshakeTimeout bounds TCP connect plus the HTTP upgrade. Default 10s.
	HandshakeTimeout time.Duration
	// CloseTimeout bounds the closing handshake at the end of a run; sockets
	// still open then are closed without it. Default 10s.
	CloseTimeout time.Duration
	// MaxDuration is a hard bound on the whole run. Default 30m.
	MaxDuration time.Duration
	// Reactors is the number of epoll loops. Default GOMAXPROCS.
	Reactors int
	// Protocol is what the connections speak once open. Default ProtocolRaw.
	Protocol Protocol
	// Token is the Centrifugo connect command's token; empty sends none.
	Token string
	// Channel, with ProtocolCentrifugo, is the channel each connection
	// subscribes to after connecting; "{i}" in it becomes the connection's
	// index plus IndexBase (a channel per connection). Empty: no subscribe.
	Channel string
	// IndexBase is added to connection indexes in Channel, so that several
	// processes give out distinct channels.
	IndexBase int
	// Expect ends ModeListen once this many messages have arrived (in this
	// process). Default 0: listen for Hold.
	Expect int64
	// Deflate offers permessage-deflate (RFC 7692, no context takeover
	// either way) in every upgrade, as browsers do, so that a server's
	// memory per idle connection can be measured with the extension
	// negotiated. Frames the server sends compressed are counted, never
	// inflated: ModeIdle only.
	Deflate bool
	// OnOpen, if set, is called once when every connection has been tried,
	// with the number open: the moment to measure the server.
	OnOpen func(open, failed int)
}

// minMsgSize is the size of the echo envelope with no padding.
const minMsgSize = msgOverhead

func (c *Config) withDefaults() Config {
	d := *c
	defaults.Set(&d.Mode, ModeIdle)
	defaults.Set(&d.Path, "/")
	defaults.Set(&d.Protocol, ProtocolRaw)
	defaults.Set(&d.Conns, 1000)
	defaults.Set(&d.Rate, 1000)
	defaults.Set(&d.Concurrency, 256)
	defaults.Set(&d.Hold, 10*time.Second)
	defaults.Set(&d.Duration, 10*time.Second)
	defaults.Set(&d.MsgRate, 1000)
	defaults.Set(&d.MsgSize, 64)
	defaults.Set(&d.HandshakeTimeout, 10*time.Second)
	defaults.Set(&d.CloseTimeout, 10*time.Second)
	defaults.Set(&d.MaxDuration, 30*time.Minute)
	defaults.Set(&d.Reactors, runtime.GOMAXPROCS(0))
	return d
}

// Validate reports whether the config (after defaults) can run.
func (c *Config) Validate() error {
	d := c.withDefaults()
	switch d.Mode {
	case ModeIdle, ModeEcho, ModeConnectRate, ModeListen:
	default:
		return fmt.Errorf("%w: unknown mode %q", ErrConfig, d.Mode)
	}
	switch d.Protocol {
	case ProtocolRaw:
		if d.Channel != "" || d.Token != "" {
			return fmt.Errorf("%w: a channel or token needs the centrifugo protocol", ErrConfig)
		}
	case ProtocolCentrifugo:
		if d.Mode == ModeEcho {
			return fmt.Errorf("%w: echo mode speaks the raw protocol only", ErrConfig)
		}
	default:
		return fmt.Errorf("%w: unknown protocol %q", ErrConfig, d.Protocol)
	}
	if d.Expect < 0 || d.IndexBase < 0 {
		return fmt.Errorf("%w: negative expect or index base", ErrConfig)
	}
	if len(d.Targets) == 0 {
		return fmt.Errorf("%w: no target", ErrConfig)
	}
	for _, t := range d.Targets {
		if !t.Addr().Is4() || !t.Addr().IsLoopback() || t.Port() == 0 {
			return fmt.Errorf("%w: target %s: only IPv4 loopback host:port is allowed", ErrConfig, t)
		}
	}
	for _, s := range d.Sources {
		if !s.Is4() || !s.IsLoopback() {
			return fmt.Errorf("%w: source %s: only IPv4 loopback addresses are allowed", ErrConfig, s)
		}
	}
	if d.Deflate && (d.Mode != ModeIdle || d.Protocol != ProtocolRaw) {
		return fmt.Errorf("%w: deflate is for mode idle with the raw protocol only (replies are not inflated)", ErrConfig)
	}
	if d.Path[0] != '/' {
		return fmt.Errorf("%w: path %q must start with /", ErrConfig, d.Path)
	}
	if d.Conns < 0 {
		return fmt.Errorf("%w: negative connection count", ErrConfig)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < 1<<40 {
		if maxConns := int(lim.Cur) - fdReserve; d.Conns > maxConns {
			return fmt.Errorf("%w: %d connections exceed this process's open-file limit (%d usable); run several processes",
				ErrConfig, d.Conns, maxConns)
		}
	}
	if d.Concurrency < 1 || d.Reactors < 1 {
		return fmt.Errorf("%w: concurrency and reactors must be positive", ErrConfig)
	}
	if d.MsgSize < minMsgSize || d.MsgSize > 1<<20 {
		return fmt.Errorf("%w: message size must be %d..%d bytes", ErrConfig, minMsgSize, 1<<20)
	}
	if d.MsgRate < 0 || d.Messages < 0 {
		return fmt.Errorf("%w: negative message rate or count", ErrConfig)
	}
	if d.Hold < 0 || d.Duration < 0 || d.HandshakeTimeout < 0 || d.CloseTimeout < 0 || d.MaxDuration < 0 {
		return fmt.Errorf("%w: negative duration", ErrConfig)
	}
	return nil
}
