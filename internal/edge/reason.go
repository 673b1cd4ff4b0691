package edge

// CloseReason says why a connection ended. It is a small enum so it can be a
// log field and a metric label without unbounded values.
type CloseReason uint8

const (
	ReasonClientClose   CloseReason = iota // the client sent a close frame
	ReasonPeerGone                         // TCP closed or reset without a close frame (1006)
	ReasonAPIClose                         // DELETE /@connections/{id}
	ReasonProtocolError                    // bad framing, unmasked frame, bad opcode (1002)
	ReasonInvalidUTF8                      // a text message or close reason that is not UTF-8 (1007)
	ReasonTooBig                           // frame or message over the limit (1009)
	ReasonIdleTimeout                      // no frame for IdleTimeout (1001)
	ReasonMaxDuration                      // open longer than MaxDuration (1001)
	ReasonPingTimeout                      // a server ping was not answered (1006)
	ReasonSlowConsumer                     // send queue over its byte limit (1008)
	ReasonWriteTimeout                     // a queued write did not finish within WriteTimeout (1006)
	ReasonReadTimeout                      // a partial frame sat unfinished for FrameTimeout (1008)
	ReasonIOError                          // a socket error while reading or writing (1006)
	ReasonDrain                            // the node is shutting down (1001)
	ReasonPolicy                           // a policy decision of the node, e.g. rate limit (1008)
	ReasonFenced                           // the node lost its cluster lease (1012)
	ReasonControlRate                      // pings and pongs from the client over ControlRate (1008)
	reasonCount
)

var reasonNames = [...]string{
	ReasonClientClose:   "client_close",
	ReasonPeerGone:      "peer_gone",
	ReasonAPIClose:      "api_close",
	ReasonProtocolError: "protocol_error",
	ReasonInvalidUTF8:   "invalid_utf8",
	ReasonTooBig:        "too_big",
	ReasonIdleTimeout:   "idle_timeout",
	ReasonMaxDuration:   "max_duration",
	ReasonPingTimeout:   "ping_timeout",
	ReasonSlowConsumer:  "slow_consumer",
	ReasonWriteTimeout:  "write_timeout",
	ReasonReadTimeout:   "read_timeout",
	ReasonIOError:       "io_error",
	ReasonDrain:         "drain",
	ReasonPolicy:        "policy",
	ReasonFenced:        "fenced",
	ReasonControlRate:   "control_rate",
}

func (r CloseReason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Close codes (RFC 6455 §7.4.1) the edge sends or reports.
const (
	CodeNormal         = 1000
	CodeGoingAway      = 1001
	CodeProtocolError  = 1002
	CodeUnsupported    = 1003
	CodeNoStatus       = 1005 // reported, never sent: close frame without a code
	CodeAbnormal       = 1006 // reported, never sent: no close frame at all
	CodeInvalidPayload = 1007
	CodePolicy         = 1008
	CodeTooBig         = 1009
	CodeInternal       = 1011
	CodeServiceRestart = 1012
)
