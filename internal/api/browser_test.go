package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// browserRequest sends what a web page's fetch() or form would: a real HTTP
// request over loopback with the given Origin (none if empty) and Host
// (the URL's if empty).
func browserRequest(t *testing.T, method, url, origin, host string, hdr map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain") // a "simple" request: no CORS preflight
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// A web page the operator visits posts to the unauthenticated loopback API
// (the attack: cross-site request forgery against 127.0.0.1:9090). Every
// request with a foreign Origin is refused, AWS-style, and reaches no
// connection; the SDK-like caller without Origin is served.
func TestCrossOriginRequestsRefused(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{LoopbackOnly: true}, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	u := srv.URL + "/@connections/" + id

	for _, origin := range []string{"https://evil.example", "null", srv.URL} {
		status, h, body := browserRequest(t, "POST", u, origin, "", nil, "forged")
		wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
		status, h, body = browserRequest(t, "DELETE", u, origin, "", nil, "")
		wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
	}
	if got := f.messages(id); len(got) != 0 {
		t.Fatalf("%d forged messages delivered, want 0", len(got))
	}
	if closed, _, _ := f.closedWith(id); closed {
		t.Fatal("a forged DELETE closed the connection")
	}
	// The same POST without Origin (SDK, curl, a backend) is served.
	if status, _, body := browserRequest(t, "POST", u, "", "", nil, "hello"); status != http.StatusOK {
		t.Fatalf("POST without Origin = %d %s, want 200", status, body)
	}
	if got := f.messages(id); len(got) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(got))
	}
}

// -api-allowed-origins lists the browser origins that may call the API;
// every other Origin, and a second Origin header smuggled after a listed
// one, is still refused.
func TestAllowedOrigins(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{LoopbackOnly: true, AllowedOrigins: []string{"https://admin.example"}}, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	u := srv.URL + "/@connections/" + id

	if status, _, body := browserRequest(t, "POST", u, "https://ADMIN.example", "", nil, "ok"); status != http.StatusOK {
		t.Fatalf("listed origin = %d %s, want 200", status, body)
	}
	status, h, body := browserRequest(t, "POST", u, "https://admin.example.evil.example", "", nil, "forged")
	wantError(t, status, h, body, http.StatusForbidden, codeForbidden)

	req, _ := http.NewRequest("POST", u, strings.NewReader("forged"))
	req.Header["Origin"] = []string{"https://admin.example", "https://evil.example"}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("two Origin headers = %d, want 403", resp.StatusCode)
	}
	if got := f.messages(id); len(got) != 1 {
		t.Fatalf("%d messages delivered, want only the listed origin's 1", len(got))
	}
}

// The check applies with authentication too (and with -api-insecure):
// a page cannot attach a token without a preflight the API never answers,
// but refusing every foreign Origin keeps one rule for every mode.
func TestCrossOriginRefusedWithAuthAndInsecure(t *testing.T) {
	for name, cfg := range map[string]Config{
		"bearer":   {Auth: AuthConfig{Tokens: []string{"s3cret"}}},
		"insecure": {Insecure: true},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake()
			a, _ := newTestAPI(t, cfg, f)
			srv := serve(t, a)
			id := f.add(conn.Info{})
			auth := map[string]string{"Authorization": "Bearer s3cret"}
			status, h, body := browserRequest(t, "POST", srv.URL+"/@connections/"+id, "https://evil.example", "", auth, "forged")
			wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
			// A Host other than loopback is fine here: only the
			// unauthenticated loopback API checks it.
			if status, _, body := browserRequest(t, "POST", srv.URL+"/@connections/"+id, "", "gw.example", auth, "ok"); status != http.StatusOK {
				t.Fatalf("POST = %d %s, want 200", status, body)
			}
			if got := f.messages(id); len(got) != 1 {
				t.Fatalf("%d messages delivered, want 1", len(got))
			}
		})
	}
}

// DNS rebinding: the page's own name resolves to 127.0.0.1, so its
// requests are same-origin and GET responses readable. The unauthenticated
// loopback API answers only to a loopback Host.
func TestLoopbackAPIRefusesForeignHost(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{LoopbackOnly: true}, f)
	srv := serve(t, a)
	id := f.add(conn.Info{SourceIP: "203.0.113.5"})
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
	u := srv.URL + "/@connections/" + id

	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port, "localhost.evil.example"} {
		status, h, body := browserRequest(t, "GET", u, "", host, nil, "")
		wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
		if bytes.Contains(body, []byte("203.0.113.5")) {
			t.Fatalf("Host %s: the connection leaked: %s", host, body)
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "[::1]:" + port, "127.0.0.2", "app.localhost:" + port} {
		if status, _, body := browserRequest(t, "GET", u, "", host, nil, ""); status != http.StatusOK {
			t.Fatalf("Host %s: %d %s, want 200", host, status, body)
		}
	}
}

func TestBrowserAndHostConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{Insecure: true, AllowedOrigins: []string{"admin.example"}},
		{Insecure: true, AllowedOrigins: []string{"https://admin.example/"}},
		{Insecure: true, AllowedOrigins: []string{"*"}},
		{Auth: AuthConfig{Tokens: []string{"t"}, Hosts: []string{"gw.example"}}}, // a host pin without SigV4
		{Auth: AuthConfig{AccessKeys: map[string]string{testKeyID: testSecret}, Hosts: []string{"gw.example/x"}}},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", cfg)
		}
	}
	ok := Config{AllowedOrigins: []string{"https://admin.example", "http://127.0.0.1:8000"},
		Auth: AuthConfig{AccessKeys: map[string]string{testKeyID: testSecret}, Hosts: []string{"gw.example", "gw.example:9090", "[::1]"}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

// pinnedHostClient is the real AWS SDK client signing for endpoint (host A)
// while its requests reach srv: the replay of a request captured on, or
// signed for, another gateway or service sharing the keys.
func pinnedHostClient(t *testing.T, srvURL, signedFor string) *apigatewaymanagementapi.Client {
	t.Helper()
	target := strings.TrimPrefix(srvURL, "http://")
	cfg := aws.Config{
		Region:      "eu-west-1",
		Credentials: staticCreds(testKeyID, testSecret),
		HTTPClient: doerFunc(func(r *http.Request) (*http.Response, error) {
			r.Host = r.URL.Host // the signed Host travels as it was signed
			r.URL.Host = target
			return http.DefaultClient.Do(r)
		}),
		RetryMaxAttempts: 1,
	}
	return apigatewaymanagementapi.NewFromConfig(cfg, func(o *apigatewaymanagementapi.Options) {
		o.BaseEndpoint = aws.String("http://" + signedFor + "/prod")
	})
}

// SigV4 pins the host: a request the real SDK signed for gateway A is
// refused (403 ForbiddenException, nothing delivered) by an API configured
// for host B, and accepted by one configured for A. Unpinned, it is
// accepted anywhere: the hole.
func TestSigV4HostPinned(t *testing.T) {
	cases := []struct {
		name  string
		hosts []string
		want  bool
	}{
		{"signed for another host", []string{"gw-b.example"}, false},
		{"signed for another port", []string{"gw-a.example:443"}, false},
		{"signed for this host", []string{"gw-a.example"}, true},
		{"signed for this host and port", []string{"gw-b.example", "GW-A.example:8443"}, true},
		{"not pinned", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			cfg := sigV4Config()
			cfg.Auth.Hosts = tc.hosts
			a, _ := newTestAPI(t, cfg, f)
			srv := serve(t, a)
			id := f.add(conn.Info{})
			c := pinnedHostClient(t, srv.URL, "gw-a.example:8443")
			_, err := c.PostToConnection(ctxT(t), &apigatewaymanagementapi.PostToConnectionInput{
				ConnectionId: aws.String(id), Data: []byte("signed for A")})
			delivered := len(f.messages(id))
			if tc.want {
				if err != nil || delivered != 1 {
					t.Fatalf("err = %v, %d delivered; want accepted, 1", err, delivered)
				}
				return
			}
			var forbidden *types.ForbiddenException
			if !errors.As(err, &forbidden) || delivered != 0 {
				t.Fatalf("err = %v, %d delivered; want ForbiddenException, 0", err, delivered)
			}
		})
	}
}

func TestSigV4HostMatching(t *testing.T) {
	v := &sigVerifier{hosts: []string{"gw.example", "api.example:443", "[::1]:9090", "Other.Example:8443"}}
	for host, want := range map[string]bool{
		"gw.example": true, "GW.example:9090": true, "gw.example.evil": false, "evil.gw.example": false,
		"api.example": true, "api.example:443": true, "api.example:444": false,
		"[::1]:9090": true, "[::1]": false, "[::1]:9091": false,
		"other.example:8443": true, "other.example": false,
		"": false,
	} {
		if got := v.hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
}
