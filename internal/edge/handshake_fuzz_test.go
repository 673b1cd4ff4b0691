package edge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// FuzzHandshake feeds arbitrary bytes to the upgrade path the edge runs on
// every new socket: finding the end of the headers within the size limit,
// parsing the request for $connect, and gobwas/ws's upgrade. Whatever
// arrives, nothing panics, a request is only accepted when it is a valid
// WebSocket upgrade, and parsed values stay within what was sent.
func FuzzHandshake(f *testing.F) {
	good := "GET /chat?room=a&x=%41 HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\nOrigin: https://o.example\r\n\r\n"
	f.Add([]byte(good))
	f.Add([]byte(good + "\x81\x85\x01\x02\x03\x04hello"))
	f.Add([]byte(strings.Replace(good, "Sec-WebSocket-Version", "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nSec-WebSocket-Version", 1)))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"))
	f.Add([]byte("GET  HTTP/1.1\r\n\r\n"))
	f.Add([]byte("GET http://%zz HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost x\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n: empty\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, cli := net.Pipe()
		defer srv.Close()
		go func() {
			_, _ = cli.Write(data)
			cli.Close()
		}()
		_ = srv.SetDeadline(time.Now().Add(5 * time.Second))
		// Read as the handshake does: into a small buffer first, on in a
		// larger one if the request does not fit.
		small := make([]byte, 64)
		n, end, err := readRequest(srv, small, 0)
		buf := make([]byte, 1024)
		copy(buf, small[:n])
		if errors.Is(err, errHeaderTooLarge) {
			n, end, err = readRequest(srv, buf, n)
		}
		if err != nil {
			return // too large, timed out or cut short: answered without parsing
		}
		if end > n || end < 4 || !bytes.Equal(buf[end-4:end], headerEnd) {
			t.Fatalf("header end %d of %d bytes is not after a blank line", end, n)
		}
		req, err := parseRequest(buf[:end], srv, time.Now())
		if err != nil {
			return
		}
		if len(req.URI) > end || len(req.UserAgent) > end || len(req.Host) > end {
			t.Fatal("parsed values longer than the request")
		}
		if k := req.Header.Values("Sec-WebSocket-Key"); len(k) > 1 {
			t.Fatalf("parsed a request with %d Sec-WebSocket-Key headers", len(k))
		}
		before := false
		u := ws.Upgrader{ReadBufferSize: upgradeReadBuffer(end), OnBeforeUpgrade: func() (ws.HandshakeHeader, error) { before = true; return nil, nil }}
		_, err = u.Upgrade(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(buf[:end]), io.Discard})
		if err == nil && (!before || req.Method != "GET") {
			t.Fatalf("accepted a request that is not a GET upgrade: %q", req.Method)
		}
	})
}
