package session

// eventDomain is the domainName of a connection's events: -domain-name when
// set, since the Host header is whatever the client chose to send.
func (h *Handler) eventDomain(host string) string {
	if h.domain != "" {
		return h.domain
	}
	return hostOnly(host)
}
