package cluster

// The connection commands of the node command protocol (internal/nodecmd:
// P.node.<nodeID>, request/reply, Sb-Cmd and Sb-Id on every command). Their
// own parameters travel in headers and a post's payload is the message data
// as is, so the hot path has no JSON and no base64. docs/cluster.md
// describes them.
const (
	hdrBinary = "Sb-Binary" // "1": post as a binary frame
	hdrCode   = "Sb-Code"   // close code; the reason is the data

	cmdPost  = "post"
	cmdInfo  = "info"  // the reply's data is conn.Info as JSON
	cmdClose = "close" // the data is the reason
	cmdState = "state" // the data is the new state (JSON object)
)
