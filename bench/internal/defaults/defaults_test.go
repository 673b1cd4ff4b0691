package defaults

import (
	"testing"
	"time"
)

func TestSetFillsOnlyZeroValues(t *testing.T) {
	var n int
	Set(&n, 7)
	if n != 7 {
		t.Fatalf("zero int: got %d, want the default 7", n)
	}
	d := 3 * time.Second
	Set(&d, 10*time.Second)
	if d != 3*time.Second {
		t.Fatalf("set duration: got %v, want it kept at 3s", d)
	}
	s := ""
	Set(&s, "redis-server")
	if s != "redis-server" {
		t.Fatalf("empty string: got %q, want the default", s)
	}
}
