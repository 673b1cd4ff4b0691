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
	ReasonDetached                         // a detached connection's resume window ended (the code of its lost socket)
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
	ReasonDetached:      "detached",
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

// closeCause is one way a connection ends, as a value: the close code and
// reason its close frame carries and the Handler hears, and the
// CloseReason it is logged and counted under (the reason label of
// switchboard_connections_closed_total). Each cause the edge decides
// itself is named once below, so a code, its text and its label cannot
// drift apart at the call sites; causes from outside (an API DELETE, a
// policy of the node, the client's own close) come in through Conn.Close
// or clientClose as one value too.
type closeCause struct {
	code   int
	reason string
	why    CloseReason
}

// The causes the edge decides itself.
var (
	causePeerGone       = closeCause{CodeAbnormal, "", ReasonPeerGone}
	causeWriteError     = closeCause{CodeAbnormal, "write error", ReasonIOError}
	causeWriteTimeout   = closeCause{CodeAbnormal, "write timeout", ReasonWriteTimeout}
	causeUpgradeFailed  = closeCause{CodeAbnormal, "upgrade failed", ReasonIOError}
	causeRegisterFailed = closeCause{CodeInternal, "internal error", ReasonIOError}
	causePingTimeout    = closeCause{CodeAbnormal, "ping timeout", ReasonPingTimeout}
	causeSlowConsumer   = closeCause{CodePolicy, "slow consumer", ReasonSlowConsumer}
	causeControlRate    = closeCause{CodePolicy, "control frame rate exceeded", ReasonControlRate}
	causeFrameTimeout   = closeCause{CodePolicy, "frame timeout", ReasonReadTimeout}
	causeIdleTimeout    = closeCause{CodeGoingAway, "idle timeout", ReasonIdleTimeout}
	causeMaxDuration    = closeCause{CodeGoingAway, "maximum connection duration", ReasonMaxDuration}
	causeDrain          = closeCause{CodeGoingAway, "server shutting down", ReasonDrain}
	causeFrameTooBig    = closeCause{CodeTooBig, "frame too big", ReasonTooBig}
	causeMessageTooBig  = closeCause{CodeTooBig, "message too big", ReasonTooBig}
	causeInvalidUTF8    = closeCause{CodeInvalidPayload, "invalid UTF-8", ReasonInvalidUTF8}
	causeDetachedFull   = closeCause{CodePolicy, "detached queue full", ReasonSlowConsumer}
	causeCloseUTF8      = closeCause{CodeInvalidPayload, "invalid UTF-8 in close reason", ReasonInvalidUTF8}
	causeBadCompression = protocolError("invalid compressed data")

	causeBadLength       = protocolError("invalid frame length")
	causeReservedBits    = protocolError("reserved bits set")
	causeUnmasked        = protocolError("client frames must be masked")
	causeBadControl      = protocolError("invalid control frame")
	causeUnknownOpcode   = protocolError("unknown opcode")
	causeNestedMessage   = protocolError("new message inside a fragmented message")
	causeLoneContinue    = protocolError("continuation without a message")
	causeBadCloseFrame   = protocolError("invalid close frame")
	causeBadCloseCode    = protocolError("invalid close code")
	causeUnknownTeardown = closeCause{CodeAbnormal, "", ReasonIOError} // torn down with no cause recorded (cannot happen; be safe)
)

func protocolError(reason string) closeCause {
	return closeCause{CodeProtocolError, reason, ReasonProtocolError}
}

// clientClose is the client's own close: code is what its close frame
// said (CodeNoStatus if it carried none).
func clientClose(code int, reason string) closeCause {
	return closeCause{code, reason, ReasonClientClose}
}

// wireCode is the code the edge's close frame carries: a client's close
// without a code is answered with 1000 (RFC 6455 §5.5.1), and reported
// as 1005.
func (c closeCause) wireCode() int {
	if c.code == CodeNoStatus {
		return CodeNormal
	}
	return c.code
}

// sendsFrame reports whether an abort may still try a close frame: 1006
// means there is none.
func (c closeCause) sendsFrame() bool { return c.code != CodeAbnormal }

// payload is the close frame's payload for this cause.
func (c closeCause) payload() []byte { return closePayload(c.wireCode(), c.reason) }
