package proxyproto

import (
	"bytes"
	"reflect"
	"testing"
)

// checkStream is the property both fuzzers share: reading a header from a
// stream never panics, never consumes a byte past the header, and agrees
// with the one-shot parsers.
func checkStream(t *testing.T, data []byte) {
	r := bytes.NewReader(data)
	h, pending, err := readHeader(r, false)
	if err != nil {
		return
	}
	consumed := data[:len(data)-r.Len()]
	if h == nil {
		if !bytes.Equal(pending, consumed) {
			t.Fatalf("no header, but the bytes read (%q) are not the ones returned (%q)", consumed, pending)
		}
		return
	}
	var again Header
	if consumed[0] == 'P' {
		again, err = ParseV1(consumed)
	} else {
		again, err = ParseV2(consumed)
	}
	if err != nil || !reflect.DeepEqual(*h, again) {
		t.Fatalf("stream header %+v from %q; one-shot parse %+v, %v", h, consumed, again, err)
	}
}

// wholeThenPayload: a complete header followed by payload is read up to
// the header's last byte exactly.
func wholeThenPayload(t *testing.T, hdr Header, raw []byte) {
	payload := []byte("GET / HTTP/1.1\r\n")
	r := bytes.NewReader(append(bytes.Clone(raw), payload...))
	got, _, err := readHeader(r, true)
	if err != nil || got == nil || !reflect.DeepEqual(*got, hdr) {
		t.Fatalf("stream read of a valid header %q: %+v, %v (want %+v)", raw, got, err, hdr)
	}
	if r.Len() != len(payload) {
		t.Fatalf("stream read consumed %d payload bytes", len(payload)-r.Len())
	}
}

func FuzzParseV1(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := ParseV1(data); err == nil {
			if h.Version != 1 || h.Source.IsValid() != h.Destination.IsValid() {
				t.Fatalf("inconsistent header %+v", h)
			}
			wholeThenPayload(t, h, data)
		}
		checkStream(t, data)
	})
}

func FuzzParseV2(f *testing.F) {
	f.Add(v2inet("192.0.2.1", "198.51.100.2", 56324, 443))
	f.Add(v2(0, 0, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := ParseV2(data); err == nil {
			if h.Version != 2 || h.Local && h.Source.IsValid() {
				t.Fatalf("inconsistent header %+v", h)
			}
			wholeThenPayload(t, h, data)
		}
		checkStream(t, data)
	})
}
