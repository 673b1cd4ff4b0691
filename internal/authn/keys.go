package authn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// key is one verification key. pub is []byte (HS256), *rsa.PublicKey
// (RS256) or *ecdsa.PublicKey on P-256 (ES256): its type alone decides which
// algorithm may use it.
type key struct {
	kid string
	alg string // "" = any algorithm of the key's type
	pub any
}

func (k key) algorithm() string {
	switch k.pub.(type) {
	case []byte:
		return HS256
	case *rsa.PublicKey:
		return RS256
	case *ecdsa.PublicKey:
		return ES256
	}
	return ""
}

const (
	minHMACBytes = 32   // RFC 7518 §3.2: an HS256 key is at least 256 bits
	minRSABits   = 2048 // smaller RSA keys are forgeable in practice
	maxKeyFile   = 1 << 20
)

// parseKeysFile reads PEM public keys or, if data holds no PEM block, an
// HMAC secret.
func parseKeysFile(data []byte) ([]key, error) {
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		secret := bytes.TrimSuffix(bytes.TrimSuffix(data, []byte("\n")), []byte("\r"))
		if len(secret) < minHMACBytes {
			return nil, fmt.Errorf("HMAC secret is %d bytes, want at least %d", len(secret), minHMACBytes)
		}
		return []key{{pub: bytes.Clone(secret)}}, nil
	}
	var keys []key
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		var pub any
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				pub = c.PublicKey
			}
		default:
			return nil, fmt.Errorf("PEM block %q: only public keys and certificates belong here", b.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %q: %w", b.Type, err)
		}
		k, err := checkedKey(key{pub: pub})
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key found")
	}
	return keys, nil
}

// checkedKey refuses key types and sizes the authorizer must not trust.
func checkedKey(k key) (key, error) {
	switch p := k.pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < minRSABits {
			return k, fmt.Errorf("RSA key of %d bits (want at least %d)", p.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return k, fmt.Errorf("EC key on %s (only P-256, for ES256)", p.Curve.Params().Name)
		}
	case []byte:
		if len(p) < minHMACBytes {
			return k, fmt.Errorf("HMAC key of %d bytes (want at least %d)", len(p), minHMACBytes)
		}
	default:
		return k, fmt.Errorf("unsupported key type %T", k.pub)
	}
	if k.alg != "" && k.alg != k.algorithm() {
		return k, fmt.Errorf("key %q: alg %s does not fit a %s key", k.kid, k.alg, k.algorithm())
	}
	return k, nil
}

// jwk is the subset of RFC 7517 the authorizer reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	K   string `json:"k"`
}

// parseJWKS reads a key set. Keys that are not for signatures or of an
// algorithm the authorizer does not speak are skipped, not fatal, so one
// exotic key in a shared set does not lock everyone out.
func parseJWKS(data []byte) ([]key, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var keys []key
	var skipped []error
	for i, j := range set.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		k, err := j.key()
		if err == nil {
			k, err = checkedKey(k)
		}
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d (%q): %w", i, j.Kid, err))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS holds no usable key: %w", errors.Join(skipped...))
	}
	return keys, nil
}

func (j jwk) key() (key, error) {
	b64 := base64.RawURLEncoding
	k := key{kid: j.Kid, alg: j.Alg}
	switch j.Kty {
	case "RSA":
		n, err1 := b64.DecodeString(j.N)
		e, err2 := b64.DecodeString(j.E)
		if err := errors.Join(err1, err2); err != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return k, fmt.Errorf("RSA key: bad n or e")
		}
		k.pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	case "EC":
		if j.Crv != "P-256" {
			return k, fmt.Errorf("EC curve %q (only P-256)", j.Crv)
		}
		x, err1 := b64.DecodeString(j.X)
		y, err2 := b64.DecodeString(j.Y)
		if errors.Join(err1, err2) != nil || len(x) != 32 || len(y) != 32 {
			return k, errors.New("EC key: bad x or y")
		}
		// Parsing the uncompressed point checks that it is on the curve.
		pt := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
		if err != nil {
			return k, fmt.Errorf("EC key: %w", err)
		}
		k.pub = pub
	case "oct":
		s, err := b64.DecodeString(j.K)
		if err != nil {
			return k, fmt.Errorf("oct key: %w", err)
		}
		k.pub = s
	default:
		return k, fmt.Errorf("kty %q not supported", j.Kty)
	}
	return k, nil
}

// keyFile is a key file re-read when its size or mtime changes. Checks are
// made lazily, at most once per interval, by whichever Authorize call comes
// first: no goroutine, and a broken rewrite keeps the last good keys.
type keyFile struct {
	path     string
	parse    func([]byte) ([]key, error)
	interval time.Duration
	onError  func(path string, err error)

	keys      atomic.Pointer[[]key]
	nextCheck atomic.Int64 // unix nanos
	mu        sync.Mutex   // one reload at a time
	seen      stamp
	bad       stamp // the last version that failed to load: not retried
}

// stamp identifies a file version. The inode catches a rename-based
// rotation even when size and mtime (coarse on some filesystems) match.
type stamp struct {
	size  int64
	mtime int64 // unix nanos
	ino   uint64
}

func stampOf(st os.FileInfo) stamp {
	s := stamp{size: st.Size(), mtime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.ino = sys.Ino
	}
	return s
}

func newKeyFile(path string, parse func([]byte) ([]key, error), interval time.Duration, onError func(string, error)) (*keyFile, error) {
	f := &keyFile{path: path, parse: parse, interval: interval, onError: onError}
	if err := f.load(); err != nil {
		return nil, err
	}
	f.nextCheck.Store(time.Now().Add(interval).UnixNano())
	return f, nil
}

func (f *keyFile) load() error {
	st, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("authn: key file: %w", err)
	}
	if st.Size() > maxKeyFile {
		return fmt.Errorf("authn: key file %s is %d bytes (max %d)", f.path, st.Size(), maxKeyFile)
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("authn: key file: %w", err)
	}
	keys, err := f.parse(data)
	if err != nil {
		return fmt.Errorf("authn: key file %s: %w", f.path, err)
	}
	f.seen = stampOf(st)
	f.keys.Store(&keys)
	return nil
}

// current returns the keys, re-reading the file first if it is time to
// check and it changed.
func (f *keyFile) current(now time.Time) []key {
	next := f.nextCheck.Load()
	if now.UnixNano() >= next && f.nextCheck.CompareAndSwap(next, now.Add(f.interval).UnixNano()) {
		f.mu.Lock()
		if st, err := os.Stat(f.path); err != nil {
			f.onError(f.path, err)
		} else if s := stampOf(st); s != f.seen && s != f.bad {
			if err := f.load(); err != nil {
				f.bad = s
				f.onError(f.path, err)
			}
		}
		f.mu.Unlock()
	}
	return *f.keys.Load()
}
