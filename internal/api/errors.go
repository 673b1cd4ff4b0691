package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// Error codes as the AWS SDKs match them (x-amzn-ErrorType and "__type").
// The first four are in the apigatewaymanagementapi model; the others are
// generic codes the SDKs surface as a plain API error (5xx ones are retried).
const (
	codeGone             = "GoneException"
	codeForbidden        = "ForbiddenException"
	codePayloadTooLarge  = "PayloadTooLargeException"
	codeLimitExceeded    = "LimitExceededException"
	codeBadRequest       = "BadRequestException"
	codeMethodNotAllowed = "MethodNotAllowedException"
	codeUnavailable      = "ServiceUnavailableException"
	codeTimeout          = "GatewayTimeoutException"
	codeInternal         = "InternalServerErrorException"
)

// Canonical header keys, precomputed so setting them does not allocate.
const (
	hdrRequestID   = "X-Amzn-Requestid"
	hdrErrorType   = "X-Amzn-Errortype"
	hdrContentType = "Content-Type"
	hdrContentLen  = "Content-Length"
	hdrFrame       = "X-Switchboard-Frame"
)

var (
	valJSON     = []string{"application/json"}
	valEmptyLen = []string{"2"}
	bodyEmpty   = []byte("{}")
)

// apiError is an error response: status, AWS error code, message.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errForbidden() *apiError { return &apiError{http.StatusForbidden, codeForbidden, "Forbidden"} }

func errBadRequest(msg string) *apiError {
	return &apiError{http.StatusBadRequest, codeBadRequest, msg}
}

func errTooLarge(limit int) *apiError {
	return &apiError{http.StatusRequestEntityTooLarge, codePayloadTooLarge,
		"message exceeds the maximum of " + strconv.Itoa(limit) + " bytes"}
}

// classify maps a Controller error to its response.
func classify(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, conn.ErrGone):
		return &apiError{http.StatusGone, codeGone, "connection gone"}
	case errors.Is(err, conn.ErrBufferFull):
		return &apiError{http.StatusTooManyRequests, codeLimitExceeded, "client send buffer full"}
	case errors.Is(err, conn.ErrTooLarge):
		return &apiError{http.StatusRequestEntityTooLarge, codePayloadTooLarge, "message too large"}
	case errors.Is(err, conn.ErrInvalidID):
		return errBadRequest("invalid connection id")
	case errors.Is(err, conn.ErrInvalidCloseCode):
		return errBadRequest("invalid close code")
	case errors.Is(err, conn.ErrInvalidState):
		return errBadRequest("invalid connection state")
	case errors.Is(err, conn.ErrUnavailable):
		return &apiError{http.StatusServiceUnavailable, codeUnavailable, "connection owner unavailable"}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{http.StatusGatewayTimeout, codeTimeout, "timed out"}
	default:
		return &apiError{http.StatusInternalServerError, codeInternal, "internal error"}
	}
}

type errorBody struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

// writeError writes e the way the AWS SDKs parse errors: the code in the
// x-amzn-ErrorType header and in a JSON body's "__type". A HEAD response
// carries the headers only.
func writeError(w http.ResponseWriter, r *http.Request, e *apiError) int {
	h := w.Header()
	h[hdrErrorType] = []string{e.code}
	h[hdrContentType] = valJSON
	if e.status == http.StatusMethodNotAllowed {
		h["Allow"] = []string{"GET, POST, PUT, DELETE, HEAD"}
	}
	body, _ := json.Marshal(errorBody{Type: e.code, Message: e.message}) // cannot fail: two strings
	h[hdrContentLen] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return e.status
}

// writeJSON writes a 200 with a JSON body.
func writeJSON(w http.ResponseWriter, body []byte) int {
	h := w.Header()
	h[hdrContentType] = valJSON
	if len(body) == 2 {
		h[hdrContentLen] = valEmptyLen
	} else {
		h[hdrContentLen] = []string{strconv.Itoa(len(body))}
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return http.StatusOK
}
