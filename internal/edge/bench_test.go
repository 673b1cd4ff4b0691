package edge

import (
	"net"
	"runtime"
	"testing"
)

// BenchmarkSend measures the write path of one message to one connection
// (header + payload written with one writev), the core of every post and
// of fan-out.
func BenchmarkSend(b *testing.B) {
	rec := newRecorder()
	s := newFuzzServer(b, rec)
	c, cleanup := fuzzConn(b, s, rec)
	defer cleanup()
	msg := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Send(msg, false); err != nil {
			b.Fatal(err)
		}
		if i%256 == 255 { // let the reader drain so the queue never fills
			for backlog(c) > 0 {
				runtime.Gosched()
			}
		}
	}
}

func backlog(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out.buf)
}

// BenchmarkFrameParse measures reading and handling client frames: unmask,
// UTF-8 check, delivery to the Handler.
func BenchmarkFrameParse(b *testing.B) {
	rec := newRecorder()
	rec.echo = false
	s := newFuzzServer(b, rec)
	c, cleanup := fuzzConn(b, s, rec)
	defer cleanup()
	frame := []byte{0x81, 0x80 | 64, 1, 2, 3, 4}
	frame = append(frame, make([]byte, 64)...)
	b.ReportAllocs()
	b.SetBytes(64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.readMu.Lock()
		if c.in == nil {
			c.takeIn()
		}
		c.inLen = copy(*c.in, frame)
		c.process()
		c.readMu.Unlock()
		if i%1024 == 0 {
			rec.mu.Lock()
			rec.messages = rec.messages[:0]
			rec.mu.Unlock()
		}
	}
}

// BenchmarkLeanSocket measures what the upgrade pays to trade a plain TCP
// connection's *net.TCPConn for a bare descriptor (leanSocket: dup, close
// of the original), against a connect's total cost.
func BenchmarkLeanSocket(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		server, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		lean, err := leanSocket(server.(*net.TCPConn))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		lean.Close()
		client.Close()
		b.StartTimer()
	}
}

// BenchmarkDeflate measures permessage-deflate's per-message work on a
// 1 KiB JSON message at the default level: compressing it for one
// connection (a post or a two-way reply; fan-out does it once per node),
// and inflating what a client sent. The pooled compressor's and
// decompressor's size is reported too: the node holds one per message
// being compressed or inflated at a time, never one per connection.
func BenchmarkDeflate(b *testing.B) {
	msg := jsonMessage(1024)
	cfg := Config{CompressionLevel: DefaultCompressionLevel, CompressionMinBytes: DefaultCompressionMinBytes}
	b.Run("compress", func(b *testing.B) {
		d := newDeflater(&cfg, newMetrics(nil))
		buf := make([]byte, 0, 2048)
		z, _ := d.appendDeflated(buf, msg, true)
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		b.ResetTimer()
		for range b.N {
			z, _ = d.appendDeflated(buf, msg, true)
		}
		b.ReportMetric(float64(len(z)), "compressed-B")
		b.ReportMetric(pooledSize(func() { d2 := newDeflater(&cfg, newMetrics(nil)); d2.appendDeflated(buf, msg, true) }), "compressor-KiB")
	})
	b.Run("inflate", func(b *testing.B) {
		d := newDeflater(&cfg, newMetrics(nil))
		z, _ := d.appendDeflated(nil, msg, true)
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		b.ResetTimer()
		for range b.N {
			out, err := d.inflate(z, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			d.release(out)
		}
		b.ReportMetric(pooledSize(func() { d2 := newDeflater(&cfg, newMetrics(nil)); out, _ := d2.inflate(z, 1<<20); d2.release(out) }), "decompressor-KiB")
	})
}

// pooledSize is how many KiB of heap fn leaves allocated (what a deflater's
// first use puts in its pools).
func pooledSize(fn func()) float64 {
	var a, c runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&c)
	return float64(c.TotalAlloc-a.TotalAlloc) / 1024
}
