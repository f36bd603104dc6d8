package session

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/internal/reason"
)

// MaxAdminBody bounds admin request bodies.
const MaxAdminBody = 64 << 10

// minAdminToken is the shortest admin token NewAdminHandler accepts.
const minAdminToken = 16

// AdminHandler serves the session admin API:
//
//	POST   /v1/sessions                      create → 201 {"session_id","id_hash","expires_at"}
//	GET    /v1/sessions/{id}                 the record (id_hash, never the ID) → 200
//	DELETE /v1/sessions/{id}                 logout → 204
//	GET    /v1/subjects/{subject}/sessions   {"sessions": [records]} → 200
//	DELETE /v1/subjects/{subject}/sessions   revoke every session → 204
//
// Every request needs "Authorization: Bearer <admin token>" (401
// otherwise). Errors are JSON {"error": "..."} with fixed messages: 400
// bad input, 404 unknown or expired session, 413 body over 64 KiB, 503
// store unavailable. Logs carry ID-hash and token-hash prefixes, never a
// session ID or the token.
type AdminHandler struct {
	store     Store
	tokenHash [32]byte
	log       *slog.Logger
	mux       *http.ServeMux
}

// AdminCreateRequest is the body of POST /v1/sessions.
type AdminCreateRequest struct {
	Subject  string            `json:"subject"`
	Claims   map[string]any    `json:"claims,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// TTL is a Go duration ("1h"); empty means the absolute timeout.
	TTL string `json:"ttl,omitempty"`
}

// AdminCreateResponse is the body of a 201 answer to POST /v1/sessions.
type AdminCreateResponse struct {
	SessionID string    `json:"session_id"`
	IDHash    string    `json:"id_hash"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AdminSessions is the body of GET /v1/subjects/{subject}/sessions.
type AdminSessions struct {
	Sessions []Record `json:"sessions"`
}

type adminError struct {
	Error string `json:"error"`
}

// NewAdminHandler serves the admin API over store, accepting token (at
// least 16 bytes; only its SHA-256 is kept). Options: WithLogger.
func NewAdminHandler(store Store, token string, opts ...Option) (*AdminHandler, error) {
	if store == nil {
		return nil, errors.New("session: admin handler needs a store")
	}
	if len(strings.TrimSpace(token)) < minAdminToken || strings.TrimSpace(token) != token {
		return nil, fmt.Errorf("session: admin token must be at least %d bytes without surrounding whitespace", minAdminToken)
	}
	o := buildOptions(opts)
	h := &AdminHandler{store: store, tokenHash: sha256.Sum256([]byte(token)), log: o.logger, mux: http.NewServeMux()}
	h.mux.HandleFunc("POST /v1/sessions", h.create)
	h.mux.HandleFunc("GET /v1/sessions/{id}", h.get)
	h.mux.HandleFunc("DELETE /v1/sessions/{id}", h.revoke)
	h.mux.HandleFunc("GET /v1/subjects/{subject}/sessions", h.list)
	h.mux.HandleFunc("DELETE /v1/subjects/{subject}/sessions", h.revokeSubject)
	h.mux.HandleFunc("/v1/sessions", methodNotAllowed("POST"))
	h.mux.HandleFunc("/v1/sessions/{id}", methodNotAllowed("GET, DELETE"))
	h.mux.HandleFunc("/v1/subjects/{subject}/sessions", methodNotAllowed("GET, DELETE"))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, adminError{"no such endpoint"})
	})
	return h, nil
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", allow)
		writeJSON(w, http.StatusMethodNotAllowed, adminError{"method not allowed"})
	}
}

// ServeHTTP implements http.Handler.
func (h *AdminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if tok, ok := bearer(r); !ok || !h.tokenOK(tok) {
		fp := ""
		if ok {
			fp = Fingerprint(tok)
		}
		h.log.Warn("session admin: unauthorized request", "remote", r.RemoteAddr, "method", r.Method, "token_sha256", fp)
		w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate-admin"`)
		writeJSON(w, http.StatusUnauthorized, adminError{"missing or invalid admin token"})
		return
	}
	h.mux.ServeHTTP(w, r)
}

func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// tokenOK compares SHA-256 digests in constant time.
func (h *AdminHandler) tokenOK(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], h.tokenHash[:]) == 1
}

func (h *AdminHandler) create(w http.ResponseWriter, r *http.Request) {
	var req AdminCreateRequest
	if status, msg := decodeBody(w, r, &req); status != 0 {
		writeJSON(w, status, adminError{msg})
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			writeJSON(w, http.StatusBadRequest, adminError{`ttl must be a positive duration such as "1h"`})
			return
		}
		ttl = d
	}
	id, rec, err := h.store.Create(r.Context(), NewSession{Subject: req.Subject, Claims: req.Claims, Metadata: req.Metadata, TTL: ttl})
	if err != nil {
		h.fail(w, "create", err)
		return
	}
	h.log.Info("session admin: created", "id_hash", rec.IDHash[:12], "subject", rec.Subject, "expires_at", rec.ExpiresAt)
	writeJSON(w, http.StatusCreated, AdminCreateResponse{SessionID: id, IDHash: rec.IDHash, ExpiresAt: rec.ExpiresAt})
}

func (h *AdminHandler) get(w http.ResponseWriter, r *http.Request) {
	rec, err := h.store.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, "get", err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (h *AdminHandler) revoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := h.store.Revoke(r.Context(), id); err != nil {
		h.fail(w, "revoke", err)
		return
	}
	hh, _ := IDHash(id)
	h.log.Info("session admin: revoked", "id_hash", hh[:12])
	w.WriteHeader(http.StatusNoContent)
}

func (h *AdminHandler) list(w http.ResponseWriter, r *http.Request) {
	subject := r.PathValue("subject")
	if subject == "" {
		writeJSON(w, http.StatusBadRequest, adminError{"subject is required"})
		return
	}
	recs, err := h.store.ListSubject(r.Context(), subject)
	if err != nil {
		h.fail(w, "list", err)
		return
	}
	if recs == nil {
		recs = []Record{}
	}
	writeJSON(w, http.StatusOK, AdminSessions{Sessions: recs})
}

func (h *AdminHandler) revokeSubject(w http.ResponseWriter, r *http.Request) {
	subject := r.PathValue("subject")
	if subject == "" {
		writeJSON(w, http.StatusBadRequest, adminError{"subject is required"})
		return
	}
	n, err := h.store.RevokeSubject(r.Context(), subject)
	if err != nil {
		h.fail(w, "revoke_subject", err)
		return
	}
	h.log.Info("session admin: revoked subject", "subject", subject, "sessions", n)
	w.WriteHeader(http.StatusNoContent)
}

// fail maps a store error to a status and a fixed message.
func (h *AdminHandler) fail(w http.ResponseWriter, op string, err error) {
	if errors.Is(err, ErrInvalid) {
		// ErrInvalid messages are fixed strings naming the field.
		writeJSON(w, http.StatusBadRequest, adminError{err.Error()})
		return
	}
	switch code := reason.Of(err); code {
	case reason.SessionMalformed:
		writeJSON(w, http.StatusBadRequest, adminError{code.Description()})
	case reason.SessionNotFound, reason.SessionExpired:
		writeJSON(w, http.StatusNotFound, adminError{reason.SessionNotFound.Description()})
	case reason.SessionStoreUnavailable:
		h.log.Warn("session admin: store unavailable", "op", op, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, adminError{code.Description()})
	default:
		h.log.Error("session admin: failed", "op", op, "err", err)
		writeJSON(w, http.StatusInternalServerError, adminError{reason.Internal.Description()})
	}
}

// decodeBody reads exactly one JSON object of at most MaxAdminBody bytes
// with no unknown fields. On failure it returns a status and a fixed
// message.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) (int, string) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = terr
			if err == nil {
				err = errTrailing
			}
		}
	}
	var mbe *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return 0, ""
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", MaxAdminBody)
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest, "request body is empty"
	case errors.Is(err, errTrailing):
		return http.StatusBadRequest, "request body must hold exactly one JSON object"
	case errors.As(err, &typeErr):
		return http.StatusBadRequest, "a field of the request body has the wrong type"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return http.StatusBadRequest, "request body has an unknown field"
	default:
		return http.StatusBadRequest, "request body is not valid JSON"
	}
}

var errTrailing = errors.New("trailing data")

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
