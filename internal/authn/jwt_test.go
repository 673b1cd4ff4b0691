package authn

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// hmacSecret is a test-only HS256 secret (≥ 32 bytes).
const hmacSecret = "test-secret-test-secret-test-secret-0123456789"

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
)

// testKeys generates the asymmetric keys once per test binary.
func testKeys(t testing.TB) {
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemPublic(t testing.TB, pubs ...any) []byte {
	t.Helper()
	var out []byte
	for _, p := range pubs {
		der, err := x509.MarshalPKIXPublicKey(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	return out
}

// sign makes a token with alg, key and claims; kid is set when non-empty.
func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "role": "admin"}
}

func bearer(tok string) *edge.Request {
	return &edge.Request{Header: http.Header{"Authorization": {"Bearer " + tok}}}
}

func newJWT(t testing.TB, cfg Config) *JWT {
	t.Helper()
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("token accepted; want rejection %q", reason)
	}
	if got := StatusOf(err); got != http.StatusUnauthorized {
		t.Fatalf("StatusOf(%v) = %d, want 401", err, got)
	}
	if got := ReasonOf(err); got != reason {
		t.Fatalf("reason = %q (%v), want %q", got, err, reason)
	}
}

func TestEachAlgorithmAccepted(t *testing.T) {
	testKeys(t)
	secretFile := writeFile(t, "secret", []byte(hmacSecret+"\n"))
	pemFile := writeFile(t, "keys.pem", pemPublic(t, &rsaKey.PublicKey, &ecKey.PublicKey))
	for _, tc := range []struct {
		name   string
		cfg    Config
		method jwt.SigningMethod
		key    any
	}{
		{"HS256", Config{KeysFile: secretFile}, jwt.SigningMethodHS256, []byte(hmacSecret)},
		{"RS256", Config{KeysFile: pemFile}, jwt.SigningMethodRS256, rsaKey},
		{"ES256", Config{KeysFile: pemFile}, jwt.SigningMethodES256, ecKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newJWT(t, tc.cfg)
			res, err := a.Authorize(bearer(sign(t, tc.method, tc.key, "", validClaims())))
			if err != nil {
				t.Fatalf("valid %s token refused: %v", tc.name, err)
			}
			if res.UserID != "alice" {
				t.Fatalf("UserID = %q, want alice", res.UserID)
			}
			var p struct {
				PrincipalID string `json:"principalId"`
				JWT         struct {
					Claims map[string]any `json:"claims"`
				} `json:"jwt"`
			}
			if err := json.Unmarshal(res.Principal, &p); err != nil {
				t.Fatalf("principal %s: %v", res.Principal, err)
			}
			if p.PrincipalID != "alice" || p.JWT.Claims["role"] != "admin" {
				t.Fatalf("principal = %s", res.Principal)
			}
		})
	}
}

func TestRejections(t *testing.T) {
	testKeys(t)
	pemFile := writeFile(t, "keys.pem", pemPublic(t, &rsaKey.PublicKey, &ecKey.PublicKey))
	a := newJWT(t, Config{KeysFile: pemFile, Audience: []string{"chat"}, Issuer: "https://issuer.example", Leeway: -1})
	good := func() jwt.MapClaims {
		c := validClaims()
		c["aud"], c["iss"] = "chat", "https://issuer.example"
		return c
	}
	if _, err := a.Authorize(bearer(sign(t, jwt.SigningMethodRS256, rsaKey, "", good()))); err != nil {
		t.Fatalf("baseline token refused: %v", err)
	}
	with := func(k string, v any) jwt.MapClaims { c := good(); c[k] = v; return c }
	without := func(k string) jwt.MapClaims { c := good(); delete(c, k); return c }
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, rsaKey, "", c) }

	tampered := rs(good())
	parts := strings.Split(tampered, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "alice", "mallo", 1)))
	tampered = strings.Join(parts, ".")

	// alg none: header {"alg":"none"}, no signature.
	noneTok := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + strings.Split(rs(good()), ".")[1] + "."
	// Algorithm confusion: HS256 "signed" with the RSA public key's PEM as the secret.
	confused := sign(t, jwt.SigningMethodHS256, pemPublic(t, &rsaKey.PublicKey), "", good())

	for _, tc := range []struct {
		name, tok, reason string
	}{
		{"expired", rs(with("exp", time.Now().Add(-time.Minute).Unix())), "expired"},
		{"not yet valid", rs(with("nbf", time.Now().Add(time.Minute).Unix())), "not_yet_valid"},
		{"no exp", rs(without("exp")), "claims"},
		{"wrong audience", rs(with("aud", "other")), "audience"},
		{"no audience", rs(without("aud")), "claims"},
		{"wrong issuer", rs(with("iss", "https://evil.example")), "issuer"},
		{"no user claim", rs(without("sub")), "user"},
		{"user claim not a string", rs(with("sub", 42)), "user"},
		{"tampered payload", tampered, "signature"},
		{"signed by another key", sign(t, jwt.SigningMethodRS256, rsaKey2, "", good()), "signature"},
		{"alg none", noneTok, "signature"},
		{"HS256 with the RSA public key as secret", confused, "key"},
		{"garbage", "not.a.jwt", "malformed"},
		{"too large", strings.Repeat("a", 9000), "too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Authorize(bearer(tc.tok))
			wantReason(t, err, tc.reason)
		})
	}
}

func TestLeewayToleratesSmallSkew(t *testing.T) {
	f := writeFile(t, "secret", []byte(hmacSecret))
	a := newJWT(t, Config{KeysFile: f, Leeway: time.Minute})
	c := validClaims()
	c["exp"] = time.Now().Add(-20 * time.Second).Unix()
	if _, err := a.Authorize(bearer(sign(t, jwt.SigningMethodHS256, []byte(hmacSecret), "", c))); err != nil {
		t.Fatalf("token 20s past exp with 1m leeway refused: %v", err)
	}
	c["exp"] = time.Now().Add(-2 * time.Minute).Unix()
	_, err := a.Authorize(bearer(sign(t, jwt.SigningMethodHS256, []byte(hmacSecret), "", c)))
	wantReason(t, err, "expired")
}

func TestMissingToken(t *testing.T) {
	a := newJWT(t, Config{KeysFile: writeFile(t, "s", []byte(hmacSecret)), Query: "token", SubprotocolPrefix: "jwt."})
	for name, r := range map[string]*edge.Request{
		"nothing":             {Header: http.Header{}},
		"basic auth":          {Header: http.Header{"Authorization": {"Basic YWxpY2U6cHc="}}},
		"empty bearer":        {Header: http.Header{"Authorization": {"Bearer "}}},
		"other query":         {Header: http.Header{}, RawQuery: "tok=abc"},
		"prefix only":         {Header: http.Header{}, Protocols: []string{"jwt."}},
		"unprefixed protocol": {Header: http.Header{}, Protocols: []string{"chat"}},
	} {
		_, err := a.Authorize(r)
		if !errors.Is(err, ErrNoToken) || StatusOf(err) != 401 {
			t.Errorf("%s: err = %v, want ErrNoToken (401)", name, err)
		}
	}
}

func TestTokenLocations(t *testing.T) {
	tok := sign(t, jwt.SigningMethodHS256, []byte(hmacSecret), "", validClaims())
	f := writeFile(t, "s", []byte(hmacSecret))
	for _, tc := range []struct {
		name    string
		cfg     Config
		r       *edge.Request
		subprot string
	}{
		{"Authorization bearer", Config{}, bearer(tok), ""},
		{"bearer scheme any case", Config{}, &edge.Request{Header: http.Header{"Authorization": {"bearer " + tok}}}, ""},
		{"custom header", Config{Header: "x-auth-token"}, &edge.Request{Header: http.Header{"X-Auth-Token": {tok}}}, ""},
		{"query parameter", Config{Query: "token"}, &edge.Request{Header: http.Header{}, RawQuery: "room=1&token=" + tok + "&x=%zz"}, ""},
		{"subprotocol", Config{SubprotocolPrefix: "jwt."}, &edge.Request{Header: http.Header{}, Protocols: []string{"jwt." + tok, "chat.v2", "chat.v1"}}, "chat.v2"},
		{"subprotocol token only", Config{SubprotocolPrefix: "jwt."}, &edge.Request{Header: http.Header{}, Protocols: []string{"jwt." + tok}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.KeysFile = f
			res, err := newJWT(t, tc.cfg).Authorize(tc.r)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if res.UserID != "alice" || res.Subprotocol != tc.subprot {
				t.Fatalf("result = %+v, want alice and subprotocol %q", res, tc.subprot)
			}
			if strings.Contains(res.Subprotocol, tok) {
				t.Fatal("the token was chosen as the subprotocol")
			}
		})
	}
	// Locations not configured are not read.
	_, err := newJWT(t, Config{KeysFile: f}).Authorize(&edge.Request{Header: http.Header{}, RawQuery: "token=" + tok, Protocols: []string{"jwt." + tok}})
	if !errors.Is(err, ErrNoToken) {
		t.Fatalf("unconfigured query/subprotocol read: err = %v", err)
	}
}

func TestStripToken(t *testing.T) {
	a := newJWT(t, Config{KeysFile: writeFile(t, "s", []byte(hmacSecret)), SubprotocolPrefix: "jwt."})
	in := []string{"jwt.secret", "chat"}
	got := a.StripToken(in)
	if len(got) != 1 || got[0] != "chat" || in[0] != "jwt.secret" {
		t.Fatalf("StripToken = %q (input now %q)", got, in)
	}
}

func TestPrincipalBounded(t *testing.T) {
	a := newJWT(t, Config{KeysFile: writeFile(t, "s", []byte(hmacSecret)), MaxTokenBytes: 64 << 10})
	c := validClaims()
	c["blob"] = strings.Repeat("x", 9000)
	_, err := a.Authorize(bearer(sign(t, jwt.SigningMethodHS256, []byte(hmacSecret), "", c)))
	wantReason(t, err, "too_large")
}

func TestUserIDValidator(t *testing.T) {
	valid := func(s string) bool { return !strings.Contains(s, ".") }
	a := newJWT(t, Config{KeysFile: writeFile(t, "s", []byte(hmacSecret)), ValidUserID: valid, UserClaim: "uid"})
	c := validClaims()
	c["uid"] = "bob"
	if res, err := a.Authorize(bearer(sign(t, jwt.SigningMethodHS256, []byte(hmacSecret), "", c))); err != nil || res.UserID != "bob" {
		t.Fatalf("uid claim: %+v %v", res, err)
	}
	c["uid"] = "bob.smith"
	_, err := a.Authorize(bearer(sign(t, jwt.SigningMethodHS256, []byte(hmacSecret), "", c)))
	wantReason(t, err, "user")
}

func jwkRSA(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
}

func jwkEC(kid string, k *ecdsa.PublicKey) map[string]string {
	b, _ := k.Bytes() // 0x04 || X || Y
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256",
		"x": base64.RawURLEncoding.EncodeToString(b[1:33]), "y": base64.RawURLEncoding.EncodeToString(b[33:])}
}

func writeJWKS(t testing.TB, path string, keys ...map[string]string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"keys": keys})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestJWKSAndRotation(t *testing.T) {
	testKeys(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	oct := map[string]string{"kty": "oct", "kid": "h1", "k": base64.RawURLEncoding.EncodeToString([]byte(hmacSecret))}
	enc := map[string]string{"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"} // skipped: not for signatures
	writeJWKS(t, path, jwkRSA("r1", &rsaKey.PublicKey), jwkEC("e1", &ecKey.PublicKey), oct, enc)
	a := newJWT(t, Config{JWKSFile: path, ReloadInterval: time.Millisecond})

	for name, tok := range map[string]string{
		"RS256 kid r1": sign(t, jwt.SigningMethodRS256, rsaKey, "r1", validClaims()),
		"ES256 kid e1": sign(t, jwt.SigningMethodES256, ecKey, "e1", validClaims()),
		"HS256 kid h1": sign(t, jwt.SigningMethodHS256, []byte(hmacSecret), "h1", validClaims()),
		"RS256 no kid": sign(t, jwt.SigningMethodRS256, rsaKey, "", validClaims()),
	} {
		if _, err := a.Authorize(bearer(tok)); err != nil {
			t.Errorf("%s refused: %v", name, err)
		}
	}
	_, err := a.Authorize(bearer(sign(t, jwt.SigningMethodRS256, rsaKey, "e1", validClaims())))
	wantReason(t, err, "key") // kid names an EC key

	// Rotate: r2 replaces r1. Tokens of the old key stop working, new ones work.
	writeJWKS(t, path, jwkRSA("r2", &rsaKey2.PublicKey))
	newTok := sign(t, jwt.SigningMethodRS256, rsaKey2, "r2", validClaims())
	testenv.Eventually(t, "the rotated JWKS picked up", func() bool {
		_, err := a.Authorize(bearer(newTok))
		return err == nil
	})
	_, err = a.Authorize(bearer(sign(t, jwt.SigningMethodRS256, rsaKey, "r1", validClaims())))
	wantReason(t, err, "key")

	// A broken rewrite keeps the last good keys.
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := a.Authorize(bearer(newTok)); err != nil {
			t.Fatalf("valid token refused after a broken JWKS rewrite: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	for name, data := range map[string][]byte{
		"short HMAC secret": []byte("too-short"),
		"small RSA key":     pemPublic(t, &small.PublicKey),
		"private key":       pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"P-384 key":         pemPublic(t, mustEC(t, elliptic.P384())),
	} {
		if _, err := New(Config{KeysFile: writeFile(t, "k", data)}, nil); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("config without keys accepted")
	}
	if _, err := New(Config{KeysFile: "x", Algorithms: []string{"none"}}, nil); err == nil {
		t.Error(`algorithm "none" accepted`)
	}
}

func mustEC(t testing.TB, c elliptic.Curve) *ecdsa.PublicKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

func TestAlgorithmsRestricted(t *testing.T) {
	testKeys(t)
	a := newJWT(t, Config{KeysFile: writeFile(t, "k", pemPublic(t, &rsaKey.PublicKey, &ecKey.PublicKey)), Algorithms: []string{RS256}})
	_, err := a.Authorize(bearer(sign(t, jwt.SigningMethodES256, ecKey, "", validClaims())))
	wantReason(t, err, "signature") // ES256 not among the configured algorithms
}
