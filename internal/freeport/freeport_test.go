package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPickGivesDistinctBindablePorts(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 200; i++ {
		p, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if p < 20000 || p >= 32768 || seen[p] {
			t.Fatalf("port %d: outside 20000–32767 or given twice", p)
		}
		seen[p] = true
	}
	p, _ := Pick()
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("picked port %d not bindable: %v", p, err)
	}
	ln.Close()
}
