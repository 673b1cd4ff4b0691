package admission

import (
	"testing"
	"time"
)

func BenchmarkAdmit(b *testing.B) {
	a, err := New(Config{ConnRate: 1e9, ConnRatePerIP: 1e9, MaxConns: 1 << 30, MaxConnsPerUser: 1 << 30}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		release, err := a.Admit("192.0.2.1", "alice")
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}

func BenchmarkMessageLimiter(b *testing.B) {
	m := NewMessageLimiter(1e9, 1000)
	now := time.Now()
	for b.Loop() {
		m.Allow(now)
	}
}
