package authn

import (
	"encoding/json"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FuzzAuthorize feeds arbitrary tokens to an authorizer holding an HMAC
// secret and RSA and EC keys. Seeds (testdata/fuzz/FuzzAuthorize) include a
// valid HS256 token expiring in 2100, alg "none", and malformed shapes.
func FuzzAuthorize(f *testing.F) {
	testKeys(f)
	secret := writeFile(f, "secret", []byte(hmacSecret))
	jwks := writeFile(f, "jwks.json", func() []byte {
		b, _ := json.Marshal(map[string]any{"keys": []any{jwkRSA("r1", &rsaKey.PublicKey), jwkEC("e1", &ecKey.PublicKey)}})
		return b
	}())
	a, err := New(Config{KeysFile: secret, JWKSFile: jwks, Audience: []string{"chat"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		res, err := a.Authorize(bearer(tok))
		if err != nil {
			if StatusOf(err) != 401 {
				t.Fatalf("error %v maps to %d, want 401", err, StatusOf(err))
			}
			return
		}
		if !defaultValidUserID(res.UserID) {
			t.Fatalf("accepted an invalid user ID %q", res.UserID)
		}
		if !json.Valid(res.Principal) || len(res.Principal) > 8192 {
			t.Fatalf("principal not valid bounded JSON: %q", res.Principal)
		}
	})
}

// The committed valid seed really is valid, so the fuzzer starts from the
// accepting path too.
func TestFuzzSeedIsValid(t *testing.T) {
	raw, err := os.ReadFile("testdata/fuzz/FuzzAuthorize/valid_hs256")
	if err != nil {
		t.Fatal(err)
	}
	lit := strings.TrimSuffix(strings.TrimPrefix(strings.Split(string(raw), "\n")[1], "string("), ")")
	tok, err := strconv.Unquote(lit)
	if err != nil {
		t.Fatal(err)
	}
	a := newJWT(t, Config{KeysFile: writeFile(t, "s", []byte(hmacSecret)), Audience: []string{"chat"}})
	if res, err := a.Authorize(bearer(tok)); err != nil || res.UserID != "alice" {
		t.Fatalf("seed token: %+v, %v", res, err)
	}
}
