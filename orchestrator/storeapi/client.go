package storeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client talks to a server's API. Its routes, all JSON:
//
//	GET    /v1/status               server, exports, cache
//	GET    /v1/sessions             every session, newest first
//	POST   /v1/sessions             publish: PublishRequest -> SessionInfo
//	GET    /v1/sessions/{id}        one session with its steps
//	DELETE /v1/sessions/{id}        discard: withdraw the export, delete the overlay
//
// Errors are {"error": "..."} with 400 (bad request, matching ErrInvalid),
// 404 (unknown session, VM or point, matching ErrNotFound) or 500.
type Client struct {
	Base string // e.g. "http://127.0.0.1:7480"
	HTTP *http.Client
}

// NewClient returns a client of the API at base.
func NewClient(base string) *Client {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{Base: strings.TrimRight(base, "/"), HTTP: &http.Client{Timeout: 5 * time.Minute}}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("rekindle server at %s: %w (is `rekindle serve` running? set --server or REKINDLE_SERVER)", c.Base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			err = errors.New(e.Error)
		} else {
			err = fmt.Errorf("%s %s: %s", method, path, resp.Status)
		}
		switch resp.StatusCode {
		case http.StatusNotFound:
			return &apiError{err.Error(), ErrNotFound}
		case http.StatusBadRequest:
			return &apiError{err.Error(), ErrInvalid}
		}
		return err
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// apiError is the server's message, matching ErrNotFound or ErrInvalid with
// errors.Is.
type apiError struct {
	msg  string
	kind error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.kind }

// Publish asks the server for a session.
func (c *Client) Publish(ctx context.Context, req PublishRequest) (*SessionInfo, error) {
	var info SessionInfo
	if err := c.do(ctx, http.MethodPost, "/v1/sessions", req, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Session fetches one session.
func (c *Client) Session(ctx context.Context, id string) (*SessionInfo, error) {
	var info SessionInfo
	if err := c.do(ctx, http.MethodGet, "/v1/sessions/"+id, nil, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Sessions lists sessions.
func (c *Client) Sessions(ctx context.Context) ([]SessionInfo, error) {
	var list []SessionInfo
	return list, c.do(ctx, http.MethodGet, "/v1/sessions", nil, &list)
}

// Discard withdraws a session.
func (c *Client) Discard(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/sessions/"+id, nil, nil)
}

// Status fetches the server's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}
