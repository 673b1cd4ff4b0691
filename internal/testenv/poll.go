package testenv

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// WaitFor is how long tests poll for a condition: generous, because CI
// machines are slow and shared; a passing test never waits this long.
const WaitFor = 30 * time.Second

// Eventually polls cond until it holds, failing the test after WaitFor.
// Tests wait for conditions with it instead of sleeping.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", WaitFor, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var prefixSeq atomic.Int64

// UniquePrefix gives each test its own Redis keys (and NATS subjects), so
// tests share servers and run in parallel: letters, digits and '_' only.
func UniquePrefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, t.Name())
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("t%d_%d_%s", time.Now().UnixNano()%1e9, prefixSeq.Add(1), name)
}
