// Package admission decides whether a node takes a new connection (rates per
// node and per source IP, counts per node and per user) and limits each
// connection's inbound message rate. Everything is in memory and per node:
// cluster-wide limits would cost a Redis round trip per connect.
package admission

import (
	"container/list"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/clientip"
)

// Config sets the limits. Zero means the default; every limit defaults to
// unlimited.
type Config struct {
	// ConnRate: new connections per second on this node. Default: unlimited.
	ConnRate float64
	// ConnBurst: new connections allowed at once above ConnRate.
	// Default: ConnRate rounded up (at least 1).
	ConnBurst int
	// ConnRatePerIP: new connections per second from one source IP (one
	// IPv6 /IPv6Prefix). Default: unlimited.
	ConnRatePerIP float64
	// ConnBurstPerIP: burst of ConnRatePerIP. Default: ConnRatePerIP
	// rounded up (at least 1).
	ConnBurstPerIP int
	// MaxConns: open connections on this node. Default: unlimited.
	MaxConns int
	// MaxConnsPerUser: open connections of one user on this node.
	// Default: unlimited.
	MaxConnsPerUser int
	// MsgRate: inbound messages per second per connection. Default: unlimited.
	MsgRate float64
	// MsgBurst: burst of MsgRate. Default: MsgRate rounded up (at least 1).
	MsgBurst int
	// MaxTrackedIPs bounds the per-IP rate state; past it, the least
	// recently seen source is forgotten (it starts again with a full
	// bucket). Default: 65536 (about 12 MiB at 192 bytes a source).
	MaxTrackedIPs int
	// IPv6Prefix: IPv6 sources are limited per prefix of this length, since
	// one client usually holds a whole /64. Default: 64.
	IPv6Prefix int
}

// RegisterFlags binds the limits an operator sets to flags; each defaults to
// 0, unlimited.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.Float64Var(&c.ConnRate, "conn-rate", 0, "new connections per second on this node, 429 above (0: unlimited)")
	f.Float64Var(&c.ConnRatePerIP, "conn-rate-per-ip", 0, "new connections per second from one source IP (IPv6: per /64), 429 above (0: unlimited)")
	f.IntVar(&c.MaxConns, "max-conns", 0, "open connections on this node, 503 above (0: unlimited)")
	f.IntVar(&c.MaxConnsPerUser, "max-conns-per-user", 0, "open connections of one user on this node, 429 above (0: unlimited)")
	f.Float64Var(&c.MsgRate, "msg-rate", 0, "inbound messages per second per connection; above it the connection is closed with 1008 (0: unlimited)")
}

// Enabled reports whether any limit is set (a node without one needs no
// admission control at all).
func (c Config) Enabled() bool {
	return c.ConnRate > 0 || c.ConnRatePerIP > 0 || c.MaxConns > 0 || c.MaxConnsPerUser > 0 || c.MsgRate > 0
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	if c.ConnRate < 0 || c.ConnRatePerIP < 0 || c.MsgRate < 0 || math.IsNaN(c.ConnRate+c.ConnRatePerIP+c.MsgRate) {
		return errors.New("admission: negative rate")
	}
	if c.ConnBurst < 0 || c.ConnBurstPerIP < 0 || c.MsgBurst < 0 || c.MaxConns < 0 || c.MaxConnsPerUser < 0 || c.MaxTrackedIPs < 0 {
		return errors.New("admission: negative limit")
	}
	if c.IPv6Prefix < 0 || c.IPv6Prefix > 128 {
		return fmt.Errorf("admission: IPv6 prefix /%d", c.IPv6Prefix)
	}
	return nil
}

func (c Config) withDefaults() Config {
	burst := func(b *int, rate float64) {
		if *b == 0 {
			*b = max(1, int(math.Ceil(rate)))
		}
	}
	burst(&c.ConnBurst, c.ConnRate)
	burst(&c.ConnBurstPerIP, c.ConnRatePerIP)
	burst(&c.MsgBurst, c.MsgRate)
	if c.MaxTrackedIPs == 0 {
		c.MaxTrackedIPs = 65536
	}
	if c.IPv6Prefix == 0 {
		c.IPv6Prefix = clientip.DefaultIPv6Prefix
	}
	return c
}

// Rejection reasons: metric label values and Error.Reason.
const (
	ReasonNodeRate  = "node_rate"  // ConnRate
	ReasonIPRate    = "ip_rate"    // ConnRatePerIP
	ReasonNodeConns = "node_conns" // MaxConns
	ReasonUserConns = "user_conns" // MaxConnsPerUser
	ReasonMsgRate   = "msg_rate"   // MsgRate (counted by MessageRejected)
)

// Error is a refused connection with the HTTP status to answer the upgrade
// with: 429 for rates and per-user counts, 503 when the node is full (a load
// balancer may retry another node).
type Error struct {
	Reason string
	Status int
}

func (e *Error) Error() string { return "admission: refused (" + e.Reason + ")" }

// StatusOf is the HTTP status for an Admit error (500 if it is not an *Error).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return http.StatusInternalServerError
}

var (
	errNodeRate  = &Error{Reason: ReasonNodeRate, Status: http.StatusTooManyRequests}
	errIPRate    = &Error{Reason: ReasonIPRate, Status: http.StatusTooManyRequests}
	errNodeConns = &Error{Reason: ReasonNodeConns, Status: http.StatusServiceUnavailable}
	errUserConns = &Error{Reason: ReasonUserConns, Status: http.StatusTooManyRequests}
)

// Controller is a node's admission control. Safe for concurrent use.
type Controller struct {
	cfg      Config
	node     sharedBucket
	perIP    gcra
	conns    atomic.Int64
	mu       sync.Mutex // ips, lru, users
	ips      map[netip.Prefix]*list.Element
	lru      *list.List // of *ipEntry, most recent first
	users    map[string]int
	rejected *prometheus.CounterVec
	tracked  prometheus.GaugeFunc
	now      func() time.Time
}

type ipEntry struct {
	key netip.Prefix
	tat int64
}

// New builds admission control and registers its metrics on reg (nil: none).
func New(cfg Config, reg prometheus.Registerer) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Controller{
		cfg:   cfg,
		perIP: newGCRA(cfg.ConnRatePerIP, cfg.ConnBurstPerIP),
		ips:   map[netip.Prefix]*list.Element{},
		lru:   list.New(),
		users: map[string]int{},
		now:   time.Now,
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_admission_rejected_total",
			Help: "Connections (and messages, reason msg_rate) refused by admission control, by reason.",
		}, []string{"reason"}),
	}
	a.node.g = newGCRA(cfg.ConnRate, cfg.ConnBurst)
	a.tracked = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_admission_tracked_sources",
		Help: "Source IPs (IPv6 prefixes) whose connection rate is being tracked.",
	}, func() float64 { a.mu.Lock(); defer a.mu.Unlock(); return float64(len(a.ips)) })
	for _, r := range []string{ReasonNodeRate, ReasonIPRate, ReasonNodeConns, ReasonUserConns, ReasonMsgRate} {
		a.rejected.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.rejected, a.tracked} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("admission metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Admit decides for a new connection from ip (as the edge reports it; an
// unparsable ip skips the per-IP rate) of user ("" when not yet known). On
// success release must be called exactly once when the connection ends
// (or if it never opens); it is safe to call more than once. Checks run from
// cheapest to most contended, and a refused connection uses up nothing but
// the rate tokens it already took.
func (a *Controller) Admit(ip, user string) (release func(), err error) {
	now := a.now().UnixNano()
	if addr, perr := netip.ParseAddr(ip); perr == nil && a.perIP.interval != 0 && !a.allowIP(addr, now) {
		return nil, a.reject(errIPRate)
	}
	if !a.node.allow(now) {
		return nil, a.reject(errNodeRate)
	}
	if n := a.conns.Add(1); a.cfg.MaxConns > 0 && n > int64(a.cfg.MaxConns) {
		a.conns.Add(-1)
		return nil, a.reject(errNodeConns)
	}
	releaseUser := func() {}
	if user != "" {
		if releaseUser, err = a.AdmitUser(user); err != nil {
			a.conns.Add(-1)
			return nil, err
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			releaseUser()
			a.conns.Add(-1)
		})
	}, nil
}

// AdmitResume decides for the resume handshake of a detached connection
// from ip (docs/resume.md): the connection rates apply, as to any upgrade;
// the caps do not, since the connection still holds its slot.
func (a *Controller) AdmitResume(ip string) error {
	now := a.now().UnixNano()
	if addr, perr := netip.ParseAddr(ip); perr == nil && a.perIP.interval != 0 && !a.allowIP(addr, now) {
		return a.reject(errIPRate)
	}
	if !a.node.allow(now) {
		return a.reject(errNodeRate)
	}
	return nil
}

// AdmitUser counts one more connection for user, for when the user ID is
// learnt after Admit (from the $connect integration's reply). Call its
// release exactly once (more is safe) when the connection ends.
func (a *Controller) AdmitUser(user string) (release func(), err error) {
	if a.cfg.MaxConnsPerUser == 0 || user == "" {
		return func() {}, nil
	}
	a.mu.Lock()
	if a.users[user] >= a.cfg.MaxConnsPerUser {
		a.mu.Unlock()
		return nil, a.reject(errUserConns)
	}
	a.users[user]++
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			// Entries go at zero, so the map holds only users with open
			// connections.
			if a.users[user]--; a.users[user] <= 0 {
				delete(a.users, user)
			}
			a.mu.Unlock()
		})
	}, nil
}

// Conns is the number of admitted connections not yet released.
func (a *Controller) Conns() int { return int(a.conns.Load()) }

// MessageLimiter returns a fresh per-connection message limiter for MsgRate.
func (a *Controller) MessageLimiter() MessageLimiter {
	return NewMessageLimiter(a.cfg.MsgRate, a.cfg.MsgBurst)
}

// MessageRejected counts a connection closed (1008) for exceeding MsgRate.
func (a *Controller) MessageRejected() { a.rejected.WithLabelValues(ReasonMsgRate).Inc() }

func (a *Controller) reject(e *Error) error {
	a.rejected.WithLabelValues(e.Reason).Inc()
	return e
}

// allowIP applies the per-source rate. The state is an LRU bounded by
// MaxTrackedIPs: a flood of distinct sources evicts the least recently seen
// ones instead of growing the map. An evicted source whose bucket had not
// refilled gets a fresh one; that is the price of the bound, and the node
// rate still holds.
func (a *Controller) allowIP(addr netip.Addr, now int64) bool {
	key := a.sourceKey(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	el, ok := a.ips[key]
	if !ok {
		if a.lru.Len() >= a.cfg.MaxTrackedIPs {
			old := a.lru.Back()
			delete(a.ips, old.Value.(*ipEntry).key)
			a.lru.Remove(old)
		}
		el = a.lru.PushFront(&ipEntry{key: key})
		a.ips[key] = el
	} else {
		a.lru.MoveToFront(el)
	}
	e := el.Value.(*ipEntry)
	tat, allowed := a.perIP.allow(e.tat, now)
	e.tat = tat
	return allowed
}

// sourceKey is the unit a per-IP limit applies to (clientip.SourceKey: the
// IPv4 address, or the IPv6 address's prefix).
func (a *Controller) sourceKey(addr netip.Addr) netip.Prefix {
	return clientip.SourceKey(addr, a.cfg.IPv6Prefix)
}

// TrackedSources is the number of sources whose rate state is kept.
func (a *Controller) TrackedSources() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ips)
}
