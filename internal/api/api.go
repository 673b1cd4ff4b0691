// Package api serves the @connections HTTP API: API Gateway's
// PostToConnection, GetConnection and DeleteConnection, wire-compatible with
// the AWS SDKs (paths with a stage prefix, error codes, SigV4), plus
// Switchboard's extensions (HEAD, close code and reason on DELETE, binary
// frames, batch posts). It is an http.Handler on top of a conn.Controller;
// the edge and the router each mount it on their API listener.
package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/rules"
	"github.com/switchboardgw/switchboard/internal/service"
)

// API is the @connections HTTP API. Create it with New.
type API struct {
	cfg    Config
	ctrl   conn.Controller
	log    *slog.Logger
	m      *metrics
	ids    *requestIDs
	groups GroupsController // nil: the groups extension is off (EnableGroups)
	lister Lister           // nil: listing is off (EnableListing)
	nodes  ClusterInfo      // nil: the cluster extension is off (EnableCluster)
	tokens *tokens          // nil without bearer tokens
	sigv4  *sigVerifier     // nil without access keys
	now    func() time.Time // the clock SigV4 dates are checked against; tests move it

	gate service.Gate
}

// New validates cfg, reads the token file if one is configured and registers
// the API's metrics with reg.
func New(cfg Config, ctrl conn.Controller, reg prometheus.Registerer, log *slog.Logger) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("api: invalid config: %w", err)
	}
	if ctrl == nil {
		return nil, errors.New("api: nil Controller")
	}
	if reg == nil {
		return nil, errors.New("api: nil prometheus.Registerer")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	a := &API{
		cfg:  cfg,
		ctrl: ctrl,
		log:  log,
		ids:  newRequestIDs(),
		now:  time.Now,
	}
	if len(cfg.Auth.Tokens) > 0 || cfg.Auth.TokenFile != "" {
		t, err := newTokens(cfg.Auth.Tokens, cfg.Auth.TokenFile)
		if err != nil {
			return nil, err
		}
		a.tokens = t
	}
	if len(cfg.Auth.AccessKeys) > 0 {
		keys := make(map[string]string, len(cfg.Auth.AccessKeys))
		for k, v := range cfg.Auth.AccessKeys {
			keys[k] = v
		}
		a.sigv4 = &sigVerifier{keys: keys, region: cfg.Auth.Region, service: cfg.Auth.Service, skew: cfg.Auth.MaxClockSkew,
			hosts: append([]string(nil), cfg.Auth.Hosts...)}
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	a.m = m
	return a, nil
}

// Handler returns the HTTP handler. Mount it as the listener's whole handler:
// any prefix before "@connections" is accepted, so no StripPrefix is needed.
func (a *API) Handler() http.Handler { return a }

// Reload re-reads the token file now (e.g. on SIGHUP). A failed read keeps
// the previous tokens and returns the error.
func (a *API) Reload() error {
	if a.tokens == nil {
		return nil
	}
	if err := a.tokens.reload(); err != nil {
		return err
	}
	a.log.Info("api: bearer tokens reloaded", "file", a.cfg.Auth.TokenFile)
	return nil
}

// Run watches the token file for changes until ctx is done or Shutdown is
// called. Without a token file it just waits. It returns nil.
func (a *API) Run(ctx context.Context) error {
	if err := a.gate.Start("api"); err != nil {
		return err
	}
	defer a.gate.Finish()

	var tick <-chan time.Time
	if a.tokens != nil && a.cfg.Auth.TokenFile != "" {
		t := time.NewTicker(a.cfg.Auth.TokenFilePollInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.gate.Stopping():
			return nil
		case <-tick:
			if a.tokens.changed() {
				if err := a.Reload(); err != nil {
					a.log.Warn("api: token file reload failed; keeping previous tokens", "err", err)
				}
			}
		}
	}
}

// Shutdown stops Run and waits for it to return. Safe to call twice, and
// without Run. In-flight requests belong to the caller's http.Server.
func (a *API) Shutdown(ctx context.Context) error {
	return a.gate.Stop(ctx, "api")
}

// ServeHTTP serves one @connections request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rid := a.ids.next()
	w.Header()[hdrRequestID] = []string{rid}
	rt := parsePath(requestPath(r))
	op, status, served := a.serveCluster(w, r)
	if !served {
		op, status = a.serve(w, r, rt, a.now())
	}
	dur := time.Since(start)
	a.m.observe(op, status, dur.Seconds())
	if a.log.Enabled(r.Context(), slog.LevelDebug) {
		a.log.LogAttrs(r.Context(), slog.LevelDebug, "api request",
			slog.String("requestId", rid),
			slog.String("method", r.Method),
			slog.String("operation", op),
			slog.String("connectionId", rt.id),
			slog.Int("status", status),
			slog.Duration("duration", dur),
			slog.String("remote", r.RemoteAddr))
	}
}

func operation(kind routeKind, method string) string {
	switch kind {
	case routeConn:
		switch method {
		case http.MethodPost:
			return opPost
		case http.MethodGet:
			return opGet
		case http.MethodDelete:
			return opDelete
		case http.MethodHead:
			return opHead
		case http.MethodPut:
			return opState
		}
	case routeBatch:
		if method == http.MethodPost {
			return opBatch
		}
		if method == http.MethodGet {
			return opList
		}
	default:
		return groupOperation(kind, method)
	}
	return opUnknown
}

var errBodyTooLarge = errors.New("body too large")

func (a *API) serve(w http.ResponseWriter, r *http.Request, rt route, now time.Time) (string, int) {
	if rt.kind == routeNone || (rt.kind.extension() && a.groups == nil) {
		// API Gateway answers an unknown path with 403 {"message":"Forbidden"}.
		return opUnknown, writeError(w, r, errForbidden())
	}
	op := operation(rt.kind, r.Method)
	if op == opList && a.lister == nil {
		op = opUnknown // listing is an extension, off unless enabled
	}
	if op == opUnknown {
		return op, writeError(w, r, &apiError{http.StatusMethodNotAllowed, codeMethodNotAllowed, "method " + r.Method + " not allowed"})
	}
	auth, aerr := a.authenticate(r, now)
	if aerr != nil {
		return op, writeError(w, r, aerr)
	}

	var body []byte
	if r.Method == http.MethodPost || r.Method == http.MethodPut || auth.sig != nil {
		limit := a.cfg.MaxMessageBytes
		if op == opBatch {
			limit = a.cfg.MaxBatchBytes
		}
		var err error
		body, err = readBody(r, limit)
		switch {
		case errors.Is(err, errBodyTooLarge):
			// Before the signature is checked: verifying it would mean
			// reading an unbounded body. The key and date were checked.
			return op, writeError(w, r, errTooLarge(limit))
		case err != nil:
			return op, writeError(w, r, errBadRequest("could not read the request body"))
		}
		if auth.sig != nil {
			if err := auth.sig.verify(sha256.Sum256(body)); err != nil {
				a.logAuthFailure(r, err)
				return op, writeError(w, r, errForbidden())
			}
		}
	}
	if rt.bad != "" {
		return op, writeError(w, r, errBadRequest(rt.bad))
	}

	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.CallTimeout)
	defer cancel()
	switch op {
	case opPost:
		return op, a.post(ctx, w, r, rt.id, body)
	case opGet:
		return op, a.get(ctx, w, r, rt.id)
	case opDelete:
		return op, a.delete(ctx, w, r, rt.id)
	case opHead:
		return op, a.head(ctx, w, r, rt.id)
	case opBatch:
		return op, a.batch(ctx, w, r, body)
	case opList:
		return op, a.list(ctx, w, r)
	case opState:
		return op, a.setState(ctx, w, r, rt.id, body)
	default:
		return op, a.serveGroups(ctx, w, r, rt, op, body)
	}
}

// readBody reads at most limit bytes; more is errBodyTooLarge. It never
// buffers more than limit+1 bytes.
func readBody(r *http.Request, limit int) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > int64(limit) {
		return nil, errBodyTooLarge
	}
	if r.ContentLength >= 0 {
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return nil, fmt.Errorf("read body: %w", err)
		}
		return buf, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(buf) > limit {
		return nil, errBodyTooLarge
	}
	return buf, nil
}

func (a *API) post(ctx context.Context, w http.ResponseWriter, r *http.Request, id string, body []byte) int {
	if len(body) == 0 {
		return writeError(w, r, errBadRequest("empty message"))
	}
	binary, e := a.frameType(r, body)
	if e != nil {
		return writeError(w, r, e)
	}
	if err := a.ctrl.Post(ctx, id, body, binary); err != nil {
		return writeError(w, r, classify(err))
	}
	// The SDKs ignore PostToConnection's body; "{}" keeps it JSON for any
	// client that parses it anyway.
	return writeJSON(w, bodyEmpty)
}

// frameType decides text or binary: the X-Switchboard-Frame header if
// present, else the Content-Type; a text frame must be valid UTF-8.
func (a *API) frameType(r *http.Request, body []byte) (binary bool, e *apiError) {
	text := func() (bool, *apiError) {
		if !utf8.Valid(body) {
			return false, errBadRequest("a text message must be valid UTF-8")
		}
		return false, nil
	}
	if f := r.Header[hdrFrame]; len(f) > 0 {
		switch {
		case strings.EqualFold(f[0], "binary"):
			return true, nil
		case strings.EqualFold(f[0], "text"):
			return text()
		}
		return false, errBadRequest(hdrFrame + " must be text or binary")
	}
	ct := r.Header.Get(hdrContentType)
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	switch {
	// No type, the AWS SDKs' octet-stream, and the form types curl -d and
	// curl -F send without being asked: the client gets text when it is
	// UTF-8, as on API Gateway, not a binary frame (a Blob in a browser).
	case ct == "", strings.EqualFold(ct, "application/octet-stream") && !a.cfg.OctetStreamBinary,
		strings.EqualFold(ct, "application/x-www-form-urlencoded"), strings.EqualFold(ct, "multipart/form-data"):
		return !utf8.Valid(body), nil
	case strings.EqualFold(ct, "application/octet-stream"):
		return true, nil
	case len(ct) >= 5 && strings.EqualFold(ct[:5], "text/"),
		strings.EqualFold(ct, "application/json"),
		len(ct) > 5 && strings.EqualFold(ct[len(ct)-5:], "+json"):
		return text()
	}
	return true, nil // any other media type is opaque bytes
}

// connectionJSON is GetConnection's output. connectionId, nodeId, userId,
// principal, groups and detached are Switchboard extensions; the AWS SDKs ignore
// unknown members.
type connectionJSON struct {
	ConnectedAt  string          `json:"connectedAt"`
	Identity     identityJSON    `json:"identity"`
	LastActiveAt string          `json:"lastActiveAt"`
	ConnectionID string          `json:"connectionId"`
	NodeID       string          `json:"nodeId,omitempty"`
	UserID       string          `json:"userId,omitempty"`
	Principal    json.RawMessage `json:"principal,omitempty"`
	Groups       []string        `json:"groups,omitempty"`
	Detached     bool            `json:"detached,omitempty"`
}

type identityJSON struct {
	SourceIP  string `json:"sourceIp"`
	UserAgent string `json:"userAgent"`
}

// isoMillis is ISO-8601 in UTC with milliseconds, as API Gateway reports times.
const isoMillis = "2006-01-02T15:04:05.000Z"

func (a *API) get(ctx context.Context, w http.ResponseWriter, r *http.Request, id string) int {
	info, err := a.ctrl.Info(ctx, id)
	if err != nil {
		return writeError(w, r, classify(err))
	}
	last := info.LastActiveAt
	if last.IsZero() {
		last = info.ConnectedAt
	}
	out := connectionJSON{
		ConnectedAt:  info.ConnectedAt.UTC().Format(isoMillis),
		Identity:     identityJSON{SourceIP: info.SourceIP, UserAgent: info.UserAgent},
		LastActiveAt: last.UTC().Format(isoMillis),
		ConnectionID: id,
		NodeID:       info.Node,
		UserID:       info.UserID,
		Principal:    info.Principal,
		Groups:       info.Groups,
		Detached:     info.Detached,
	}
	body, err := json.Marshal(out)
	if err != nil {
		return writeError(w, r, classify(err))
	}
	return writeJSON(w, body)
}

func (a *API) head(ctx context.Context, w http.ResponseWriter, r *http.Request, id string) int {
	if _, err := a.ctrl.Info(ctx, id); err != nil {
		return writeError(w, r, classify(err))
	}
	w.WriteHeader(http.StatusOK)
	return http.StatusOK
}

func (a *API) delete(ctx context.Context, w http.ResponseWriter, r *http.Request, id string) int {
	code, reason, perr := closeParams(r)
	if perr != nil {
		return writeError(w, r, perr)
	}
	if err := a.ctrl.Close(ctx, id, code, reason); err != nil {
		return writeError(w, r, classify(err))
	}
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// setState answers PUT /@connections/{id} (extension): the JSON object in
// the body replaces the state (authorizer context) the connection carries on
// its later events. 204, 400 for a body that is not a JSON object within
// conn.MaxState, 410 for a gone connection.
func (a *API) setState(ctx context.Context, w http.ResponseWriter, r *http.Request, id string, body []byte) int {
	ss, ok := a.ctrl.(conn.StateSetter)
	if !ok {
		return writeError(w, r, &apiError{http.StatusMethodNotAllowed, codeMethodNotAllowed, "connection state is not supported here"})
	}
	if !conn.ValidState(body) {
		return writeError(w, r, errBadRequest(fmt.Sprintf("state must be a JSON object of at most %d bytes", conn.MaxState)))
	}
	if err := ss.SetState(ctx, id, body); err != nil {
		return writeError(w, r, classify(err))
	}
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// closeParams reads the close extension's ?code= and ?reason= (DELETE of a
// connection, of a user's connections): API Gateway's 1000 "Connection
// Closed Normally" when absent; a code alone sends no reason.
func closeParams(r *http.Request) (int, string, *apiError) {
	code, reason := defaultDeleteCloseCode, defaultDeleteCloseReason
	if r.URL.RawQuery == "" {
		return code, reason, nil
	}
	q := r.URL.Query()
	if s, ok := q["code"]; ok {
		c, err := strconv.Atoi(s[0])
		if err != nil || !rules.ValidCloseCode(c) {
			return 0, "", errBadRequest("code must be a close code a server may send (1000-1003, 1007-1014, 3000-4999)")
		}
		code, reason = c, ""
	}
	if s, ok := q["reason"]; ok {
		reason = s[0]
		if !rules.ValidCloseReason(reason) {
			return 0, "", errBadRequest("reason must be valid UTF-8 of at most 123 bytes")
		}
	}
	return code, reason, nil
}
