package cluster

import (
	"flag"
	"fmt"
	"time"
)

// Defaults of the node's lease and the janitor, as the flags and the zero
// Config both take them.
const (
	DefaultLeaseTTL        = 15 * time.Second
	DefaultFailMode        = FailOpen
	DefaultJanitorInterval = 5 * time.Second
	// MinFlagLeaseTTL is the shortest lease a flag may set: shorter ones
	// fence a node at every scheduling hiccup (tests set them in code).
	MinFlagLeaseTTL = time.Second
)

// RegisterFlags binds the lease and registry-outage settings to flags. The
// node ID is the process's and registered by it.
func (c *NodeConfig) RegisterFlags(fs *flag.FlagSet) {
	c.LeaseTTL = DefaultLeaseTTL
	fs.Var(&leaseFlag{&c.LeaseTTL}, "lease-ttl", "node lease TTL; a node silent this long is declared dead and cleaned up")
	fs.DurationVar(&c.FenceMargin, "fence-margin", 0, "a node that has not renewed its lease for lease-ttl minus this fences itself (holds events, serves no API call for its connections, 503 to new ones) until it renews or learns it was declared dead; 0 means lease-ttl/5")
	c.FailMode = DefaultFailMode
	fs.Var(&c.FailMode, "registry-fail-mode", "new connections while Redis is down: open (accept) or closed (reject 503)")
}

// RegisterFlags binds the janitor's interval to a flag.
func (c *JanitorConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Interval, "janitor-interval", DefaultJanitorInterval, "how often a node looks for dead nodes to clean up (detection takes lease TTL plus up to this)")
}

// String and Set make a FailMode a flag.Value.
func (m *FailMode) String() string { return string(*m) }

func (m *FailMode) Set(s string) error {
	switch FailMode(s) {
	case FailOpen, FailClosed:
		*m = FailMode(s)
		return nil
	}
	return fmt.Errorf("want open or closed")
}

// leaseFlag is a duration of at least MinFlagLeaseTTL.
type leaseFlag struct{ d *time.Duration }

func (f *leaseFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f *leaseFlag) Get() any { return *f.d }

func (f *leaseFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if d < MinFlagLeaseTTL {
		return fmt.Errorf("must be at least %v", MinFlagLeaseTTL)
	}
	*f.d = d
	return nil
}

// DirectConfig is a node's direct command listener (docs/cluster.md,
// "Direct commands").
type DirectConfig struct {
	// Listen: the TCP address to serve node commands on besides NATS; ""
	// turns the direct path off (commands to this node go through NATS).
	Listen string
	// Advertise: the address other nodes dial; "" uses Listen's, which
	// must then name a host.
	Advertise string
}

// RegisterFlags binds the direct listener to flags.
func (c *DirectConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "direct-listen", "", "TCP address to answer node commands on besides NATS, so that @connections calls from the router and other edges skip nats-server (e.g. :7070; empty: off). Its secret is given out only on the cluster's NATS; this node also calls others directly")
	fs.StringVar(&c.Advertise, "direct-advertise", "", "address other nodes dial for -direct-listen (e.g. $(POD_IP):7070); empty: -direct-listen's, which must then name a host")
}

// Enabled reports whether the direct path is on.
func (c DirectConfig) Enabled() bool { return c.Listen != "" }
