package tlsterm

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/proxyproto"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// echo answers every message and records who connected and how they left.
type echo struct {
	mu     sync.Mutex
	ips    []string
	closes []int
}

func (h *echo) Connect(_ context.Context, c *edge.Conn, _ *edge.Request) (*edge.Accept, error) {
	h.mu.Lock()
	h.ips = append(h.ips, c.SourceIP())
	h.mu.Unlock()
	return &edge.Accept{}, nil
}
func (h *echo) Open(*edge.Conn)                                {}
func (h *echo) Message(c *edge.Conn, data []byte, binary bool) { _ = c.Send(data, binary) }
func (h *echo) Close(_ *edge.Conn, code int, _ string, _ edge.CloseReason) {
	h.mu.Lock()
	h.closes = append(h.closes, code)
	h.mu.Unlock()
}

// wss:// end to end through the bridge into the epoll edge: the handshake,
// messages both ways, the client's address, the close code, and a client
// that fails the TLS handshake never reaching the edge's Handler.
func TestWSSThroughTheReactor(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(inner, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := &echo{}
	srv, err := edge.New(edge.Config{TickInterval: 20 * time.Millisecond, DrainWindow: 20 * time.Millisecond},
		edge.Options{Handler: h, Listener: ln, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
		ln.Wait() // every bridge ended with its connection
	}()

	// A client that speaks plain HTTP to the TLS port fails the handshake.
	plain, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, plain) // ends when the bridge gives up
	plain.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := ws.Dialer{TLSConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // self-signed test certificate
	c, br, _, err := d.Dial(ctx, "wss://"+inner.Addr().String()+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var r io.Reader = c
	if br != nil {
		r = br
	}
	rw := struct {
		io.Reader
		io.Writer
	}{bufio.NewReader(r), c}
	for _, msg := range []string{"hello over TLS", string(make([]byte, 20000))} {
		if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		got, err := wsutil.ReadServerText(rw)
		if err != nil || string(got) != msg {
			t.Fatalf("echo: %d bytes, %v", len(got), err)
		}
	}
	if err := ws.WriteFrame(c, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(4000, "bye")))); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "close reported", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.closes) == 1 && h.closes[0] == 4000
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ips) != 1 || h.ips[0] != "127.0.0.1" {
		t.Fatalf("Connect saw %q, want one connection from 127.0.0.1 (the plain client must not get that far)", h.ips)
	}
}

// Behind a PROXY protocol balancer the client is known from the header,
// before any TLS byte: Handshake reads it, so the edge can charge that
// client's handshake slots to it while the TLS handshake is still to come.
func TestHandshakeReadsThePROXYHeaderBeforeTLS(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := proxyproto.Listen(inner, proxyproto.Config{Required: true, TrustAll: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(pl, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ln.Close(); ln.Wait() }()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "PROXY TCP4 192.0.2.9 127.0.0.1 40000 443\r\n"); err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hs, ok := nc.(interface{ Handshake() error })
	if !ok {
		t.Fatal("tlsterm.Conn has no Handshake")
	}
	if err := hs.Handshake(); err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	if got := nc.RemoteAddr().String(); got != "192.0.2.9:40000" {
		t.Fatalf("RemoteAddr %s after the PROXY header, want 192.0.2.9:40000 (no TLS byte sent yet)", got)
	}
}
