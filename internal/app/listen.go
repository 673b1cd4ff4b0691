package app

import (
	"fmt"
	"net"
)

// listenFlag opens a TCP listener for the address a flag gave. A failure
// names the flag and what to do: "address already in use" alone does not
// say which of the node's four ports it was.
func listenFlag(flag, addr, fix string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(flag, addr, fix, err)
	}
	return ln, nil
}

func listenError(flag, addr, fix string, err error) error {
	if fix == "" {
		fix = "free the port or choose another address"
	}
	return fmt.Errorf("-%s %s: %w (%s)", flag, addr, err, fix)
}
