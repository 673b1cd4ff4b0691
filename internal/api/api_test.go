package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// do sends one request and returns status, headers and body.
func do(t *testing.T, method, url string, hdr map[string]string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
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

// wantError asserts an error response the way the AWS SDKs parse it.
func wantError(t *testing.T, status int, h http.Header, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status = %d, want %d (body %s)", status, wantStatus, body)
	}
	if got := h.Get("x-amzn-ErrorType"); got != wantCode {
		t.Fatalf("x-amzn-ErrorType = %q, want %q", got, wantCode)
	}
	if got := h.Get("Content-Type"); got != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", got)
	}
	var eb struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if eb.Type != wantCode || eb.Message == "" {
		t.Fatalf("error body = %+v, want __type %q and a message", eb, wantCode)
	}
}

func insecureServer(t *testing.T) (*fakeController, *API, *httptest.Server) {
	f := newFake()
	a, _ := newTestAPI(t, Config{Insecure: true}, f)
	return f, a, serve(t, a)
}

func TestPostSendsTheBodyAsOneMessage(t *testing.T) {
	f, _, srv := insecureServer(t)
	id := f.add(conn.Info{})
	status, h, body := do(t, "POST", srv.URL+"/prod/@connections/"+id, nil, []byte(`{"hello":"world"}`))
	if status != 200 || string(body) != "{}" || h.Get("Content-Type") != "application/json" {
		t.Fatalf("POST = %d %q %q, want 200 {} application/json", status, h.Get("Content-Type"), body)
	}
	if h.Get("x-amzn-RequestId") == "" {
		t.Fatal("no x-amzn-RequestId on success")
	}
	if got := f.messages(id); len(got) != 1 || got[0] != (fakeMsg{data: `{"hello":"world"}`}) {
		t.Fatalf("messages = %+v, want one text message", got)
	}
}

func TestPostFrameTypeFollowsContentType(t *testing.T) {
	binaryBody := []byte{0xff, 0x00, 0xfe}
	tests := []struct {
		name        string
		octetBinary bool
		hdr         map[string]string
		body        []byte
		wantStatus  int
		wantBinary  bool
	}{
		{"no content type, UTF-8 → text", false, nil, []byte("hi"), 200, false},
		{"no content type, not UTF-8 → binary", false, nil, binaryBody, 200, true},
		{"octet-stream as the AWS SDK sends it, UTF-8 → text", false, map[string]string{"Content-Type": "application/octet-stream"}, []byte("hi"), 200, false},
		{"octet-stream, not UTF-8 → binary", false, map[string]string{"Content-Type": "application/octet-stream"}, binaryBody, 200, true},
		{"octet-stream with OctetStreamBinary → binary", true, map[string]string{"Content-Type": "application/octet-stream"}, []byte("hi"), 200, true},
		{"text/plain → text", false, map[string]string{"Content-Type": "text/plain; charset=utf-8"}, []byte("hi"), 200, false},
		{"application/json → text", false, map[string]string{"Content-Type": "application/json"}, []byte(`{}`), 200, false},
		{"vnd+json → text", false, map[string]string{"Content-Type": "application/vnd.x+json"}, []byte(`{}`), 200, false},
		{"text type with invalid UTF-8 → 400", false, map[string]string{"Content-Type": "text/plain"}, binaryBody, 400, false},
		{"form-encoded as curl -d sends it, UTF-8 → text", false, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, []byte("hello"), 200, false},
		{"form-encoded, not UTF-8 → binary", false, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, binaryBody, 200, true},
		{"multipart form, UTF-8 → text", false, map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, []byte("--x--"), 200, false},
		{"other type → binary", false, map[string]string{"Content-Type": "application/x-protobuf"}, []byte("hi"), 200, true},
		{"X-Switchboard-Frame binary wins", false, map[string]string{"Content-Type": "text/plain", "X-Switchboard-Frame": "binary"}, []byte("hi"), 200, true},
		{"X-Switchboard-Frame text wins", false, map[string]string{"Content-Type": "application/x-protobuf", "X-Switchboard-Frame": "TEXT"}, []byte("hi"), 200, false},
		{"X-Switchboard-Frame bogus → 400", false, map[string]string{"X-Switchboard-Frame": "json"}, []byte("hi"), 400, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			a, _ := newTestAPI(t, Config{Insecure: true, OctetStreamBinary: tc.octetBinary}, f)
			srv := serve(t, a)
			id := f.add(conn.Info{})
			status, h, body := do(t, "POST", srv.URL+"/@connections/"+id, tc.hdr, tc.body)
			if tc.wantStatus != 200 {
				wantError(t, status, h, body, tc.wantStatus, "BadRequestException")
				if n := len(f.messages(id)); n != 0 {
					t.Fatalf("%d messages sent after a 400", n)
				}
				return
			}
			if status != 200 {
				t.Fatalf("status %d, body %s", status, body)
			}
			got := f.messages(id)
			if len(got) != 1 || got[0].binary != tc.wantBinary || got[0].data != string(tc.body) {
				t.Fatalf("messages = %+v, want one with binary=%v", got, tc.wantBinary)
			}
		})
	}
}

func TestPostLimits(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{Insecure: true, MaxMessageBytes: 1000}, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})

	status, h, body := do(t, "POST", srv.URL+"/@connections/"+id, nil, bytes.Repeat([]byte("a"), 1000))
	if status != 200 {
		t.Fatalf("a message at the limit: status %d %s", status, body)
	}
	status, h, body = do(t, "POST", srv.URL+"/@connections/"+id, nil, bytes.Repeat([]byte("a"), 1001))
	wantError(t, status, h, body, 413, "PayloadTooLargeException")

	// Without a Content-Length (chunked) the limit holds while reading.
	req, _ := http.NewRequest("POST", srv.URL+"/@connections/"+id, io.MultiReader(strings.NewReader(strings.Repeat("b", 600)), strings.NewReader(strings.Repeat("b", 600))))
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, resp.StatusCode, resp.Header, b, 413, "PayloadTooLargeException")

	status, h, body = do(t, "POST", srv.URL+"/@connections/"+id, nil, nil)
	wantError(t, status, h, body, 400, "BadRequestException")

	if n := len(f.messages(id)); n != 1 {
		t.Fatalf("%d messages delivered, want only the one within the limit", n)
	}
}

func TestControllerErrorsMapToAWSErrors(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{conn.ErrGone, 410, "GoneException"},
		{conn.ErrBufferFull, 429, "LimitExceededException"},
		{conn.ErrTooLarge, 413, "PayloadTooLargeException"},
		{conn.ErrInvalidID, 400, "BadRequestException"},
		{conn.ErrUnavailable, 503, "ServiceUnavailableException"},
		{io.ErrUnexpectedEOF, 500, "InternalServerErrorException"},
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			f, _, srv := insecureServer(t)
			id := f.add(conn.Info{})
			f.failNextPosts(tc.err)
			status, h, body := do(t, "POST", srv.URL+"/@connections/"+id, nil, []byte("x"))
			wantError(t, status, h, body, tc.status, tc.code)
		})
	}
}

func TestGetReportsTheConnection(t *testing.T) {
	f, _, srv := insecureServer(t)
	id := f.add(conn.Info{Node: "edge-1", ConnectedAt: testConnectedAt, LastActiveAt: testConnectedAt.Add(90 * 1e9),
		SourceIP: "192.0.2.7", UserAgent: "test-agent/1", UserID: "u42",
		Principal: json.RawMessage(`{"role":"admin","tier":2}`), Groups: []string{"lobby", "room-1"}})
	status, h, body := do(t, "GET", srv.URL+"/prod/@connections/"+id, nil, nil)
	if status != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("GET = %d %s", status, body)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"connectedAt":  "2026-03-04T05:06:07.891Z",
		"lastActiveAt": "2026-03-04T05:07:37.891Z",
		"identity":     map[string]any{"sourceIp": "192.0.2.7", "userAgent": "test-agent/1"},
		"connectionId": id,
		"nodeId":       "edge-1",
		"userId":       "u42",
		"principal":    map[string]any{"role": "admin", "tier": 2},
		"groups":       []string{"lobby", "room-1"},
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("GET body = %s\nwant %s", gotJSON, wantJSON)
	}

	f.remove(id)
	status, h, body = do(t, "GET", srv.URL+"/prod/@connections/"+id, nil, nil)
	wantError(t, status, h, body, 410, "GoneException")
}

func TestDeleteClosesWithCodeAndReason(t *testing.T) {
	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantCode   int
		wantReason string
	}{
		{"default", "", 204, 1000, "Connection Closed Normally"},
		{"code and reason", "?code=4401&reason=token+expired", 204, 4401, "token expired"},
		{"code only", "?code=4400", 204, 4400, ""},
		{"reason only", "?reason=bye", 204, 1000, "bye"},
		{"reserved code", "?code=1005", 400, 0, ""},
		{"out of range", "?code=5000", 400, 0, ""},
		{"not a number", "?code=abc", 400, 0, ""},
		{"reason too long", "?code=4000&reason=" + strings.Repeat("x", 124), 400, 0, ""},
		{"reason at the limit", "?code=4000&reason=" + strings.Repeat("x", 123), 204, 4000, strings.Repeat("x", 123)},
		{"reason not UTF-8", "?reason=%ff", 400, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, _, srv := insecureServer(t)
			id := f.add(conn.Info{})
			status, h, body := do(t, "DELETE", srv.URL+"/@connections/"+id+tc.query, nil, nil)
			if tc.wantStatus != 204 {
				wantError(t, status, h, body, tc.wantStatus, "BadRequestException")
				if closed, _, _ := f.closedWith(id); closed {
					t.Fatal("connection closed despite 400")
				}
				return
			}
			if status != 204 || len(body) != 0 {
				t.Fatalf("DELETE = %d %q, want 204 and no body", status, body)
			}
			closed, code, reason := f.closedWith(id)
			if !closed || code != tc.wantCode || reason != tc.wantReason {
				t.Fatalf("closed=%v code=%d reason=%q, want %d %q", closed, code, reason, tc.wantCode, tc.wantReason)
			}
			status, h, body = do(t, "DELETE", srv.URL+"/@connections/"+id, nil, nil)
			wantError(t, status, h, body, 410, "GoneException")
		})
	}
}

func TestHeadReportsExistence(t *testing.T) {
	f, _, srv := insecureServer(t)
	id := f.add(conn.Info{})
	status, h, body := do(t, "HEAD", srv.URL+"/@connections/"+id, nil, nil)
	if status != 200 || len(body) != 0 {
		t.Fatalf("HEAD live = %d %q", status, body)
	}
	f.remove(id)
	status, h, body = do(t, "HEAD", srv.URL+"/@connections/"+id, nil, nil)
	if status != 410 || len(body) != 0 || h.Get("x-amzn-ErrorType") != "GoneException" {
		t.Fatalf("HEAD gone = %d %q %q, want 410 GoneException without a body", status, h.Get("x-amzn-ErrorType"), body)
	}
}

func TestRoutingErrors(t *testing.T) {
	f, _, srv := insecureServer(t)
	id := f.add(conn.Info{})
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/", 403, "ForbiddenException"},
		{"POST", "/prod/connections/" + id, 403, "ForbiddenException"},
		{"GET", "/@connections/" + id + "/extra", 403, "ForbiddenException"},
		{"PUT", "/@connections/" + id, 405, "MethodNotAllowedException"},
		{"GET", "/@connections", 405, "MethodNotAllowedException"},
		{"GET", "/@connections/not-an-id", 400, "BadRequestException"},
		{"GET", "/@connections/R1kmxc2VNjMCFIA%3D", 400, "BadRequestException"},
		{"POST", "/@connections/", 400, "BadRequestException"},
		{"GET", "/@connections/" + conn.NewID(), 410, "GoneException"},
	}
	for _, tc := range tests {
		status, h, body := do(t, tc.method, srv.URL+tc.path, nil, []byte("x"))
		if h.Get("x-amzn-RequestId") == "" {
			t.Fatalf("%s %s: no request id", tc.method, tc.path)
		}
		wantError(t, status, h, body, tc.status, tc.code)
	}
	// An unknown route answers like API Gateway: {"message":"Forbidden"}.
	_, _, body := do(t, "GET", srv.URL+"/nope", nil, nil)
	if !strings.Contains(string(body), `"message":"Forbidden"`) {
		t.Fatalf("unknown route body = %s", body)
	}
}

func TestRequestIDsAreUnique(t *testing.T) {
	_, _, srv := insecureServer(t)
	seen := map[string]bool{}
	for range 50 {
		_, h, _ := do(t, "GET", srv.URL+"/x", nil, nil)
		rid := h.Get("x-amzn-RequestId")
		if len(rid) != 36 || seen[rid] {
			t.Fatalf("request id %q: wrong shape or repeated", rid)
		}
		seen[rid] = true
	}
}

func TestMetrics(t *testing.T) {
	f := newFake()
	a, reg := newTestAPI(t, Config{Insecure: true}, f)
	srv := serve(t, a)
	id := f.add(conn.Info{})
	do(t, "POST", srv.URL+"/@connections/"+id, nil, []byte("x"))
	do(t, "POST", srv.URL+"/@connections/"+id, nil, []byte("y"))
	do(t, "GET", srv.URL+"/@connections/"+conn.NewID(), nil, nil)
	do(t, "GET", srv.URL+"/elsewhere", nil, nil)

	for _, c := range []struct {
		op, code string
		want     float64
	}{{"post", "200", 2}, {"get", "410", 1}, {"unknown", "403", 1}} {
		if got := testutil.ToFloat64(a.m.requests.WithLabelValues(c.op, c.code)); got != c.want {
			t.Fatalf("requests_total{operation=%q,code=%q} = %v, want %v", c.op, c.code, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(reg, "switchboard_api_request_duration_seconds"); n != len(operations) {
		t.Fatalf("duration series = %d, want one per operation (%d)", n, len(operations))
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("metric lint: %+v", problems)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ctrl := newFake()
	bad := []Config{
		{}, // no auth, not insecure, not loopback-only
		{Insecure: true, Auth: AuthConfig{Tokens: []string{"t"}}},
		{Insecure: true, MaxMessageBytes: -1},
		{Auth: AuthConfig{Tokens: []string{"has space"}}},
		{Auth: AuthConfig{Tokens: []string{""}}},
		{Auth: AuthConfig{AccessKeys: map[string]string{"AKID": ""}}},
		{Auth: AuthConfig{TokenFile: "/nonexistent/tokens"}},
	}
	for i, cfg := range bad {
		if _, err := New(cfg, ctrl, newRegistry(), nil); err == nil {
			t.Fatalf("config %d (%+v): New succeeded, want an error", i, cfg)
		}
	}
	if _, err := New(Config{Insecure: true}, nil, newRegistry(), nil); err == nil {
		t.Fatal("nil controller accepted")
	}
}

func TestRequiresLoopback(t *testing.T) {
	cases := []struct {
		cfg  Config
		want bool
	}{
		{Config{LoopbackOnly: true}, true},
		{Config{}, true},
		{Config{Insecure: true}, false},
		{Config{Auth: AuthConfig{Tokens: []string{"t"}}}, false},
		{Config{LoopbackOnly: true, Auth: AuthConfig{Tokens: []string{"t"}}}, true},
	}
	for _, c := range cases {
		if got := c.cfg.RequiresLoopback(); got != c.want {
			t.Fatalf("%+v.RequiresLoopback() = %v, want %v", c.cfg, got, c.want)
		}
	}
}

func TestLoopbackOnlyRefusesOtherPeers(t *testing.T) {
	f := newFake()
	a, _ := newTestAPI(t, Config{LoopbackOnly: true}, f)
	id := f.add(conn.Info{})

	// Over a real loopback listener: accepted without credentials.
	srv := serve(t, a)
	if status, _, body := do(t, "GET", srv.URL+"/@connections/"+id, nil, nil); status != 200 {
		t.Fatalf("loopback GET = %d %s", status, body)
	}
	// A request from elsewhere (as if the listener were exposed): refused.
	req := httptest.NewRequest("GET", "/@connections/"+id, nil)
	req.RemoteAddr = "198.51.100.9:4444"
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, req)
	wantError(t, rec.Code, rec.Header(), rec.Body.Bytes(), 403, "ForbiddenException")
}
