package edge

import (
	"compress/flate"
	"errors"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws/wsflate"
)

// permessage-deflate (RFC 7692), negotiated with no context takeover in
// either direction: every message is deflated and inflated on its own, so a
// connection keeps no compressor, window or buffer between messages. The
// compressors and decompressors are pooled per node and held only while a
// message is being compressed or inflated: their number follows the
// messages in flight (a worker or a fan-out at a time), never the
// connections. That is also what makes fan-out compress once: the same
// compressed bytes are valid for every member that negotiated the
// extension.

// rsv1 is the "Per-Message Compressed" bit of a frame's first byte.
const rsv1 = 0x40

// syncTail ends every flushed deflate block; RFC 7692 §7.2.1 strips it from
// the wire. inflateTail puts it back and adds an empty final stored block,
// so that the reader ends with io.EOF, not an unexpected EOF.
const (
	syncTail    = "\x00\x00\xff\xff"
	inflateTail = syncTail + "\x01\x00\x00\xff\xff"
)

// maxPooledBuf is the largest scratch buffer kept for reuse: a message
// larger than that does not pin its buffer in the pool.
const maxPooledBuf = 256 << 10

var (
	errInflateTooBig  = errors.New("inflated message over the limit")
	errInflateCorrupt = errors.New("invalid compressed data")
)

// deflater compresses and inflates messages for one Server's connections.
//
// A compress/flate compressor is large (about 1.2 MiB, whatever the level:
// its hash tables are arrays), so the number in use at once is bounded by
// slots, not only pooled: posts and two-way replies compress on whatever
// goroutine sends them, and a burst of concurrent posts must not cost a
// compressor each. A send that finds no slot free goes uncompressed
// (always valid); fan-out waits for one, since it compresses once for every
// member. Decompressors (about 70 KiB) are used only by the reactor's
// workers, so Workers bounds them.
type deflater struct {
	level   int
	min     int
	slots   chan struct{}
	writers sync.Pool // *pooledWriter
	readers sync.Pool // *inflater
	bufs    sync.Pool // *[]byte scratch
	m       *metrics
}

// compressorSlots is how many messages may be compressed at once:
// compressing is CPU-bound, so more than the cores gains nothing.
func compressorSlots() int { return max(2, runtime.GOMAXPROCS(0)) }

func newDeflater(cfg *Config, m *metrics) *deflater {
	d := &deflater{level: cfg.CompressionLevel, min: cfg.CompressionMinBytes, m: m,
		slots: make(chan struct{}, compressorSlots())}
	d.bufs.New = func() any { b := make([]byte, 0, 4<<10); return &b }
	return d
}

// negotiator returns the Upgrader's Negotiate callback for one handshake
// and a function that reports, once the headers were read, whether the
// client's offer was accepted. The answer always asks for
// client_no_context_takeover (RFC 7692 §7.1.1.2 lets a server require it
// even when the client did not offer it), so inbound messages too are
// independent of each other.
func negotiator() (func(httphead.Option) (httphead.Option, error), func() bool) {
	ext := &wsflate.Extension{Parameters: wsflate.Parameters{
		ServerNoContextTakeover: true,
		ClientNoContextTakeover: true,
	}}
	negotiate := func(opt httphead.Option) (httphead.Option, error) {
		accept, err := ext.Negotiate(opt)
		if err != nil {
			// A malformed offer is declined (the connection goes plain),
			// not a reason to refuse the upgrade.
			return httphead.Option{}, nil
		}
		return accept, nil
	}
	accepted := func() bool { _, ok := ext.Accepted(); return ok }
	return negotiate, accepted
}

// sink is an io.Writer appending to a byte slice.
type sink struct{ b []byte }

func (s *sink) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }

type pooledWriter struct {
	fw  *flate.Writer
	out sink
}

// appendDeflated appends payload compressed as one permessage-deflate
// message (without the sync tail) to dst. ok is false when compressing did
// not make it smaller, or (unless wait) when every compressor slot is
// busy: the caller sends it plain.
func (d *deflater) appendDeflated(dst, payload []byte, wait bool) (out []byte, ok bool) {
	if wait {
		d.slots <- struct{}{}
	} else {
		select {
		case d.slots <- struct{}{}:
		default:
			d.m.deflateBusy.Inc()
			return dst, false
		}
	}
	defer func() { <-d.slots }()
	start := time.Now()
	w, _ := d.writers.Get().(*pooledWriter)
	if w == nil {
		w = &pooledWriter{}
		w.fw, _ = flate.NewWriter(&w.out, d.level) // the level was validated
	}
	w.out.b = dst
	w.fw.Reset(&w.out)
	_, _ = w.fw.Write(payload) // a sink never fails
	_ = w.fw.Flush()
	out = w.out.b
	w.out.b = nil
	d.writers.Put(w)
	n := len(out) - len(dst) - len(syncTail)
	d.m.deflateSeconds.WithLabelValues(dirOut).Add(time.Since(start).Seconds())
	d.m.deflatePlain.WithLabelValues(dirOut).Add(float64(len(payload)))
	if n < 0 || n >= len(payload) {
		d.m.deflateCompressed.WithLabelValues(dirOut).Add(float64(len(payload)))
		return out[:len(dst)], false
	}
	d.m.deflateCompressed.WithLabelValues(dirOut).Add(float64(n))
	return out[:len(dst)+n], true
}

// compressible reports whether a payload of n bytes is worth compressing.
func (d *deflater) compressible(n int) bool { return n >= d.min && n > 0 }

func (d *deflater) scratch() *[]byte { b := d.bufs.Get().(*[]byte); *b = (*b)[:0]; return b }

func (d *deflater) release(b *[]byte) {
	if cap(*b) <= maxPooledBuf {
		d.bufs.Put(b)
	}
}

// appendCompressedFrame appends payload as one server frame to dst,
// compressed when that is worth it (RSV1 set), plain otherwise.
func (d *deflater) appendCompressedFrame(dst []byte, op byte, payload []byte) []byte {
	if !d.compressible(len(payload)) {
		return append(appendHeader(dst, true, op, len(payload)), payload...)
	}
	buf := d.scratch()
	z, ok := d.appendDeflated(*buf, payload, true)
	*buf = z[:0]
	if ok {
		dst = appendHeader(dst, true, op, len(z))
		dst[len(dst)-headerLen(len(z))] |= rsv1
		dst = append(dst, z...)
	} else {
		dst = append(appendHeader(dst, true, op, len(payload)), payload...)
	}
	d.release(buf)
	return dst
}

// headerLen is the size of an unmasked server frame header for a payload
// of n bytes.
func headerLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// inflater is one pooled decompressor and the reader that feeds it a
// message followed by inflateTail.
type inflater struct {
	src tailReader
	fr  io.ReadCloser
}

// tailReader reads p, then inflateTail. It is an io.ByteReader, so flate
// reads it directly instead of wrapping it in a buffer of its own.
type tailReader struct {
	p   []byte
	off int
}

func (r *tailReader) Read(b []byte) (int, error) {
	total := len(r.p) + len(inflateTail)
	if r.off >= total {
		return 0, io.EOF
	}
	n := 0
	if r.off < len(r.p) {
		n = copy(b, r.p[r.off:])
	}
	if n < len(b) {
		t := max(r.off-len(r.p), 0)
		if t < len(inflateTail) {
			n += copy(b[n:], inflateTail[t:])
		}
	}
	r.off += n
	return n, nil
}

func (r *tailReader) ReadByte() (byte, error) {
	switch {
	case r.off < len(r.p):
		r.off++
		return r.p[r.off-1], nil
	case r.off < len(r.p)+len(inflateTail):
		r.off++
		return inflateTail[r.off-1-len(r.p)], nil
	}
	return 0, io.EOF
}

// inflate decompresses one message into a scratch buffer the caller
// releases. It never holds more than limit bytes of output (plus one, to
// see it go over): a message that inflates past limit stops there with
// errInflateTooBig, so a decompression bomb costs what a plain message at
// the limit costs.
func (d *deflater) inflate(p []byte, limit int) (*[]byte, error) {
	start := time.Now()
	f, _ := d.readers.Get().(*inflater)
	if f == nil {
		f = &inflater{}
		f.src = tailReader{p: p}
		f.fr = flate.NewReader(&f.src)
	} else {
		f.src = tailReader{p: p}
		_ = f.fr.(flate.Resetter).Reset(&f.src, nil)
	}
	buf := d.scratch()
	out, err := readBounded(f.fr, *buf, limit, len(p))
	*buf = out
	f.src.p = nil
	d.readers.Put(f)
	d.m.deflateSeconds.WithLabelValues(dirIn).Add(time.Since(start).Seconds())
	d.m.deflateCompressed.WithLabelValues(dirIn).Add(float64(len(p)))
	d.m.deflatePlain.WithLabelValues(dirIn).Add(float64(len(out)))
	if err != nil {
		d.release(buf)
		return nil, err
	}
	return buf, nil
}

// readBounded reads r to its end into out, never past limit+1 bytes: a
// pooled buffer larger than that is not filled beyond it either.
func readBounded(r io.Reader, out []byte, limit, hint int) ([]byte, error) {
	out = out[:0]
	if want := min(limit+1, max(4*hint, 512)); cap(out) < want {
		out = make([]byte, 0, want)
	}
	for {
		end := min(cap(out), limit+1)
		if len(out) == end {
			if len(out) > limit {
				return out, errInflateTooBig
			}
			grown := make([]byte, len(out), min(limit+1, 2*cap(out)))
			copy(grown, out)
			out = grown
			end = cap(out)
		}
		n, err := r.Read(out[len(out):end])
		out = out[:len(out)+n]
		if len(out) > limit {
			return out, errInflateTooBig
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, errInflateCorrupt
		}
	}
}
