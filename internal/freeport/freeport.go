// Package freeport picks loopback TCP ports for child processes that tests
// and the benchmark driver start: the port is chosen, closed, then bound by
// the child a moment later.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Pick returns a free port on 127.0.0.1 below Linux's ephemeral range
// (32768–60999): between the pick and the child's bind it cannot become the
// source port of some outgoing connection, and this process never hands the
// same port out twice.
func Pick() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < 1000; i++ {
		port := 20000 + rand.IntN(12000)
		if given[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		given[port] = true
		return port, nil
	}
	return 0, errors.New("freeport: no free port below the ephemeral range")
}
