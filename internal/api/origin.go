package api

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Browser defences. The API's callers are SDKs and servers, which send no
// Origin header; a browser sends one on every cross-origin request and on
// every POST, PUT and DELETE. A simple cross-origin POST (text/plain body,
// no custom headers) is sent without a CORS preflight, so without these
// checks a web page the operator visits could post to, or close, any
// connection through an unauthenticated API on 127.0.0.1.

func errOrigin() *apiError {
	return &apiError{http.StatusForbidden, codeForbidden, "cross-origin requests are not accepted"}
}

func errLoopbackHost() *apiError {
	return &apiError{http.StatusForbidden, codeForbidden, "the unauthenticated API answers only to a loopback Host (localhost, 127.0.0.1, [::1])"}
}

// checkBrowser refuses a request with an Origin not in AllowedOrigins and,
// on the unauthenticated loopback API, a Host that does not name loopback:
// DNS rebinding points a page's own name at 127.0.0.1, making its requests
// same-origin (readable, and with an Origin of the page's own name).
func (a *API) checkBrowser(r *http.Request) *apiError {
	if o, ok := r.Header["Origin"]; ok && !a.originAllowed(o) {
		a.log.Debug("api: cross-origin request refused", "remote", r.RemoteAddr, "origin", truncate(o[0], 100))
		return errOrigin()
	}
	if a.cfg.RequiresLoopback() && !a.cfg.Auth.Configured() && !loopbackHost(r.Host) {
		a.log.Debug("api: non-loopback Host refused", "remote", r.RemoteAddr, "host", truncate(r.Host, 100))
		return errLoopbackHost()
	}
	return nil
}

// originAllowed reports whether the request's Origin header (every value:
// a second one must not smuggle a foreign origin past the first) is listed.
func (a *API) originAllowed(values []string) bool {
	if len(values) != 1 {
		return false
	}
	for _, allowed := range a.cfg.AllowedOrigins {
		if strings.EqualFold(values[0], allowed) {
			return true
		}
	}
	return false
}

// ValidOrigin reports whether s is an origin as browsers serialise it:
// scheme://host[:port], nothing else (what AllowedOrigins takes).
func ValidOrigin(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme != "" && u.Host != "" && u.User == nil &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && !strings.HasSuffix(s, "?") && !strings.HasSuffix(s, "#")
}

// loopbackHost reports whether a Host header names loopback: localhost (and
// *.localhost, RFC 6761) or a loopback IP, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") || len(host) > len(".localhost") &&
		strings.EqualFold(host[len(host)-len(".localhost"):], ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
