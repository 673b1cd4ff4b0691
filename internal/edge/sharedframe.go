package edge

import (
	"sync"
	"sync/atomic"
)

// Frame is one or more messages encoded once for many connections (group,
// user and broadcast fan-out): the plain frames, and the same messages
// compressed, made once on first use by a connection that negotiated
// permessage-deflate and then handed as the same bytes to every other one.
// With no context takeover a compressed message does not depend on the
// connection, so that is valid. Messages under the compression threshold
// stay plain in both forms.
//
// Append and Reset are for the one goroutine that builds the frame;
// SendFrame may be called from several at once between them. A Frame is
// meant for the connections of one Server.
type Frame struct {
	plain []byte
	spans []span

	mu         sync.Mutex
	compressed []byte
	same       bool // nothing was worth compressing: plain serves for both
	// built: compressed is made (or plain serves for both). Set under mu,
	// read without it: fan-out writers on several cores send one Frame at
	// once, and after the first compression each only reads it, so no lock
	// is taken per member.
	built atomic.Bool
}

// span is where one message sits in plain.
type span struct {
	start, body, end int
	op               byte
}

// maxKeptFrame is the largest buffer Reset keeps: one huge message must not
// pin its buffer forever.
const maxKeptFrame = 256 << 10

// Append adds a message as one complete frame.
func (f *Frame) Append(binary bool, payload []byte) {
	op := byte(opText)
	if binary {
		op = opBinary
	}
	start := len(f.plain)
	f.plain = appendHeader(f.plain, true, op, len(payload))
	body := len(f.plain)
	f.plain = append(f.plain, payload...)
	f.spans = append(f.spans, span{start, body, len(f.plain), op})
}

// Len is the size of the plain frames.
func (f *Frame) Len() int { return len(f.plain) }

// Cap is the memory the frame's buffers hold, for a caller deciding
// whether to keep it for reuse.
func (f *Frame) Cap() int { return cap(f.plain) + cap(f.compressed) }

// Bytes are the plain frames, as a connection without compression gets them.
func (f *Frame) Bytes() []byte { return f.plain }

// Reset empties the frame for the next messages. No SendFrame may be in
// progress.
func (f *Frame) Reset() {
	if cap(f.plain) > maxKeptFrame {
		f.plain = nil
	}
	if cap(f.compressed) > maxKeptFrame {
		f.compressed = nil
	}
	f.plain, f.spans, f.compressed = f.plain[:0], f.spans[:0], f.compressed[:0]
	f.same = false
	f.built.Store(false)
}

// forDeflate returns the frames for a connection that negotiated
// compression, compressing them on the first call.
func (f *Frame) forDeflate(d *deflater) []byte {
	if f.built.Load() {
		if f.same {
			return f.plain
		}
		return f.compressed
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.built.Load() {
		f.same = true
		for _, s := range f.spans {
			if d.compressible(s.end - s.body) {
				f.same = false
				break
			}
		}
		if !f.same {
			out := f.compressed[:0]
			for _, s := range f.spans {
				out = d.appendCompressedFrame(out, s.op, f.plain[s.body:s.end])
			}
			f.compressed = out
		}
		f.built.Store(true)
	}
	if f.same {
		return f.plain
	}
	return f.compressed
}

// SendFrame writes a Frame: its compressed form if the connection
// negotiated permessage-deflate, its plain form otherwise.
func (c *Conn) SendFrame(f *Frame) error {
	b := f.plain
	if c.deflate {
		b = f.forDeflate(c.srv.deflate)
	}
	return c.write(b, nil, dataFrame)
}
