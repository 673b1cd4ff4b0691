package authn

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkAuthorize is the cost of one $connect check per algorithm.
func BenchmarkAuthorize(b *testing.B) {
	testKeys(b)
	pemFile := writeFile(b, "keys.pem", pemPublic(b, &rsaKey.PublicKey, &ecKey.PublicKey))
	secret := writeFile(b, "secret", []byte(hmacSecret))
	for _, tc := range []struct {
		name   string
		file   string
		method jwt.SigningMethod
		key    any
	}{
		{"HS256", secret, jwt.SigningMethodHS256, []byte(hmacSecret)},
		{"RS256", pemFile, jwt.SigningMethodRS256, rsaKey},
		{"ES256", pemFile, jwt.SigningMethodES256, ecKey},
	} {
		b.Run(tc.name, func(b *testing.B) {
			a := newJWT(b, Config{KeysFile: tc.file})
			r := bearer(sign(b, tc.method, tc.key, "", validClaims()))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Authorize(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
