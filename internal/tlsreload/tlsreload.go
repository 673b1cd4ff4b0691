// Package tlsreload serves a certificate that is re-read when its files
// change (cert-manager, a Kubernetes secret volume, certbot), so rotating a
// certificate needs no restart. It is for the API and admin listeners (Go's
// net/http). The WebSocket listener reads raw sockets on an epoll reactor,
// which needs plaintext: terminate WebSocket TLS at the load balancer or a
// TLS proxy in front of the edge (see docs/security.md).
package tlsreload

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config names the files.
type Config struct {
	// CertFile is the PEM certificate chain, leaf first. Required.
	CertFile string
	// KeyFile is the PEM private key. Required.
	KeyFile string
	// CheckInterval: how often the files' size and mtime are compared, on
	// the next handshake after it elapses. Default: 10s.
	CheckInterval time.Duration
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	if c.CertFile == "" || c.KeyFile == "" {
		return errors.New("tlsreload: both a certificate and a key file are required")
	}
	if c.CheckInterval < 0 {
		return errors.New("tlsreload: negative check interval")
	}
	return nil
}

// Reloader holds the current certificate. Safe for concurrent use.
type Reloader struct {
	cfg  Config
	log  *slog.Logger
	cert atomic.Pointer[tls.Certificate]
	next atomic.Int64 // unix nanos of the next check

	mu    sync.Mutex // one reload at a time; the stamps below
	seen  [2]stamp   // of the loaded pair
	bad   [2]stamp   // of the last pair that failed, not retried until it changes
	loads atomic.Int64
}

// stamp identifies a file version. The inode catches a rename-based
// rotation even when size and mtime (coarse on some filesystems) match.
type stamp struct {
	size  int64
	mtime int64 // unix nanos
	ino   uint64
}

// New loads the pair; it fails if the files are not a valid pair.
func New(cfg Config, log *slog.Logger) (*Reloader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{cfg: cfg, log: log}
	st, err := r.stamps()
	if err != nil {
		return nil, err
	}
	if err := r.load(st); err != nil {
		return nil, err
	}
	r.next.Store(time.Now().Add(cfg.CheckInterval).UnixNano())
	return r, nil
}

func (r *Reloader) stamps() ([2]stamp, error) {
	var s [2]stamp
	for i, p := range []string{r.cfg.CertFile, r.cfg.KeyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return s, fmt.Errorf("tlsreload: %w", err)
		}
		s[i] = stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			s[i].ino = sys.Ino
		}
	}
	return s, nil
}

func (r *Reloader) load(st [2]stamp) error {
	c, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("tlsreload: %w", err)
	}
	r.cert.Store(&c)
	r.seen = st
	r.loads.Add(1)
	return nil
}

// maybeReload re-reads the pair if the check interval passed and either
// file changed. A pair that does not load (a rotation caught half-written:
// new certificate, old key) keeps the old certificate in service and is
// tried again once the files change again.
func (r *Reloader) maybeReload(now time.Time) {
	next := r.next.Load()
	if now.UnixNano() < next || !r.next.CompareAndSwap(next, now.Add(r.cfg.CheckInterval).UnixNano()) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.stamps()
	if err != nil {
		r.log.Warn("tlsreload: certificate files unreadable; keeping the current certificate", "err", err)
		return
	}
	if st == r.seen || st == r.bad {
		return
	}
	if err := r.load(st); err != nil {
		r.bad = st
		r.log.Warn("tlsreload: certificate not reloaded; keeping the current one", "err", err)
		return
	}
	r.log.Info("tlsreload: certificate reloaded", "cert", r.cfg.CertFile)
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeReload(time.Now())
	return r.cert.Load(), nil
}

// Loads is how many times a pair was loaded (1 after New).
func (r *Reloader) Loads() int { return int(r.loads.Load()) }

// TLSConfig is a server configuration using the reloaded certificate:
// TLS 1.2 or later, HTTP/2 and HTTP/1.1 offered.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
