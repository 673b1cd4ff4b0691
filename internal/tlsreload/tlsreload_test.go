package tlsreload

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// pair makes a self-signed certificate for 127.0.0.1 named cn, as PEM.
func pair(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// replace writes a file the way rotation tools do: a new file renamed
// over the old one.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// serve runs an HTTPS server with r's configuration and returns a function
// giving the CommonName of the certificate a new connection sees.
func serve(t *testing.T, r *Reloader) func() string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), ErrorLog: nil}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return func() string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{InsecureSkipVerify: true}) // the test checks which certificate, not trust
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
}

var waitFor = testenv.Eventually

func TestCertificateRotates(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := pair(t, "first")
	replace(t, certFile, c1)
	replace(t, keyFile, k1)
	r, err := New(Config{CertFile: certFile, KeyFile: keyFile, CheckInterval: time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	served := serve(t, r)
	if got := served(); got != "first" {
		t.Fatalf("served %q, want first", got)
	}

	// Half a rotation (new certificate, old key) is not a valid pair: the
	// old certificate stays in service.
	c2, k2 := pair(t, "second")
	replace(t, certFile, c2)
	for i := 0; i < 5; i++ {
		if got := served(); got != "first" {
			t.Fatalf("served %q during a half-done rotation, want first", got)
		}
		time.Sleep(2 * time.Millisecond)
	}
	replace(t, keyFile, k2)
	waitFor(t, "the rotated certificate", func() bool { return served() == "second" })
	if r.Loads() != 2 {
		t.Fatalf("Loads = %d, want 2 (initial and rotation)", r.Loads())
	}

	// Files removed (a volume remounting): keep serving.
	_ = os.Remove(certFile)
	if got := served(); got != "second" {
		t.Fatalf("served %q with the files gone, want second", got)
	}
}

func TestNewRefusesBadPair(t *testing.T) {
	dir := t.TempDir()
	c1, _ := pair(t, "a")
	_, k2 := pair(t, "b")
	cf, kf := filepath.Join(dir, "c"), filepath.Join(dir, "k")
	replace(t, cf, c1)
	replace(t, kf, k2)
	if _, err := New(Config{CertFile: cf, KeyFile: kf}, nil); err == nil {
		t.Fatal("mismatched pair accepted")
	}
	if _, err := New(Config{CertFile: cf}, nil); err == nil {
		t.Fatal("missing key file accepted")
	}
	if _, err := New(Config{CertFile: filepath.Join(dir, "nope"), KeyFile: kf}, nil); err == nil {
		t.Fatal("missing certificate accepted")
	}
}
