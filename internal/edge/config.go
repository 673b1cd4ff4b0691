package edge

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"
)

// Config is the WebSocket side of an edge node. The zero value of every field
// means its default, given in the field's comment (API Gateway's where it has one).
type Config struct {
	// Listen is the WebSocket listen address. Default 127.0.0.1:8080.
	Listen string
	// Path is the URL path clients connect to; "" accepts any path.
	Path string
	// MaxMessageBytes limits a reassembled message. Default 128 KiB (close 1009).
	MaxMessageBytes int
	// MaxFrameBytes limits one frame's payload. Default 32 KiB (close 1009).
	MaxFrameBytes int
	// MaxHeaderBytes limits the upgrade request. Default 8 KiB (HTTP 431).
	MaxHeaderBytes int
	// HandshakeTimeout bounds reading the upgrade request plus $connect.
	// Default 10 s.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds handshakes in progress; more get HTTP 503. Default 4096.
	MaxHandshakes int
	// MaxHandshakesPerIP bounds the handshakes in progress from one source
	// (an IPv4 address, an IPv6 /64), counted from accept, before anything
	// is read: more are answered 429 at once and closed, so a single source
	// of idle sockets cannot take every MaxHandshakes slot. Connections from
	// a trusted proxy (Options.TrustedPeer) are charged to the client the
	// PROXY header or forwarding header names instead. Default
	// MaxHandshakes/8 (512 with the default MaxHandshakes); negative: no
	// per-source limit.
	MaxHandshakesPerIP int
	// IdleTimeout closes a connection with no frame in either direction from
	// the client for this long (1001). Default 10 min; negative disables.
	IdleTimeout time.Duration
	// MaxDuration closes a connection open this long (1001). Default 2 h;
	// negative disables.
	MaxDuration time.Duration
	// PingInterval sends a protocol ping after this much client silence to find
	// dead peers. Default 0: off.
	PingInterval time.Duration
	// PingTimeout is how long a ping may go unanswered. Default 30 s.
	PingTimeout time.Duration
	// FrameTimeout bounds how long a partially received frame may sit in a
	// buffer (slow-loris inside a connection). Default 30 s.
	FrameTimeout time.Duration
	// WriteTimeout bounds a write to a client that is not reading. Default 10 s.
	WriteTimeout time.Duration
	// MaxQueueBytes bounds a connection's unsent bytes; over it the
	// connection is closed as a slow consumer. Default 1 MiB.
	MaxQueueBytes int
	// ControlRate limits the control frames (pings and pongs) one client
	// may send, per second on average; above it the connection is closed
	// with 1008 (ReasonControlRate). Control frames are answered by the
	// edge itself, so this is what keeps a ping flood from costing the node
	// CPU. Default 10; negative disables.
	ControlRate float64
	// ControlBurst is how many control frames a client may send at once
	// before ControlRate applies. Default 50.
	ControlBurst int
	// PendingQueueBytes bounds messages posted while $connect is still
	// running; they are delivered right after the upgrade. Default 64 KiB;
	// negative refuses them with 410 (conn.ErrGone), as API Gateway does.
	PendingQueueBytes int
	// AllowedOrigins lists Origin values accepted on the upgrade ("*" = any).
	// Empty accepts any origin (and requests without one).
	AllowedOrigins []string
	// Subprotocols the edge accepts itself, in order of preference, when the
	// $connect handler does not choose one.
	Subprotocols []string
	// AppPing, if set, is a text message the edge answers itself with
	// AppPong (e.g. "ping" → "pong"): application keepalives never wake a
	// backend. Both count as activity for the idle timeout.
	AppPing string
	// AppPong is the answer to AppPing. Default "pong".
	AppPong string
	// Workers read and process frames of readable sockets. Default 4×GOMAXPROCS.
	Workers int
	// TickInterval is how often timeouts are checked. Default 1 s.
	TickInterval time.Duration
	// DrainWindow spreads the closing of connections on shutdown so clients
	// do not reconnect to the survivors all at once. Default 5 s.
	DrainWindow time.Duration
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.AppPing != "" && c.AppPong == "" {
		c.AppPong = "pong"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	def(&c.MaxMessageBytes, 128<<10)
	def(&c.MaxFrameBytes, 32<<10)
	def(&c.MaxHeaderBytes, 8<<10)
	def(&c.MaxHandshakes, 4096)
	def(&c.MaxHandshakesPerIP, max(1, c.MaxHandshakes/8))
	def(&c.MaxQueueBytes, 1<<20)
	def(&c.PendingQueueBytes, 64<<10)
	def(&c.ControlBurst, 50)
	if c.ControlRate == 0 {
		c.ControlRate = 10
	}
	def(&c.Workers, 4*runtime.GOMAXPROCS(0))
	dur(&c.HandshakeTimeout, 10*time.Second)
	dur(&c.IdleTimeout, 10*time.Minute)
	dur(&c.MaxDuration, 2*time.Hour)
	dur(&c.PingTimeout, 30*time.Second)
	dur(&c.FrameTimeout, 30*time.Second)
	dur(&c.WriteTimeout, 10*time.Second)
	dur(&c.TickInterval, time.Second)
	dur(&c.DrainWindow, 5*time.Second)
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.MaxFrameBytes < 125 {
		errs = append(errs, fmt.Errorf("max frame bytes %d: must be at least 125", c.MaxFrameBytes))
	}
	if c.MaxMessageBytes < c.MaxFrameBytes {
		errs = append(errs, fmt.Errorf("max message bytes %d: must be at least the max frame bytes %d", c.MaxMessageBytes, c.MaxFrameBytes))
	}
	if c.MaxHeaderBytes < 512 {
		errs = append(errs, fmt.Errorf("max header bytes %d: must be at least 512", c.MaxHeaderBytes))
	}
	if c.MaxQueueBytes < c.MaxMessageBytes {
		errs = append(errs, fmt.Errorf("max queue bytes %d: must hold at least one message (%d)", c.MaxQueueBytes, c.MaxMessageBytes))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"handshake timeout", c.HandshakeTimeout}, {"ping timeout", c.PingTimeout}, {"frame timeout", c.FrameTimeout}, {"write timeout", c.WriteTimeout}, {"tick interval", c.TickInterval}, {"drain window", c.DrainWindow}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", d.name, d.v))
		}
	}
	if math.IsNaN(c.ControlRate) || math.IsInf(c.ControlRate, 1) {
		errs = append(errs, fmt.Errorf("control rate %v: want a number (negative disables)", c.ControlRate))
	}
	if c.ControlBurst < 0 || c.ControlBurst > 1<<20 {
		errs = append(errs, fmt.Errorf("control burst %d: want 1 to %d", c.ControlBurst, 1<<20))
	}
	if c.Workers < 1 || c.MaxHandshakes < 1 {
		errs = append(errs, errors.New("workers and max handshakes must be positive"))
	}
	return errors.Join(errs...)
}
