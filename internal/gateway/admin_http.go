package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// AdminPathPrefix is where the admin REST API lives; AdminHandler serves every path under it.
const AdminPathPrefix = "/admin/v1/"

// MaxAdminBodyBytes bounds an admin request body (1 MiB); larger bodies get 413.
const MaxAdminBodyBytes = 1 << 20

// MaxAdminUsageLimit is the largest limit GET /admin/v1/usage accepts.
const MaxAdminUsageLimit = 1000

// AdminHandler returns the admin REST API over the gateway's store and secret (see
// NewAdminHandler), counting its answers in strata_gateway_admin_requests_total{code}; mount it
// at AdminPathPrefix. Build it once: each call returns a new handler.
func (g *Gateway) AdminHandler() http.Handler {
	h := NewAdminHandler(NewAdmin(g.st, g.secret), g.log).(*adminHandler)
	h.requests = g.m.adminRequests
	return h
}

// NewAdminHandler returns the admin REST API, documented in docs/admin-openapi.yaml:
//
//	GET  /admin/v1/tenants              scope read     {"object":"list","data":[tenant...]}
//	POST /admin/v1/tenants              scope policy   {"name","rpm","tpm","models"} -> 201 tenant
//	GET  /admin/v1/tenants/{name}/keys  scope read     {"object":"list","data":[api_key...]}
//	POST /admin/v1/tenants/{name}/keys  scope keys     {} -> 201 api_key with "key" (shown once)
//	POST /admin/v1/keys/{id}/revoke     scope keys     -> 200 api_key
//	GET  /admin/v1/usage?tenant=&limit= scope billing  {"object":"list","data":[usage...]}
//
// Every request needs "Authorization: Bearer sk-strata-admin-..." (an admin token, see
// Admin.CreateAdminToken; a tenant key is never accepted): missing, unknown or revoked gives 401
// invalid_api_key, a token without the route's scope 403 insufficient_scope. Bad input gives 400
// naming the field in "param"; unknown tenants and keys 404; an existing tenant name 409; other
// paths 404 and other methods 405; storage errors a detail-free 500. All answers are JSON, errors
// in the OpenAI envelope. Actions are audited with the actor "admin_token:<id>". log may be nil.
func NewAdminHandler(a *Admin, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &adminHandler{a: a, log: log}
}

type adminHandler struct {
	a        *Admin
	log      *slog.Logger
	requests *prometheus.CounterVec // nil: not counted
}

// adminRoute is one route: the scope it needs and its handler.
type adminRoute struct {
	scope string
	fn    func(ctx context.Context, a *Admin, r *http.Request, arg string) (int, any, error)
}

func (h *adminHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.requests != nil {
		sw := &statusWriter{ResponseWriter: w}
		defer func() { h.requests.WithLabelValues(strconv.Itoa(sw.status)).Inc() }()
		w = sw
	}
	tok, err := h.authenticate(r)
	if err != nil {
		writeAdminError(w, h.log, err)
		return
	}
	route, arg, err := matchAdminRoute(r.Method, r.URL.Path)
	if err != nil {
		writeAdminError(w, h.log, err)
		return
	}
	if !tok.HasScope(route.scope) {
		writeAdminError(w, h.log, openai.Errorf(http.StatusForbidden, "permission_error", "insufficient_scope",
			"This admin token lacks the '%s' scope required for this route.", route.scope))
		return
	}
	a := h.a.WithActor("admin_token:" + tok.ID)
	status, body, err := route.fn(r.Context(), a, r, arg)
	if errors.Is(err, ErrNotAudited) && body != nil {
		// The action happened; undoing it is not possible, so answer it and make the gap loud.
		h.log.Error("admin api: action not audited", "err", err)
		err = nil
	}
	if err != nil {
		writeAdminError(w, h.log, err)
		return
	}
	writeAdminJSON(w, status, body)
}

func (h *adminHandler) authenticate(r *http.Request) (*store.AdminToken, error) {
	auth := strings.TrimSpace(r.Header.Get("Authorization"))
	if auth == "" {
		return nil, openai.Unauthorized("You didn't provide an admin token. Send it as 'Authorization: Bearer sk-strata-admin-...'.")
	}
	scheme, cred, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return nil, openai.Unauthorized("Incorrect admin token provided.")
	}
	tok, err := h.a.AuthenticateAdminToken(r.Context(), strings.TrimSpace(cred))
	if errors.Is(err, ErrAdminUnauthorized) {
		return nil, openai.Unauthorized("Incorrect admin token provided.")
	}
	return tok, err
}

// matchAdminRoute finds the route of method and path; arg is the path parameter ({name} or {id}).
func matchAdminRoute(method, path string) (adminRoute, string, error) {
	rest, ok := strings.CutPrefix(path, strings.TrimSuffix(AdminPathPrefix, "/"))
	if !ok {
		return adminRoute{}, "", openai.NotFound("Unknown admin route %s.", path)
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	var routes map[string]adminRoute
	var arg string
	switch {
	case len(parts) == 1 && parts[0] == "tenants":
		routes = map[string]adminRoute{http.MethodGet: {ScopeRead, adminListTenants}, http.MethodPost: {ScopePolicy, adminCreateTenant}}
	case len(parts) == 3 && parts[0] == "tenants" && parts[1] != "" && parts[2] == "keys":
		arg = parts[1]
		routes = map[string]adminRoute{http.MethodGet: {ScopeRead, adminListKeys}, http.MethodPost: {ScopeKeys, adminCreateKey}}
	case len(parts) == 3 && parts[0] == "keys" && parts[1] != "" && parts[2] == "revoke":
		arg = parts[1]
		routes = map[string]adminRoute{http.MethodPost: {ScopeKeys, adminRevokeKey}}
	case len(parts) == 1 && parts[0] == "usage":
		routes = map[string]adminRoute{http.MethodGet: {ScopeBilling, adminUsage}}
	default:
		return adminRoute{}, "", openai.NotFound("Unknown admin route %s.", path)
	}
	route, ok := routes[method]
	if !ok {
		return adminRoute{}, "", openai.Errorf(http.StatusMethodNotAllowed, openai.TypeInvalidRequest, "method_not_allowed",
			"Method %s is not allowed on %s.", method, path)
	}
	return route, arg, nil
}

// AdminTenant is a tenant on the admin API's wire.
type AdminTenant struct {
	ID         string   `json:"id"`
	Object     string   `json:"object"` // "tenant"
	Name       string   `json:"name"`
	ExternalID string   `json:"external_id"`
	Tier       string   `json:"tier"`
	RPM        int      `json:"rpm"`
	TPM        int      `json:"tpm"`
	Models     []string `json:"models"`
	CreatedAt  int64    `json:"created_at"` // Unix seconds
}

// AdminKey is a tenant API key on the admin API's wire; Key is set only in the answer that
// created it.
type AdminKey struct {
	ID         string `json:"id"`
	Object     string `json:"object"` // "api_key"
	TenantID   string `json:"tenant_id"`
	Prefix     string `json:"prefix"`
	Key        string `json:"key,omitempty"`
	CreatedAt  int64  `json:"created_at"`   // Unix seconds
	RevokedAt  *int64 `json:"revoked_at"`   // Unix seconds, null when not revoked
	LastUsedAt *int64 `json:"last_used_at"` // Unix seconds, null when never used
}

// AdminUsage is one usage record on the admin API's wire.
type AdminUsage struct {
	Object           string `json:"object"` // "usage_record"
	RequestID        string `json:"request_id"`
	TenantID         string `json:"tenant_id"`
	KeyID            string `json:"key_id"`
	Model            string `json:"model"`
	Endpoint         string `json:"endpoint"`
	GPU              string `json:"gpu"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CachedTokens     int64  `json:"cached_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TTFTMillis       int64  `json:"ttft_ms"`
	DurationMillis   int64  `json:"duration_ms"`
	Status           int    `json:"status"`
	Stream           bool   `json:"stream"`
	Source           string `json:"source"`
	BilledReason     string `json:"billed_reason"`
	CreatedAt        int64  `json:"created_at"` // Unix seconds
}

type adminList[T any] struct {
	Object string `json:"object"` // "list"
	Data   []T    `json:"data"`
}

func toAdminTenant(t *store.Tenant) AdminTenant {
	models := t.Models
	if models == nil {
		models = []string{}
	}
	return AdminTenant{ID: t.ID, Object: "tenant", Name: t.Name, ExternalID: t.ExternalID, Tier: t.Tier, RPM: t.RPM, TPM: t.TPM,
		Models: models, CreatedAt: t.CreatedAt.Unix()}
}

func unixOrNull(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	v := t.Unix()
	return &v
}

func toAdminKey(k *store.APIKey) AdminKey {
	return AdminKey{ID: k.ID, Object: "api_key", TenantID: k.TenantID, Prefix: k.Prefix, CreatedAt: k.CreatedAt.Unix(),
		RevokedAt: unixOrNull(k.RevokedAt), LastUsedAt: unixOrNull(k.LastUsedAt)}
}

// CreateTenantRequest is the body of POST /admin/v1/tenants.
type CreateTenantRequest struct {
	Name   string   `json:"name"`
	RPM    int      `json:"rpm"`
	TPM    int      `json:"tpm"`
	Models []string `json:"models"`
}

// CreateKeyRequest is the body of POST /admin/v1/tenants/{name}/keys: empty for now (the key is
// always generated); an empty body is accepted too.
type CreateKeyRequest struct{}

// ParseCreateTenantRequest decodes and checks a POST /admin/v1/tenants body (JSON object, unknown
// fields rejected). Errors are 400 *openai.Error naming the field in Param: "name" (required, 1 to
// 64 letters, digits, '.', '_', '-'), "rpm" and "tpm" (integers >= 0), "models" (names of 1 to
// 256 characters).
func ParseCreateTenantRequest(body []byte) (*CreateTenantRequest, error) {
	var req CreateTenantRequest
	if err := decodeStrict(body, &req); err != nil {
		return nil, err
	}
	switch {
	case req.Name == "":
		return nil, openai.MissingParam("name")
	case !tenantName.MatchString(req.Name):
		return nil, openai.InvalidRequest("name", "invalid_value", "'name' must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
	case req.RPM < 0:
		return nil, openai.InvalidRequest("rpm", "invalid_value", "'rpm' must not be negative.")
	case req.TPM < 0:
		return nil, openai.InvalidRequest("tpm", "invalid_value", "'tpm' must not be negative.")
	}
	for _, m := range req.Models {
		if m = strings.TrimSpace(m); m == "" || len(m) > 256 {
			return nil, openai.InvalidRequest("models", "invalid_value", "Each of 'models' must be 1 to 256 characters.")
		}
	}
	return &req, nil
}

// ParseCreateKeyRequest decodes a POST /admin/v1/tenants/{name}/keys body: empty or a JSON object
// without fields; anything else is a 400 *openai.Error.
func ParseCreateKeyRequest(body []byte) (*CreateKeyRequest, error) {
	var req CreateKeyRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return &req, nil
	}
	if err := decodeStrict(body, &req); err != nil {
		return nil, err
	}
	return &req, nil
}

// decodeStrict decodes one JSON object into v, rejecting unknown fields, wrong types and trailing
// data with a 400 naming the field where one is known.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return openai.InvalidRequest(typeErr.Field, "invalid_type", "'%s' must be of type %s.", typeErr.Field, typeErr.Type.String())
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return openai.InvalidRequest(field, "unknown_parameter", "Unrecognized request argument supplied: %s", field)
		}
		return openai.InvalidRequest("", "invalid_json", "The request body is not a valid JSON object.")
	}
	if dec.More() {
		return openai.InvalidRequest("", "invalid_json", "The request body holds data after the JSON object.")
	}
	if _, err := dec.Token(); err != io.EOF {
		return openai.InvalidRequest("", "invalid_json", "The request body holds data after the JSON object.")
	}
	return nil
}

func readAdminBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxAdminBodyBytes))
	if err != nil {
		return nil, openai.AsError(err)
	}
	return b, nil
}

func adminListTenants(ctx context.Context, a *Admin, _ *http.Request, _ string) (int, any, error) {
	ts, err := a.ListTenants(ctx)
	if err != nil {
		return 0, nil, err
	}
	out := adminList[AdminTenant]{Object: "list", Data: make([]AdminTenant, 0, len(ts))}
	for i := range ts {
		out.Data = append(out.Data, toAdminTenant(&ts[i]))
	}
	return http.StatusOK, out, nil
}

func adminCreateTenant(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	req, err := ParseCreateTenantRequest(body)
	if err != nil {
		return 0, nil, err
	}
	t, err := a.CreateTenant(ctx, req.Name, req.RPM, req.TPM, req.Models)
	if t == nil {
		return 0, nil, err
	}
	return http.StatusCreated, toAdminTenant(t), err
}

func adminListKeys(ctx context.Context, a *Admin, _ *http.Request, tenant string) (int, any, error) {
	ks, err := a.ListKeys(ctx, tenant)
	if err != nil {
		return 0, nil, err
	}
	out := adminList[AdminKey]{Object: "list", Data: make([]AdminKey, 0, len(ks))}
	for i := range ks {
		out.Data = append(out.Data, toAdminKey(&ks[i]))
	}
	return http.StatusOK, out, nil
}

func adminCreateKey(ctx context.Context, a *Admin, r *http.Request, tenant string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	if _, err := ParseCreateKeyRequest(body); err != nil {
		return 0, nil, err
	}
	key, k, err := a.CreateKey(ctx, tenant, "")
	if k == nil {
		return 0, nil, err
	}
	out := toAdminKey(k)
	out.Key = key
	return http.StatusCreated, out, err
}

func adminRevokeKey(ctx context.Context, a *Admin, _ *http.Request, id string) (int, any, error) {
	revokeErr := a.RevokeKey(ctx, id)
	if revokeErr != nil && !errors.Is(revokeErr, ErrNotAudited) {
		return 0, nil, revokeErr
	}
	k, err := a.st.APIKey(ctx, id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toAdminKey(k), revokeErr
}

func adminUsage(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	q := r.URL.Query()
	limit := DefaultUsageLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAdminUsageLimit {
			return 0, nil, openai.InvalidRequest("limit", "invalid_value", "'limit' must be an integer from 1 to %d.", MaxAdminUsageLimit)
		}
		limit = n
	}
	tenant := q.Get("tenant")
	if tenant != "" && !tenantName.MatchString(tenant) {
		return 0, nil, openai.InvalidRequest("tenant", "invalid_value", "'tenant' is not a valid tenant name.")
	}
	recs, err := a.Usage(ctx, tenant, limit)
	if err != nil {
		return 0, nil, err
	}
	out := adminList[AdminUsage]{Object: "list", Data: make([]AdminUsage, 0, len(recs))}
	for _, u := range recs {
		out.Data = append(out.Data, AdminUsage{Object: "usage_record", RequestID: u.RequestID, TenantID: u.TenantID, KeyID: u.KeyID,
			Model: u.Model, Endpoint: u.Endpoint, GPU: u.GPU, PromptTokens: u.PromptTokens, CachedTokens: u.CachedTokens,
			CompletionTokens: u.CompletionTokens, TTFTMillis: u.TTFT.Milliseconds(), DurationMillis: u.Duration.Milliseconds(),
			Status: u.Status, Stream: u.Stream, Source: u.Source, BilledReason: u.BilledReason, CreatedAt: u.CreatedAt.Unix()})
	}
	return http.StatusOK, out, nil
}

// statusWriter records the status of an admin answer (always written with WriteHeader).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func writeAdminJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeAdminError is the one place the admin API maps errors to statuses: *openai.Error keeps its
// own, store.ErrNotFound is 404, store.ErrExists 409, anything else a detail-free 500 (logged).
func writeAdminError(w http.ResponseWriter, log *slog.Logger, err error) {
	var oe *openai.Error
	switch {
	case errors.As(err, &oe):
	case errors.Is(err, store.ErrNotFound):
		err = openai.NotFound("The requested tenant or key does not exist.")
	case errors.Is(err, store.ErrExists):
		err = openai.Errorf(http.StatusConflict, openai.TypeInvalidRequest, "already_exists", "A tenant with this name already exists.")
	default:
		log.Error("admin api", "err", err)
	}
	openai.WriteError(w, err)
}
