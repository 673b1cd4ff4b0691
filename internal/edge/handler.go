package edge

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Handler is how the rest of the node (lifecycle events, cluster registry)
// takes part in a connection's life. Calls for one connection never overlap:
// Connect, then Open, then Messages in order, then Close. A resumable
// connection whose socket was lost may also hear Resume and Resumed
// (Resumer) between its Messages, never Open again.
type Handler interface {
	// Connect runs during the handshake, before the 101 is sent: the
	// connection is already reachable by ID (posts are held until the
	// upgrade). Return *Reject (or any error, which means 500) to refuse.
	Connect(ctx context.Context, c *Conn, r *Request) (*Accept, error)
	// Open runs after the 101 was sent.
	Open(c *Conn)
	// Message runs on a reactor worker for each complete client message;
	// data is valid only during the call. It must not block.
	Message(c *Conn, data []byte, binary bool)
	// Close runs exactly once for every connection Connect accepted, whether
	// or not the upgrade then completed (see Conn.Established), with the
	// close code and reason the client sent or the node chose.
	Close(c *Conn, code int, reason string, why CloseReason)
}

// Request is the upgrade request as $connect sees it.
type Request struct {
	Time      time.Time
	Method    string
	URI       string // as sent: path and query
	Path      string
	RawQuery  string
	Host      string
	Header    http.Header // canonical keys, values in order
	SourceIP  string
	UserAgent string
	Origin    string
	// Protocols the client offered in Sec-WebSocket-Protocol, in order.
	Protocols []string
}

// Accept is a positive $connect decision.
type Accept struct {
	// Header is added to the 101 response (e.g. Sec-WebSocket-Protocol).
	Header http.Header
	// Subprotocol chosen; it wins over the edge's own Subprotocols list.
	Subprotocol string
	// UserID the connection belongs to, if any.
	UserID string
	// Value rides on the connection for the Handler (Conn.Value).
	Value any
}

// Reject refuses an upgrade with an HTTP status.
type Reject struct {
	Status int
	Header http.Header
	Reason string
}

func (r *Reject) Error() string {
	return fmt.Sprintf("upgrade rejected: %d %s", r.Status, r.Reason)
}
