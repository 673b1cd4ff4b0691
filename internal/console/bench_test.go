package console

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/testenv"
)

// BenchmarkTapRouted is what the tap adds to every client message an edge
// routes: with no tail open (one atomic load), and with tails open whose
// filters do not match (the common case of a tail following one user).
func BenchmarkTapRouted(b *testing.B) {
	n := testenv.StartNATS(b)
	payload := []byte(`{"action":"chat","text":"hello"}`)
	for _, taps := range []int{0, 4} {
		b.Run(fmt.Sprintf("taps=%d", taps), func(b *testing.B) {
			tp, err := NewTap(n.Connect(b), "t", "edge-a", nil)
			if err != nil {
				b.Fatal(err)
			}
			for i := range taps {
				tp.announce(natsMsg(fmt.Sprintf(`{"inbox":"_INBOX.b%d","user":"someone-else","rate":100,"ttlMs":15000}`, i)))
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tp.Routed("chat", "AAAAAAAAAAAAAAAA", "alice", payload, false)
				}
			})
		})
	}
}

func natsMsg(data string) *nats.Msg { return &nats.Msg{Subject: "t.console.tap", Data: []byte(data)} }
