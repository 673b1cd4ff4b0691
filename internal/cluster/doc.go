// Package cluster knows which node owns which connection and gets commands to
// that node: the ownership registry (Redis or memory), node leases and
// heartbeats with fencing, cleanup of dead nodes' connections, and a
// conn.Controller that routes commands to the owner over NATS.
package cluster
