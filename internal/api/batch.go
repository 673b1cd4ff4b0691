package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// Batch extension: POST {prefix}/@connections with a JSON array of messages,
// each sent as PostToConnection would; the response reports each one.

type batchItem struct {
	ConnectionID string  `json:"connectionId"`
	Data         *string `json:"data"`       // sent as a text frame
	DataBase64   *string `json:"dataBase64"` // decoded, sent as a binary frame
}

type batchResult struct {
	ConnectionID string `json:"connectionId"`
	StatusCode   int    `json:"statusCode"`
	ErrorType    string `json:"errorType,omitempty"`
	Message      string `json:"message,omitempty"`
}

type batchResponse struct {
	Results []batchResult `json:"results"`
}

func (a *API) batch(ctx context.Context, w http.ResponseWriter, r *http.Request, body []byte) int {
	var items []batchItem
	if err := json.Unmarshal(body, &items); err != nil {
		return writeError(w, r, errBadRequest("body must be a JSON array of {connectionId, data | dataBase64}"))
	}
	if len(items) == 0 {
		return writeError(w, r, errBadRequest("empty batch"))
	}
	if len(items) > a.cfg.MaxBatchItems {
		return writeError(w, r, errBadRequest("at most "+strconv.Itoa(a.cfg.MaxBatchItems)+" messages per batch"))
	}
	// Messages to one connection are sent in order, one after another;
	// different connections proceed concurrently, BatchConcurrency at a time.
	results := make([]batchResult, len(items))
	var order []string
	byConn := make(map[string][]int)
	for i, it := range items {
		if _, ok := byConn[it.ConnectionID]; !ok {
			order = append(order, it.ConnectionID)
		}
		byConn[it.ConnectionID] = append(byConn[it.ConnectionID], i)
	}
	sem := make(chan struct{}, a.cfg.BatchConcurrency)
	var wg sync.WaitGroup
	for _, id := range order {
		idx := byConn[id]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			for _, i := range idx {
				results[i] = a.batchOne(ctx, items[i])
			}
		}()
	}
	wg.Wait()
	out, err := json.Marshal(batchResponse{Results: results})
	if err != nil {
		return writeError(w, r, classify(err))
	}
	return writeJSON(w, out)
}

func (a *API) batchOne(ctx context.Context, it batchItem) batchResult {
	res := batchResult{ConnectionID: it.ConnectionID}
	fail := func(e *apiError) batchResult {
		res.StatusCode, res.ErrorType, res.Message = e.status, e.code, e.message
		return res
	}
	if !conn.ValidID(it.ConnectionID) {
		return fail(errBadRequest("invalid connection id"))
	}
	var data []byte
	binary := false
	switch {
	case (it.Data == nil) == (it.DataBase64 == nil):
		return fail(errBadRequest("exactly one of data and dataBase64 is required"))
	case it.Data != nil:
		data = []byte(*it.Data)
		if !utf8.Valid(data) {
			return fail(errBadRequest("a text message must be valid UTF-8"))
		}
	default:
		var err error
		if data, err = base64.StdEncoding.DecodeString(*it.DataBase64); err != nil {
			return fail(errBadRequest("dataBase64 is not valid base64"))
		}
		binary = true
	}
	if len(data) == 0 {
		return fail(errBadRequest("empty message"))
	}
	if len(data) > a.cfg.MaxMessageBytes {
		return fail(errTooLarge(a.cfg.MaxMessageBytes))
	}
	if err := a.ctrl.Post(ctx, it.ConnectionID, data, binary); err != nil {
		return fail(classify(err))
	}
	res.StatusCode = http.StatusOK
	return res
}
