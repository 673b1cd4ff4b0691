package edge

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/switchboardgw/switchboard/internal/flagext"
)

// The defaults: what a zero field means and what the flags default to.
const (
	DefaultListen            = ":8080"
	DefaultMaxMessageBytes   = 128 << 10
	DefaultMaxFrameBytes     = 32 << 10
	DefaultMaxHeaderBytes    = 8 << 10
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultMaxHandshakes     = 4096
	DefaultIdleTimeout       = 10 * time.Minute
	DefaultMaxDuration       = 2 * time.Hour
	DefaultPingTimeout       = 30 * time.Second
	DefaultFrameTimeout      = 30 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultMaxQueueBytes     = 1 << 20
	DefaultControlRate       = 10
	DefaultControlBurst      = 50
	DefaultPendingQueueBytes = 64 << 10
	DefaultAppPong           = "pong"
	DefaultTickInterval      = time.Second
	DefaultDrainWindow       = 5 * time.Second
	DefaultResumeWindow      = 30 * time.Second
	DefaultResumeReplayBytes = 64 << 10
	// DefaultCompressionMinBytes: below about this size a JSON message
	// deflated on its own (no context takeover) saves a few bytes at best.
	DefaultCompressionMinBytes = 256
	DefaultCompressionLevel    = 1 // flate.BestSpeed
)

// Config is the WebSocket side of an edge node. The zero value of every field
// means its default, given in the field's comment (API Gateway's where it has one).
type Config struct {
	// Listen is the WebSocket listen address. Default ":8080" (every
	// interface: the WebSocket port is the public one).
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
	// ResumeWindow is how long a resumable connection (the client asked
	// with ?resume=1) whose socket was lost stays detached, waiting for its
	// client to resume it (docs/resume.md). 0: resume off (the flag's
	// default is 30 s).
	ResumeWindow time.Duration
	// ResumeReplayBytes bounds the recent messages a resumable connection
	// keeps to send again on resume, each charged 32 bytes more than its
	// size. Default 64 KiB.
	ResumeReplayBytes int
	// Compression negotiates permessage-deflate (RFC 7692) with clients that
	// offer it, with no context takeover either way (docs/compression.md).
	// Default off.
	Compression bool
	// CompressionMinBytes: messages smaller than this are sent uncompressed.
	// Default 256.
	CompressionMinBytes int
	// CompressionLevel is the compress/flate level, 1 (fastest) to 9.
	// Default 1.
	CompressionLevel int

	// trimMin is the smallest burst after which memory is given back
	// (trim.go); trimMinUpgrades unless a test sets it.
	trimMin uint64
}

// RegisterFlags binds the fields an operator sets to flags, each with the
// default a zero field has.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.Listen, "listen", DefaultListen, "WebSocket listen address")
	f.StringVar(&c.Path, "path", "", "URL path clients connect to (empty: any path)")
	f.IntVar(&c.MaxMessageBytes, "max-message-bytes", DefaultMaxMessageBytes, "largest client message after reassembly (close 1009 above)")
	f.IntVar(&c.MaxFrameBytes, "max-frame-bytes", DefaultMaxFrameBytes, "largest client frame payload (close 1009 above)")
	f.IntVar(&c.MaxHeaderBytes, "max-header-bytes", DefaultMaxHeaderBytes, "largest upgrade request (HTTP 431 above)")
	f.DurationVar(&c.HandshakeTimeout, "handshake-timeout", DefaultHandshakeTimeout, "time allowed for the upgrade request and $connect")
	f.IntVar(&c.MaxHandshakes, "max-handshakes", DefaultMaxHandshakes, "handshakes in progress at once (HTTP 503 above)")
	f.IntVar(&c.MaxHandshakesPerIP, "max-handshakes-per-ip", 0, "handshakes in progress from one source IP (IPv6: per /64), counted from accept; more get HTTP 429 before anything is read. Peers in -trusted-proxies are exempt: their clients are counted once the PROXY or forwarding header names them (0: -max-handshakes/8; negative: no limit)")
	f.DurationVar(&c.IdleTimeout, "idle-timeout", DefaultIdleTimeout, "close connections silent this long (1001); negative disables")
	f.DurationVar(&c.MaxDuration, "max-duration", DefaultMaxDuration, "close connections open this long (1001); negative disables")
	f.DurationVar(&c.PingInterval, "ping-interval", 0, "send a protocol ping after this much silence (0: off)")
	f.DurationVar(&c.PingTimeout, "ping-timeout", DefaultPingTimeout, "close a connection whose ping goes unanswered this long")
	f.DurationVar(&c.FrameTimeout, "frame-timeout", DefaultFrameTimeout, "close a connection whose partial frame stays unfinished this long (1008)")
	f.DurationVar(&c.WriteTimeout, "write-timeout", DefaultWriteTimeout, "give up on a client that does not read for this long")
	f.IntVar(&c.MaxQueueBytes, "max-queue-bytes", DefaultMaxQueueBytes, "unsent bytes per connection before it is closed as a slow consumer")
	f.Float64Var(&c.ControlRate, "control-rate", DefaultControlRate, "pings and pongs per second one client may send (the edge answers them itself); above it, after -control-burst, the connection is closed with 1008, reason control_rate (negative: unlimited; 0 means the default)")
	f.IntVar(&c.ControlBurst, "control-burst", DefaultControlBurst, "pings and pongs a client may send at once before -control-rate applies")
	f.IntVar(&c.PendingQueueBytes, "pending-queue-bytes", DefaultPendingQueueBytes, "bytes posted during $connect held for delivery after the upgrade; -1 refuses such posts with 410 like API Gateway")
	flagext.StringListVar(f, &c.AllowedOrigins, "allowed-origins", "comma-separated Origin values accepted (empty: any)")
	flagext.StringListVar(f, &c.Subprotocols, "subprotocols", "comma-separated subprotocols the edge accepts itself, preferred first")
	f.StringVar(&c.AppPing, "app-ping", "", "a text message the edge answers itself, never routed (e.g. ping); empty: off")
	f.StringVar(&c.AppPong, "app-pong", DefaultAppPong, "the edge's answer to -app-ping")
	f.IntVar(&c.Workers, "workers", 0, "reactor workers (0: 4×GOMAXPROCS)")
	f.DurationVar(&c.DrainWindow, "drain-window", DefaultDrainWindow, "spread the closing of connections on shutdown over this window")
	f.DurationVar(&c.ResumeWindow, "resume-window", DefaultResumeWindow, "how long a resumable connection (?resume=1) whose socket was lost waits, detached, for its client to resume it (docs/resume.md); 0 turns resume off")
	f.IntVar(&c.ResumeReplayBytes, "resume-replay-bytes", DefaultResumeReplayBytes, "recent messages a resumable connection keeps to send again on resume, each charged 32 bytes above its size")
	f.BoolVar(&c.Compression, "compression", false, "negotiate permessage-deflate (RFC 7692, no context takeover) with clients that offer it; fan-out is compressed once per node")
	f.IntVar(&c.CompressionMinBytes, "compression-min-bytes", DefaultCompressionMinBytes, "messages smaller than this are sent uncompressed (with -compression)")
	f.IntVar(&c.CompressionLevel, "compression-level", DefaultCompressionLevel, "deflate level with -compression, 1 (fastest) to 9 (smallest)")
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
		c.AppPong = DefaultAppPong
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	def(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	def(&c.MaxFrameBytes, DefaultMaxFrameBytes)
	def(&c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	def(&c.MaxHandshakes, DefaultMaxHandshakes)
	def(&c.MaxHandshakesPerIP, max(1, c.MaxHandshakes/8))
	def(&c.MaxQueueBytes, DefaultMaxQueueBytes)
	def(&c.PendingQueueBytes, DefaultPendingQueueBytes)
	def(&c.ControlBurst, DefaultControlBurst)
	def(&c.ResumeReplayBytes, DefaultResumeReplayBytes)
	if c.ControlRate == 0 {
		c.ControlRate = DefaultControlRate
	}
	def(&c.Workers, 4*runtime.GOMAXPROCS(0))
	dur(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	dur(&c.IdleTimeout, DefaultIdleTimeout)
	dur(&c.MaxDuration, DefaultMaxDuration)
	dur(&c.PingTimeout, DefaultPingTimeout)
	dur(&c.FrameTimeout, DefaultFrameTimeout)
	dur(&c.WriteTimeout, DefaultWriteTimeout)
	dur(&c.TickInterval, DefaultTickInterval)
	dur(&c.DrainWindow, DefaultDrainWindow)
	def(&c.CompressionMinBytes, DefaultCompressionMinBytes)
	def(&c.CompressionLevel, DefaultCompressionLevel)
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
	if c.ResumeWindow < 0 {
		errs = append(errs, fmt.Errorf("resume window %v: must not be negative (0 turns resume off)", c.ResumeWindow))
	}
	if c.ResumeReplayBytes < 0 {
		errs = append(errs, fmt.Errorf("resume replay bytes %d: must not be negative", c.ResumeReplayBytes))
	}
	if c.CompressionLevel < 1 || c.CompressionLevel > 9 {
		errs = append(errs, fmt.Errorf("compression level %d: want 1 to 9", c.CompressionLevel))
	}
	if c.CompressionMinBytes < 0 {
		errs = append(errs, fmt.Errorf("compression min bytes %d: must not be negative", c.CompressionMinBytes))
	}
	if c.Workers < 1 || c.MaxHandshakes < 1 {
		errs = append(errs, errors.New("workers and max handshakes must be positive"))
	}
	return errors.Join(errs...)
}
