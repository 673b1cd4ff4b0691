package api

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/conn"
)

type nopController struct{}

func (nopController) Post(context.Context, string, []byte, bool) error { return nil }
func (nopController) Info(context.Context, string) (conn.Info, error)  { return conn.Info{}, nil }
func (nopController) Close(context.Context, string, int, string) error { return nil }

// discardWriter is a ResponseWriter that keeps nothing but a header map.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

// BenchmarkPost measures one POST through the handler (routing, auth,
// body read, frame type, metrics) with a controller that does nothing.
func BenchmarkPost(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
		auth string
	}{
		{"insecure", Config{Insecure: true}, ""},
		{"bearer", Config{Auth: AuthConfig{Tokens: []string{"a-long-enough-backend-token"}}}, "Bearer a-long-enough-backend-token"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a, err := New(bc.cfg, nopController{}, prometheus.NewRegistry(), nil)
			if err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"action":"message","text":"hello, world"}`)
			rd := bytes.NewReader(payload)
			req, _ := http.NewRequest("POST", "http://api/prod/@connections/AbCdEfGh-_012345", io.NopCloser(rd))
			req.RequestURI = "/prod/@connections/AbCdEfGh-_012345"
			req.ContentLength = int64(len(payload))
			req.Header.Set("Content-Type", "application/octet-stream")
			if bc.auth != "" {
				req.Header.Set("Authorization", bc.auth)
			}
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				rd.Reset(payload)
				clear(w.h)
				a.ServeHTTP(w, req)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}
