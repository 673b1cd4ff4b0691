package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// FuzzHandler: whatever the method, path, headers and body, the handler
// answers without panicking, with a request ID, a known status, and for an
// error an AWS-shaped JSON body whose __type matches x-amzn-ErrorType.
func FuzzHandler(f *testing.F) {
	const id = "AbCdEfGh-_012345"
	f.Add("POST", "/prod/@connections/"+id, "text/plain", "", []byte("hello"))
	f.Add("POST", "/@connections/"+id, "application/octet-stream", "binary", []byte{0, 1, 2})
	f.Add("GET", "/%40connections/"+id, "", "", []byte(nil))
	f.Add("DELETE", "/@connections/"+id+"?code=4401&reason=bye", "", "", []byte(nil))
	f.Add("DELETE", "/@connections/"+id+"?code=99999999999999999999", "", "", []byte(nil))
	f.Add("HEAD", "/@connections/"+conn.NewID(), "", "", []byte(nil))
	f.Add("POST", "/@connections", "application/json", "", []byte(`[{"connectionId":"`+id+`","dataBase64":"AA=="}]`))
	f.Add("PATCH", "/a/b/@connections/%2F", "text/x; charset=\xff", "TEXT", []byte("\xff"))

	ctrl := newFake()
	ctrl.add(conn.Info{ID: id, ConnectedAt: testConnectedAt})
	a, err := New(Config{Insecure: true, MaxMessageBytes: 64, MaxBatchBytes: 256}, ctrl, prometheus.NewRegistry(), nil)
	if err != nil {
		f.Fatal(err)
	}
	h := a.Handler()
	known := map[int]bool{200: true, 204: true, 400: true, 403: true, 405: true, 410: true, 413: true, 429: true, 500: true, 503: true, 504: true}

	f.Fuzz(func(t *testing.T, method, target, contentType, frame string, body []byte) {
		if strings.ContainsAny(target, " \r\n") || !strings.HasPrefix(target, "/") {
			return // not a request line a server would hand us
		}
		req, err := http.NewRequest(method, "http://api"+target, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.RequestURI = target
		req.RemoteAddr = "127.0.0.1:1"
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if frame != "" {
			req.Header.Set("X-Switchboard-Frame", frame)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		if !known[rec.Code] {
			t.Fatalf("%s %q: unexpected status %d", method, target, rec.Code)
		}
		if rec.Header().Get("x-amzn-RequestId") == "" {
			t.Fatalf("%s %q: no request id", method, target)
		}
		if rec.Code < 300 || method == http.MethodHead {
			return
		}
		var eb errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
			t.Fatalf("%s %q: %d with non-JSON body %q", method, target, rec.Code, rec.Body.Bytes())
		}
		if eb.Type == "" || eb.Type != rec.Header().Get("x-amzn-ErrorType") {
			t.Fatalf("%s %q: __type %q vs header %q", method, target, eb.Type, rec.Header().Get("x-amzn-ErrorType"))
		}
	})
}
