package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxAdminResponse bounds the admin API answers AdminClient reads.
const maxAdminResponse = 32 << 20

// AdminClient talks to an AdminHandler over HTTP (the "tollgate session"
// command uses it).
type AdminClient struct {
	// BaseURL is the admin API root, e.g. "http://127.0.0.1:9192".
	BaseURL string
	// Token is the admin bearer token.
	Token string
	// HTTPClient defaults to a client with a 10s timeout.
	HTTPClient *http.Client
}

// AdminError is a non-success answer of the admin API.
type AdminError struct {
	Status  int
	Message string
}

func (e *AdminError) Error() string {
	return fmt.Sprintf("admin API: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Create creates a session.
func (c *AdminClient) Create(ctx context.Context, req AdminCreateRequest) (AdminCreateResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return AdminCreateResponse{}, err
	}
	var out AdminCreateResponse
	err = c.do(ctx, http.MethodPost, "/v1/sessions", body, http.StatusCreated, &out)
	return out, err
}

// Get reads a session's record.
func (c *AdminClient) Get(ctx context.Context, id string) (Record, error) {
	var out Record
	err := c.do(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), nil, http.StatusOK, &out)
	return out, err
}

// Revoke ends a session.
func (c *AdminClient) Revoke(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, http.StatusNoContent, nil)
}

// RevokeSubject ends every session of subject.
func (c *AdminClient) RevokeSubject(ctx context.Context, subject string) error {
	return c.do(ctx, http.MethodDelete, "/v1/subjects/"+url.PathEscape(subject)+"/sessions", nil, http.StatusNoContent, nil)
}

// List returns subject's live sessions.
func (c *AdminClient) List(ctx context.Context, subject string) ([]Record, error) {
	var out AdminSessions
	err := c.do(ctx, http.MethodGet, "/v1/subjects/"+url.PathEscape(subject)+"/sessions", nil, http.StatusOK, &out)
	return out.Sessions, err
}

func (c *AdminClient) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		return errors.New("admin API: no base URL")
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
	if err != nil {
		return fmt.Errorf("admin API: reading answer: %w", err)
	}
	if resp.StatusCode != want {
		var e adminError
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &AdminError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API: decoding answer: %w", err)
	}
	return nil
}
