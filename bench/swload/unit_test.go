package swload

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestHistogramQuantilesAreWithinThreePercent(t *testing.T) {
	var h histogram
	for i := 1; i <= 100000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}} {
		got := h.quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.035 {
			t.Errorf("q%.3f = %v, want within [%v, +3.5%%]", c.q, got, c.want)
		}
	}
	if h.summary().Max != 100*time.Millisecond {
		t.Errorf("max = %v", h.summary().Max)
	}
	var empty histogram
	if s := empty.summary(); s.Count != 0 || s.P99 != 0 {
		t.Errorf("empty summary %+v", s)
	}
}

func TestBucketsCoverEveryValueInOrder(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 31, 32, 33, 63, 64, 65, 1000, 1 << 40, 1<<63 - 1} {
		b := bucketOf(v)
		if b < prev || b >= nBuckets || upperBound(b) < v {
			t.Fatalf("value %d: bucket %d (prev %d), upper bound %d", v, b, prev, upperBound(b))
		}
		prev = b
	}
}

func TestClientFramesAreMaskedAndParse(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte{'a'}, n)
		f := appendFrame(nil, opText, payload, 0xDEADBEEF)
		h, ok, err := parseHeader(f)
		if err != nil || !ok || !h.masked || !h.fin || h.op != opText || h.length != n || len(f) != h.hdrSize+n {
			t.Fatalf("len %d: header %+v ok %v err %v", n, h, ok, err)
		}
		got := f[h.hdrSize:]
		if n > 0 && bytes.Equal(got, payload) {
			t.Fatalf("len %d: payload not masked", n)
		}
		for i := range got {
			got[i] ^= h.key[i&3]
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("len %d: unmasked payload differs", n)
		}
		if _, ok, _ := parseHeader(f[:h.hdrSize-1]); ok {
			t.Fatalf("len %d: a truncated header parsed", n)
		}
	}
}

func TestRejectsBadServerFrames(t *testing.T) {
	for name, b := range map[string][]byte{
		"reserved bit":       {0xC1, 0x00},
		"long control frame": {0x89, 126, 0, 200},
		"fragmented control": {0x09, 0x00},
		"huge frame":         {0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0},
	} {
		if _, _, err := parseHeader(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMessageCarriesSendTimeAtExactSize(t *testing.T) {
	for _, size := range []int{minMsgSize, 64, 1000} {
		for _, ts := range []int64{7, 1234567890123, 1<<63 - 1} {
			m := appendMessage(nil, ts, size)
			if len(m) != size {
				t.Errorf("size %d: got %d bytes", size, len(m))
			}
			// Valid JSON with an "action": the edge selects the route "echo".
			var v struct {
				Action string `json:"action"`
				T      int64  `json:"t"`
			}
			if err := json.Unmarshal(m, &v); err != nil || v.Action != "echo" || v.T != ts {
				t.Errorf("size %d: %s is not the JSON expected: %+v %v", size, m, v, err)
			}
			if got, ok := sendTime(m); !ok || got != ts {
				t.Errorf("size %d: send time %d %v", size, got, ok)
			}
		}
	}
	if _, ok := sendTime([]byte(`{"other":1}`)); ok {
		t.Error("found a send time in a message without one")
	}
}

func TestUpgradeResponseChecks(t *testing.T) {
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	accept := acceptKey(key)
	if accept != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" { // RFC 6455 §1.3 example
		t.Fatalf("accept key %q", accept)
	}
	ok := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nsec-websocket-accept: " + accept + "\r\n"
	if r := checkResponse([]byte(ok), accept); r != "" {
		t.Errorf("valid response rejected: %s", r)
	}
	for resp, want := range map[string]string{
		"HTTP/1.1 403 Forbidden\r\n":                                      "http-403",
		"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n": failHandshake,
		"HTTP/1.1 101 Switching Protocols\r\n":                            failHandshake,
		"garbage\r\n":                                                     failHandshake,
	} {
		if got := checkResponse([]byte(resp), accept); got != want {
			t.Errorf("%q: got %q want %q", resp, got, want)
		}
	}
}

func TestConfigRefusesNonLoopbackAndTooManyConnections(t *testing.T) {
	lo := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:80")}
	for name, c := range map[string]Config{
		"no target":         {},
		"remote target":     {Targets: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:80")}},
		"ipv6 target":       {Targets: []netip.AddrPort{netip.MustParseAddrPort("[::1]:80")}},
		"remote source":     {Targets: lo, Sources: []netip.Addr{netip.MustParseAddr("192.168.1.1")}},
		"beyond file limit": {Targets: lo, Conns: 1 << 30},
		"tiny message":      {Targets: lo, MsgSize: 10},
		"unknown mode":      {Targets: lo, Mode: "flood"},
	} {
		err := c.Validate()
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate() = %v, want ErrConfig", name, err)
		}
	}
	c := Config{Targets: lo}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	if err := (&Config{Targets: lo, Conns: 1 << 30}).Validate(); err == nil || !strings.Contains(err.Error(), "several processes") {
		t.Errorf("file-limit error should suggest several processes: %v", err)
	}
}

func TestReceiptsBySendTimeAreBounded(t *testing.T) {
	r := &reactor{}
	for k := range int64(maxSendTimes + 10) {
		r.noteSend(k, 1000+k)
	}
	r.noteSend(3, 5000)
	r.noteSend(3, 900)
	if len(r.stats.bySend) != maxSendTimes {
		t.Fatalf("tracked %d send times, want at most %d", len(r.stats.bySend), maxSendTimes)
	}
	if s := r.stats.bySend[3]; s.Received != 3 || s.First != 900 || s.Last != 5000 {
		t.Errorf("send time 3: %+v, want 3 receipts from 900 to 5000", *s)
	}
	merged := mergeSends(mergeSends(nil, r.stats.bySend), map[int64]*SendReceipt{
		3: {Sent: 3, Received: 1, First: 800, Last: 6000}, -1: {Sent: -1, Received: 1},
	})
	if len(merged) != maxSendTimes || merged[3].Received != 4 || merged[3].First != 800 || merged[3].Last != 6000 {
		t.Errorf("merged %d send times, send time 3 %+v", len(merged), *merged[3])
	}
	if got := sortedSends(merged); got[0].Sent != 0 || got[len(got)-1].Sent != maxSendTimes-1 {
		t.Errorf("sorted from %d to %d", got[0].Sent, got[len(got)-1].Sent)
	}
}
