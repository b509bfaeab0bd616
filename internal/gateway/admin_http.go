package gateway

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-inference/strata/internal/config"
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
	a := NewAdmin(g.st, g.secret).WithConfig(g.cfg)
	a.onChange = g.iolog.invalidate
	h := NewAdminHandler(a, g.log).(*adminHandler)
	h.requests = g.m.adminRequests
	h.refused = func() { g.authAud.refused("admin_token", g.clk.Now()) }
	return h
}

// NewAdminHandler returns the admin REST API, documented route by route in
// docs/admin-openapi.yaml (adminRoutes is the table): tenants (create, read, PATCH external_id,
// limits, models, iolog), keys (create with expiry, read, PATCH expiry, revoke, rotate with a
// grace period), policy overrides per tenant and key (tiers are read from the config), the price
// book with per-tier overrides, the GPU cost table, usage and bills (JSON, or CSV with
// ?format=csv or Accept: text/csv), re-rating a period, and the audit log with verification.
// Scopes: read (reads of tenants, keys, policy, tiers, I/O log, audit), keys (key changes),
// policy (tenant and policy changes), billing (prices, GPU costs, usage, bills).
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
	refused  func()                 // nil: refused admin authentications are not audited
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
		if h.refused != nil && openai.AsError(err).Status == http.StatusUnauthorized {
			h.refused()
		}
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

// adminRouteDef is one route of the admin API: method, path pattern under /admin/v1 (segments in
// braces match one non-empty segment, the path parameter), scope and handler.
type adminRouteDef struct {
	method, pattern string
	adminRoute
}

// adminRoutes is every route of the admin API; docs/admin-openapi.yaml documents exactly these
// (TestAdminOpenAPIMatchesRoutes).
var adminRoutes = []adminRouteDef{
	{http.MethodGet, "/tenants", adminRoute{ScopeRead, adminListTenants}},
	{http.MethodPost, "/tenants", adminRoute{ScopePolicy, adminCreateTenant}},
	{http.MethodGet, "/tenants/{name}", adminRoute{ScopeRead, adminGetTenant}},
	{http.MethodPatch, "/tenants/{name}", adminRoute{ScopePolicy, adminPatchTenant}},
	{http.MethodGet, "/tenants/{name}/keys", adminRoute{ScopeRead, adminListKeys}},
	{http.MethodPost, "/tenants/{name}/keys", adminRoute{ScopeKeys, adminCreateKey}},
	{http.MethodGet, "/tenants/{name}/policy", adminRoute{ScopeRead, adminGetTenantPolicy}},
	{http.MethodPut, "/tenants/{name}/policy", adminRoute{ScopePolicy, adminPutTenantPolicy}},
	{http.MethodGet, "/tenants/{name}/iolog", adminRoute{ScopeRead, adminTenantIOLog}},
	{http.MethodGet, "/keys/{id}", adminRoute{ScopeRead, adminGetKey}},
	{http.MethodPatch, "/keys/{id}", adminRoute{ScopeKeys, adminPatchKey}},
	{http.MethodPost, "/keys/{id}/revoke", adminRoute{ScopeKeys, adminRevokeKey}},
	{http.MethodPost, "/keys/{id}/rotate", adminRoute{ScopeKeys, adminRotateKey}},
	{http.MethodGet, "/keys/{id}/policy", adminRoute{ScopeRead, adminGetKeyPolicy}},
	{http.MethodPut, "/keys/{id}/policy", adminRoute{ScopePolicy, adminPutKeyPolicy}},
	{http.MethodGet, "/tiers", adminRoute{ScopeRead, adminListTiers}},
	{http.MethodGet, "/prices", adminRoute{ScopeBilling, adminListPrices}},
	{http.MethodPost, "/prices", adminRoute{ScopeBilling, adminSetPrice}},
	{http.MethodGet, "/gpu-costs", adminRoute{ScopeBilling, adminListGPUCosts}},
	{http.MethodPost, "/gpu-costs", adminRoute{ScopeBilling, adminSetGPUCost}},
	{http.MethodGet, "/usage", adminRoute{ScopeBilling, adminUsage}},
	{http.MethodGet, "/bills", adminRoute{ScopeBilling, adminGetBill}},
	{http.MethodPost, "/bills/rerate", adminRoute{ScopeBilling, adminRerate}},
	{http.MethodGet, "/bills/history", adminRoute{ScopeBilling, adminBillHistory}},
	{http.MethodGet, "/audit", adminRoute{ScopeRead, adminListAudit}},
	{http.MethodPost, "/audit/verify", adminRoute{ScopeRead, adminVerifyAudit}},
}

// matchAdminRoute finds the route of method and path; arg is the path parameter ({name} or {id}).
func matchAdminRoute(method, path string) (adminRoute, string, error) {
	rest, ok := strings.CutPrefix(path, strings.TrimSuffix(AdminPathPrefix, "/"))
	if !ok || (rest != "" && rest[0] != '/') {
		return adminRoute{}, "", openai.NotFound("Unknown admin route %s.", path)
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	pathFound := false
	for _, d := range adminRoutes {
		arg, ok := matchPattern(d.pattern, parts)
		if !ok {
			continue
		}
		pathFound = true
		if d.method == method {
			return d.adminRoute, arg, nil
		}
	}
	if pathFound {
		return adminRoute{}, "", openai.Errorf(http.StatusMethodNotAllowed, openai.TypeInvalidRequest, "method_not_allowed",
			"Method %s is not allowed on %s.", method, path)
	}
	return adminRoute{}, "", openai.NotFound("Unknown admin route %s.", path)
}

// matchPattern matches path segments against pattern ("/keys/{id}/rotate"), returning the value
// of the braced segment.
func matchPattern(pattern string, parts []string) (string, bool) {
	segs := strings.Split(strings.Trim(pattern, "/"), "/")
	if len(segs) != len(parts) {
		return "", false
	}
	var arg string
	for i, s := range segs {
		if strings.HasPrefix(s, "{") {
			if parts[i] == "" {
				return "", false
			}
			arg = parts[i]
			continue
		}
		if s != parts[i] {
			return "", false
		}
	}
	return arg, true
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
	IOLog      bool     `json:"iolog"`
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
	RevokedAt  *int64 `json:"revoked_at"`   // Unix seconds, null when not revoked (a rotated key: end of its grace)
	LastUsedAt *int64 `json:"last_used_at"` // Unix seconds, null when never used (written behind: up to a minute late)
	ExpiresAt  *int64 `json:"expires_at"`   // Unix seconds, null when it never expires
	ReplacedBy string `json:"replaced_by"`  // id of the key a rotation replaced it with, "" when not rotated
	Active     bool   `json:"active"`       // authenticates now (not revoked, not expired)
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
		Models: models, IOLog: t.IOLog, CreatedAt: t.CreatedAt.Unix()}
}

func unixOrNull(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	v := t.Unix()
	return &v
}

func toAdminKey(k *store.APIKey, now time.Time) AdminKey {
	return AdminKey{ID: k.ID, Object: "api_key", TenantID: k.TenantID, Prefix: k.Prefix, CreatedAt: k.CreatedAt.Unix(),
		RevokedAt: unixOrNull(k.RevokedAt), LastUsedAt: unixOrNull(k.LastUsedAt), ExpiresAt: unixOrNull(k.ExpiresAt),
		ReplacedBy: k.ReplacedBy, Active: k.Valid(now)}
}

// CreateTenantRequest is the body of POST /admin/v1/tenants.
type CreateTenantRequest struct {
	Name       string   `json:"name"`
	ExternalID string   `json:"external_id"`
	Tier       string   `json:"tier"`
	RPM        int      `json:"rpm"`
	TPM        int      `json:"tpm"`
	Models     []string `json:"models"`
	IOLog      bool     `json:"iolog"`
}

// CreateKeyRequest is the body of POST /admin/v1/tenants/{name}/keys (the key is always
// generated); an empty body is accepted too. ExpiresAt (Unix seconds or RFC 3339) and ExpiresIn
// (a Go duration, "720h") are exclusive; neither: the key never expires.
type CreateKeyRequest struct {
	ExpiresAt *flexTime `json:"expires_at"`
	ExpiresIn string    `json:"expires_in"`
}

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
	case checkExternalID(req.ExternalID) != nil:
		return nil, openai.InvalidRequest("external_id", "invalid_value", "'external_id' must be at most 256 visible ASCII characters.")
	case req.Tier != "" && !tenantName.MatchString(req.Tier):
		return nil, openai.InvalidRequest("tier", "invalid_value", "'tier' must be 1 to 64 letters, digits, '.', '_' or '-'.")
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
	if err := decodeAdmin(body, &req, "expires_at"); err != nil {
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
			field := jsonFieldPath(typeErr.Field)
			return openai.InvalidRequest(field, "invalid_type", "'%s' must be of type %s.", field, typeErr.Type.String())
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

func adminListTenants(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	if ext := r.URL.Query().Get("external_id"); ext != "" {
		out := adminList[AdminTenant]{Object: "list", Data: []AdminTenant{}}
		t, err := a.st.TenantByExternalID(ctx, ext)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return 0, nil, err
		default:
			out.Data = append(out.Data, toAdminTenant(t))
		}
		return http.StatusOK, out, nil
	}
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
	if err := a.checkTier(req.Tier); err != nil {
		return 0, nil, err
	}
	t, err := a.CreateTenantSpec(ctx, TenantSpec{Name: req.Name, ExternalID: req.ExternalID, Tier: req.Tier, RPM: req.RPM, TPM: req.TPM,
		Models: req.Models, IOLog: req.IOLog})
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
		out.Data = append(out.Data, toAdminKey(&ks[i], a.now()))
	}
	return http.StatusOK, out, nil
}

func adminCreateKey(ctx context.Context, a *Admin, r *http.Request, tenant string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	req, err := ParseCreateKeyRequest(body)
	if err != nil {
		return 0, nil, err
	}
	var expires time.Time
	switch {
	case req.ExpiresAt != nil && req.ExpiresIn != "":
		return 0, nil, openai.InvalidRequest("expires_in", "invalid_value", "Give 'expires_at' or 'expires_in', not both.")
	case req.ExpiresAt != nil:
		expires = req.ExpiresAt.t
	case req.ExpiresIn != "":
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			return 0, nil, openai.InvalidRequest("expires_in", "invalid_value", "'expires_in' must be a positive duration such as \"720h\".")
		}
		expires = a.now().Add(d)
	}
	if !expires.IsZero() && !expires.After(a.now()) {
		return 0, nil, openai.InvalidRequest("expires_at", "invalid_value", "'expires_at' must be in the future.")
	}
	key, k, err := a.CreateKeyExpiring(ctx, tenant, expires)
	if k == nil {
		return 0, nil, err
	}
	out := toAdminKey(k, a.now())
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
	return http.StatusOK, toAdminKey(k, a.now()), revokeErr
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
	asCSV, err := wantsCSV(r)
	if err != nil {
		return 0, nil, err
	}
	recs, err := a.Usage(ctx, tenant, limit)
	if err != nil {
		return 0, nil, err
	}
	if asCSV {
		var b bytes.Buffer
		if err := WriteUsageCSV(&b, recs); err != nil {
			return 0, nil, err
		}
		return http.StatusOK, csvBody{b: b.Bytes(), filename: "usage.csv"}, nil
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
	if c, ok := body.(csvBody); ok {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="`+c.filename+`"`)
		w.WriteHeader(status)
		_, _ = w.Write(c.b)
		return
	}
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
		err = openai.NotFound("The requested tenant or key does not exist (or the key is revoked or expired).")
	case errors.Is(err, store.ErrExists):
		err = openai.Errorf(http.StatusConflict, openai.TypeInvalidRequest, "already_exists", "The object already exists (a tenant name or external id in use, or a key already rotated).")
	default:
		log.Error("admin api", "err", err)
	}
	openai.WriteError(w, err)
}

// flexTime is a time on the admin API's input: Unix seconds (a JSON number) or an RFC 3339
// string.
type flexTime struct{ t time.Time }

func (f *flexTime) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		if n < 0 || n > 253402300799 { // 9999-12-31T23:59:59Z
			return errors.New("time out of range")
		}
		f.t = time.Unix(n, 0).UTC()
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("want Unix seconds or an RFC 3339 string")
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return errors.New("want Unix seconds or an RFC 3339 string")
	}
	f.t = t
	return nil
}

// decodeAdmin is decodeStrict with flexTime errors named by field: a field whose time does not
// parse gives 400 naming it.
func decodeAdmin(body []byte, v any, timeFields ...string) error {
	err := decodeStrict(body, v)
	var oe *openai.Error
	if errors.As(err, &oe) && oe.Param == "" && len(timeFields) > 0 {
		// json reports UnmarshalJSON errors without the field; find which time field is bad.
		var raw map[string]json.RawMessage
		if json.Unmarshal(body, &raw) == nil {
			for _, f := range timeFields {
				if r, ok := raw[f]; ok && string(r) != "null" {
					var ft flexTime
					if ft.UnmarshalJSON(r) != nil {
						return openai.InvalidRequest(f, "invalid_value", "'%s' must be Unix seconds or an RFC 3339 time.", f)
					}
				}
			}
		}
	}
	return err
}

func (a *Admin) checkTier(tier string) error {
	if tier == "" || a.cfg == nil {
		return nil
	}
	if _, ok := a.cfg.Tiers[tier]; !ok {
		return openai.InvalidRequest("tier", "invalid_value", "Tier '%s' is not configured (gateway.tiers).", tier)
	}
	return nil
}

// policyError turns a config.Policy.Validate error ("field: message") into a 400 naming the field.
func policyError(err error) error {
	if err == nil {
		return nil
	}
	field, msg, ok := strings.Cut(err.Error(), ": ")
	if !ok {
		field, msg = "", err.Error()
	}
	return openai.InvalidRequest(field, "invalid_value", "'%s': %s", field, msg)
}

// checkPolicy validates p for the admin API: config.Policy.Validate, then (with a configuration)
// every "@group" of models must be a configured model group.
func (a *Admin) checkPolicy(p *config.Policy) error {
	if err := policyError(p.Validate()); err != nil {
		return err
	}
	if a.cfg == nil {
		return nil
	}
	for _, m := range p.Models {
		if g, ok := strings.CutPrefix(m, ModelGroupPrefix); ok {
			if _, known := a.cfg.ModelGroups[g]; !known {
				return openai.InvalidRequest("models", "invalid_value", "Model group '%s' is not configured (gateway.model_groups).", g)
			}
		}
	}
	return nil
}

// AdminPolicy is a tenant's or key's policy on the admin API's wire: the overrides as stored
// (absent fields inherit) and, for reads, the effective policy after tier, tenant and key.
type AdminPolicy struct {
	Object    string         `json:"object"` // "policy"
	Tenant    string         `json:"tenant,omitempty"`
	KeyID     string         `json:"key_id,omitempty"`
	Tier      string         `json:"tier"`
	Overrides config.Policy  `json:"overrides"`
	Effective *config.Policy `json:"effective,omitempty"`
}

// PolicyRequest is the body of PUT /admin/v1/tenants/{name}/policy and /keys/{id}/policy: the
// overrides (config.Policy's fields at the top level) and, for a tenant, its tier. The whole
// override set is replaced; absent fields inherit.
type PolicyRequest struct {
	Tier *string `json:"tier"`
	config.Policy
}

func (a *Admin) effectivePolicy(t *store.Tenant, k *store.APIKey) config.Policy {
	var tiers map[string]config.Policy
	tier := t.Tier
	if a.cfg != nil {
		tiers = a.cfg.Tiers
		tier = a.effectiveTier(t)
	}
	var legacy config.Policy
	if t.RPM > 0 {
		legacy.RPM = ptr64(int64(t.RPM))
	}
	if t.TPM > 0 {
		legacy.TPM = ptr64(int64(t.TPM))
	}
	if len(t.Models) > 0 {
		legacy.Models = t.Models
	}
	e := tiers[tier].Over(legacy).Over(t.Policy)
	if k != nil {
		e = e.Over(k.Policy)
	}
	return e
}

func adminGetTenant(ctx context.Context, a *Admin, _ *http.Request, name string) (int, any, error) {
	t, err := a.Tenant(ctx, name)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toAdminTenant(t), nil
}

// PatchTenantRequest is the body of PATCH /admin/v1/tenants/{name}: absent fields are unchanged.
type PatchTenantRequest struct {
	ExternalID *string   `json:"external_id"`
	RPM        *int      `json:"rpm"`
	TPM        *int      `json:"tpm"`
	Models     *[]string `json:"models"`
	IOLog      *bool     `json:"iolog"`
}

func adminPatchTenant(ctx context.Context, a *Admin, r *http.Request, name string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	var req PatchTenantRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	switch {
	case req.ExternalID != nil && checkExternalID(*req.ExternalID) != nil:
		return 0, nil, openai.InvalidRequest("external_id", "invalid_value", "'external_id' must be at most 256 visible ASCII characters.")
	case req.RPM != nil && *req.RPM < 0:
		return 0, nil, openai.InvalidRequest("rpm", "invalid_value", "'rpm' must not be negative.")
	case req.TPM != nil && *req.TPM < 0:
		return 0, nil, openai.InvalidRequest("tpm", "invalid_value", "'tpm' must not be negative.")
	}
	if req.Models != nil {
		for _, m := range *req.Models {
			if m = strings.TrimSpace(m); m == "" || len(m) > 256 {
				return 0, nil, openai.InvalidRequest("models", "invalid_value", "Each of 'models' must be 1 to 256 characters.")
			}
		}
	}
	t, err := a.UpdateTenant(ctx, name, store.TenantUpdate{ExternalID: req.ExternalID, RPM: req.RPM, TPM: req.TPM, Models: req.Models, IOLog: req.IOLog})
	if t == nil {
		return 0, nil, err
	}
	return http.StatusOK, toAdminTenant(t), err
}

func adminGetTenantPolicy(ctx context.Context, a *Admin, _ *http.Request, name string) (int, any, error) {
	t, err := a.Tenant(ctx, name)
	if err != nil {
		return 0, nil, err
	}
	e := a.effectivePolicy(t, nil)
	return http.StatusOK, AdminPolicy{Object: "policy", Tenant: t.Name, Tier: t.Tier, Overrides: t.Policy, Effective: &e}, nil
}

func adminPutTenantPolicy(ctx context.Context, a *Admin, r *http.Request, name string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	var req PolicyRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	tier := ""
	if req.Tier != nil {
		tier = *req.Tier
	}
	if tier != "" && !tenantName.MatchString(tier) {
		return 0, nil, openai.InvalidRequest("tier", "invalid_value", "'tier' must be 1 to 64 letters, digits, '.', '_' or '-'.")
	}
	if err := a.checkTier(tier); err != nil {
		return 0, nil, err
	}
	if err := a.checkPolicy(&req.Policy); err != nil {
		return 0, nil, err
	}
	setErr := a.SetTenantPolicy(ctx, name, tier, req.Policy)
	if setErr != nil && !errors.Is(setErr, ErrNotAudited) {
		return 0, nil, setErr
	}
	status, out, err := adminGetTenantPolicy(ctx, a, r, name)
	if err != nil {
		return 0, nil, err
	}
	return status, out, setErr
}

func adminGetKey(ctx context.Context, a *Admin, _ *http.Request, id string) (int, any, error) {
	k, err := a.Key(ctx, id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toAdminKey(k, a.now()), nil
}

// PatchKeyRequest is the body of PATCH /admin/v1/keys/{id}: expires_at (Unix seconds or RFC 3339;
// null: never expires).
type PatchKeyRequest struct {
	ExpiresAt *flexTime `json:"expires_at"`
}

func adminPatchKey(ctx context.Context, a *Admin, r *http.Request, id string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	var req PatchKeyRequest
	if err := decodeAdmin(body, &req, "expires_at"); err != nil {
		return 0, nil, err
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(body, &raw)
	if _, ok := raw["expires_at"]; !ok {
		return 0, nil, openai.MissingParam("expires_at")
	}
	var at time.Time
	if req.ExpiresAt != nil {
		at = req.ExpiresAt.t
	}
	k, err := a.SetKeyExpiry(ctx, id, at)
	if k == nil {
		return 0, nil, err
	}
	return http.StatusOK, toAdminKey(k, a.now()), err
}

// RotateKeyRequest is the body of POST /admin/v1/keys/{id}/rotate: how long the old key keeps
// working (a Go duration, "24h"; default 0: at once; at most 720h).
type RotateKeyRequest struct {
	GracePeriod string `json:"grace_period"`
}

// AdminRotation answers a rotation: the new key (with its plaintext "key", shown once) and the
// old key as updated.
type AdminRotation struct {
	Object string   `json:"object"` // "api_key.rotation"
	New    AdminKey `json:"new_key"`
	Old    AdminKey `json:"old_key"`
}

func adminRotateKey(ctx context.Context, a *Admin, r *http.Request, id string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	var req RotateKeyRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return 0, nil, err
		}
	}
	var grace time.Duration
	if req.GracePeriod != "" {
		if grace, err = time.ParseDuration(req.GracePeriod); err != nil || grace < 0 || grace > MaxGracePeriod {
			return 0, nil, openai.InvalidRequest("grace_period", "invalid_value", "'grace_period' must be a duration from 0s to %s, such as \"24h\".", MaxGracePeriod)
		}
	}
	key, next, old, err := a.RotateKey(ctx, id, grace)
	if next == nil {
		return 0, nil, err
	}
	out := AdminRotation{Object: "api_key.rotation", New: toAdminKey(next, a.now()), Old: toAdminKey(old, a.now())}
	out.New.Key = key
	return http.StatusOK, out, err
}

func adminGetKeyPolicy(ctx context.Context, a *Admin, _ *http.Request, id string) (int, any, error) {
	k, err := a.Key(ctx, id)
	if err != nil {
		return 0, nil, err
	}
	t, err := a.st.Tenant(ctx, k.TenantID)
	if err != nil {
		return 0, nil, err
	}
	e := a.effectivePolicy(t, k)
	return http.StatusOK, AdminPolicy{Object: "policy", Tenant: t.Name, KeyID: k.ID, Tier: t.Tier, Overrides: k.Policy, Effective: &e}, nil
}

func adminPutKeyPolicy(ctx context.Context, a *Admin, r *http.Request, id string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	var req PolicyRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	if req.Tier != nil {
		return 0, nil, openai.InvalidRequest("tier", "unknown_parameter", "A key has no tier of its own; set the tenant's.")
	}
	if err := a.checkPolicy(&req.Policy); err != nil {
		return 0, nil, err
	}
	setErr := a.SetKeyPolicy(ctx, id, req.Policy)
	if setErr != nil && !errors.Is(setErr, ErrNotAudited) {
		return 0, nil, setErr
	}
	status, out, err := adminGetKeyPolicy(ctx, a, r, id)
	if err != nil {
		return 0, nil, err
	}
	return status, out, setErr
}

// AdminTier is a configured tier on the admin API's wire (tiers are configuration: read-only here).
type AdminTier struct {
	Object  string        `json:"object"` // "tier"
	Name    string        `json:"name"`
	Default bool          `json:"default"`
	Policy  config.Policy `json:"policy"`
	// SLO targets of the tier in seconds (0: none).
	TTFTSLOSeconds float64 `json:"ttft_slo_seconds"`
	E2ESLOSeconds  float64 `json:"e2e_slo_seconds"`
}

// AdminTiers lists the tiers and the model groups of the configuration.
type AdminTiers struct {
	Object      string              `json:"object"` // "list"
	Data        []AdminTier         `json:"data"`
	ModelGroups map[string][]string `json:"model_groups"`
}

func adminListTiers(_ context.Context, a *Admin, _ *http.Request, _ string) (int, any, error) {
	out := AdminTiers{Object: "list", Data: []AdminTier{}, ModelGroups: map[string][]string{}}
	if a.cfg != nil {
		for _, name := range slices.Sorted(maps.Keys(a.cfg.Tiers)) {
			slo := a.cfg.SLO.Target(name)
			out.Data = append(out.Data, AdminTier{Object: "tier", Name: name, Default: name == a.cfg.DefaultTier, Policy: a.cfg.Tiers[name],
				TTFTSLOSeconds: slo.TTFT.D().Seconds(), E2ESLOSeconds: slo.E2E.D().Seconds()})
		}
		if a.cfg.ModelGroups != nil {
			out.ModelGroups = a.cfg.ModelGroups
		}
	}
	return http.StatusOK, out, nil
}

// AdminPrice is a price book entry on the admin API's wire: micro-USD per million tokens; Tier ""
// is the general book.
type AdminPrice struct {
	Object       string `json:"object"` // "price"
	Model        string `json:"model"`
	Tier         string `json:"tier"`
	EffectiveAt  int64  `json:"effective_at"` // Unix seconds
	InputMicros  int64  `json:"input_micros"`
	CachedMicros int64  `json:"cached_micros"`
	OutputMicros int64  `json:"output_micros"`
}

func toAdminPrice(tier string, p *store.Price) AdminPrice {
	return AdminPrice{Object: "price", Model: p.Model, Tier: tier, EffectiveAt: p.EffectiveAt.Unix(), InputMicros: p.InputMicros,
		CachedMicros: p.CachedMicros, OutputMicros: p.OutputMicros}
}

func adminListPrices(ctx context.Context, a *Admin, _ *http.Request, _ string) (int, any, error) {
	ps, err := a.Prices(ctx)
	if err != nil {
		return 0, nil, err
	}
	tps, err := a.TierPrices(ctx)
	if err != nil {
		return 0, nil, err
	}
	out := adminList[AdminPrice]{Object: "list", Data: make([]AdminPrice, 0, len(ps)+len(tps))}
	for i := range ps {
		out.Data = append(out.Data, toAdminPrice("", &ps[i]))
	}
	for i := range tps {
		out.Data = append(out.Data, toAdminPrice(tps[i].Tier, &tps[i].Price))
	}
	return http.StatusOK, out, nil
}

// SetPriceRequest is the body of POST /admin/v1/prices. EffectiveAt defaults to now; Tier ""
// sets the general price book.
type SetPriceRequest struct {
	Model        string    `json:"model"`
	Tier         string    `json:"tier"`
	EffectiveAt  *flexTime `json:"effective_at"`
	InputMicros  *int64    `json:"input_micros"`
	CachedMicros *int64    `json:"cached_micros"`
	OutputMicros *int64    `json:"output_micros"`
}

func adminSetPrice(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	var req SetPriceRequest
	if err := decodeAdmin(body, &req, "effective_at"); err != nil {
		return 0, nil, err
	}
	if req.Model == "" {
		return 0, nil, openai.MissingParam("model")
	}
	if len(req.Model) > 256 {
		return 0, nil, openai.InvalidRequest("model", "invalid_value", "'model' must be 1 to 256 characters.")
	}
	if req.Tier != "" && !tenantName.MatchString(req.Tier) {
		return 0, nil, openai.InvalidRequest("tier", "invalid_value", "'tier' must be 1 to 64 letters, digits, '.', '_' or '-'.")
	}
	if err := a.checkTier(req.Tier); err != nil {
		return 0, nil, err
	}
	for _, f := range []struct {
		name string
		v    *int64
	}{{"input_micros", req.InputMicros}, {"cached_micros", req.CachedMicros}, {"output_micros", req.OutputMicros}} {
		if f.v == nil {
			return 0, nil, openai.MissingParam(f.name)
		}
		if *f.v < 0 || *f.v > maxPriceMicros {
			return 0, nil, openai.InvalidRequest(f.name, "invalid_value", "'%s' must be between 0 and %d micro-USD per million tokens.", f.name, int64(maxPriceMicros))
		}
	}
	eff := a.now()
	if req.EffectiveAt != nil {
		eff = req.EffectiveAt.t
	}
	if req.Tier != "" {
		p, err := a.SetTierPrice(ctx, req.Tier, req.Model, eff, *req.InputMicros, *req.CachedMicros, *req.OutputMicros)
		if p == nil {
			return 0, nil, err
		}
		return http.StatusCreated, toAdminPrice(p.Tier, &p.Price), err
	}
	p, err := a.SetPrice(ctx, req.Model, eff, *req.InputMicros, *req.CachedMicros, *req.OutputMicros)
	if p == nil {
		return 0, nil, err
	}
	return http.StatusCreated, toAdminPrice("", p), err
}

// AdminGPUCost is a GPU cost table entry on the admin API's wire.
type AdminGPUCost struct {
	Object        string `json:"object"` // "gpu_cost"
	GPU           string `json:"gpu"`
	EffectiveAt   int64  `json:"effective_at"` // Unix seconds
	MicrosPerHour int64  `json:"micros_per_hour"`
}

func adminListGPUCosts(ctx context.Context, a *Admin, _ *http.Request, _ string) (int, any, error) {
	cs, err := a.GPUCosts(ctx)
	if err != nil {
		return 0, nil, err
	}
	out := adminList[AdminGPUCost]{Object: "list", Data: make([]AdminGPUCost, 0, len(cs))}
	for _, c := range cs {
		out.Data = append(out.Data, AdminGPUCost{Object: "gpu_cost", GPU: c.GPU, EffectiveAt: c.EffectiveAt.Unix(), MicrosPerHour: c.MicrosPerHour})
	}
	return http.StatusOK, out, nil
}

// SetGPUCostRequest is the body of POST /admin/v1/gpu-costs. EffectiveAt defaults to now.
type SetGPUCostRequest struct {
	GPU           string    `json:"gpu"`
	EffectiveAt   *flexTime `json:"effective_at"`
	MicrosPerHour *int64    `json:"micros_per_hour"`
}

func adminSetGPUCost(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	var req SetGPUCostRequest
	if err := decodeAdmin(body, &req, "effective_at"); err != nil {
		return 0, nil, err
	}
	switch {
	case req.GPU == "":
		return 0, nil, openai.MissingParam("gpu")
	case len(req.GPU) > 64:
		return 0, nil, openai.InvalidRequest("gpu", "invalid_value", "'gpu' must be 1 to 64 characters.")
	case req.MicrosPerHour == nil:
		return 0, nil, openai.MissingParam("micros_per_hour")
	case *req.MicrosPerHour < 0 || *req.MicrosPerHour > maxGPUCostMicros:
		return 0, nil, openai.InvalidRequest("micros_per_hour", "invalid_value", "'micros_per_hour' must be between 0 and %d.", int64(maxGPUCostMicros))
	}
	eff := a.now()
	if req.EffectiveAt != nil {
		eff = req.EffectiveAt.t
	}
	c, err := a.SetGPUCost(ctx, req.GPU, eff, *req.MicrosPerHour)
	if c == nil {
		return 0, nil, err
	}
	return http.StatusCreated, AdminGPUCost{Object: "gpu_cost", GPU: c.GPU, EffectiveAt: c.EffectiveAt.Unix(), MicrosPerHour: c.MicrosPerHour}, err
}

// wantsCSV reports whether the caller asked for CSV: ?format=csv, or an Accept header that prefers
// text/csv (RFC 4180's media type) to application/json. ?format=json forces JSON; another format is
// a 400.
func wantsCSV(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "csv":
		return true, nil
	case "json":
		return false, nil
	case "":
		return acceptsCSV(r.Header.Values("Accept")), nil
	default:
		return false, openai.InvalidRequest("format", "invalid_value", "'format' must be json or csv.")
	}
}

// csvBody is an admin answer already rendered as CSV.
type csvBody struct {
	b        []byte
	filename string
}

// AdminBillLine is one bill line on the admin API's wire.
type AdminBillLine struct {
	Model            string `json:"model"`
	From             int64  `json:"from"`  // Unix seconds
	Until            int64  `json:"until"` // Unix seconds
	Requests         int64  `json:"requests"`
	FreshTokens      int64  `json:"fresh_input_tokens"`
	CachedTokens     int64  `json:"cached_input_tokens"`
	CompletionTokens int64  `json:"output_tokens"`
	InputMicros      *int64 `json:"input_micros_per_m"` // null when unpriced
	CachedMicros     *int64 `json:"cached_micros_per_m"`
	OutputMicros     *int64 `json:"output_micros_per_m"`
	Unpriced         bool   `json:"unpriced"`
	CostMicros       int64  `json:"cost_micros"`
}

// AdminGPULine is one GPU cost line on the admin API's wire.
type AdminGPULine struct {
	GPU            string `json:"gpu"`
	From           int64  `json:"from"`
	Until          int64  `json:"until"`
	Requests       int64  `json:"requests"`
	DurationMillis int64  `json:"duration_ms"`
	MicrosPerHour  *int64 `json:"micros_per_hour"` // null when the GPU type has no cost entry
	CostMicros     int64  `json:"cost_micros"`
}

// AdminInvoice is a tenant's rated period on the admin API's wire.
type AdminInvoice struct {
	Object        string          `json:"object"` // "bill"
	Tenant        string          `json:"tenant"`
	TenantID      string          `json:"tenant_id"`
	Period        string          `json:"period"` // "YYYY-MM", "" for a custom range
	From          int64           `json:"from"`
	Until         int64           `json:"until"`
	Tier          string          `json:"tier"`
	Requests      int64           `json:"requests"`
	FreshTokens   int64           `json:"fresh_input_tokens"`
	CachedTokens  int64           `json:"cached_input_tokens"`
	OutputTokens  int64           `json:"output_tokens"`
	CostMicros    int64           `json:"cost_micros"`
	CostUSD       string          `json:"cost_usd"` // decimal string, never a float
	GPUCostMicros int64           `json:"gpu_cost_micros"`
	MarginMicros  int64           `json:"margin_micros"`
	Lines         []AdminBillLine `json:"lines"`
	GPU           []AdminGPULine  `json:"gpu"`
}

func toAdminInvoice(inv *Invoice) AdminInvoice {
	out := AdminInvoice{Object: "bill", Tenant: inv.Tenant, TenantID: inv.TenantID, Period: inv.Period, From: inv.From.Unix(), Until: inv.Until.Unix(),
		Tier: inv.Tier, Requests: inv.Requests, FreshTokens: inv.FreshTokens, CachedTokens: inv.CachedTokens, OutputTokens: inv.OutputTokens,
		CostMicros: inv.CostMicros, CostUSD: FormatMicros(inv.CostMicros), GPUCostMicros: inv.GPUCostMicros, MarginMicros: inv.MarginMicros,
		Lines: make([]AdminBillLine, 0, len(inv.Lines)), GPU: make([]AdminGPULine, 0, len(inv.GPU))}
	for _, l := range inv.Lines {
		al := AdminBillLine{Model: l.Model, From: l.From.Unix(), Until: l.Until.Unix(), Requests: l.Requests, FreshTokens: l.FreshTokens,
			CachedTokens: l.CachedTokens, CompletionTokens: l.CompletionTokens, Unpriced: l.Unpriced, CostMicros: l.CostMicros}
		if l.Price != nil {
			al.InputMicros, al.CachedMicros, al.OutputMicros = &l.Price.InputMicros, &l.Price.CachedMicros, &l.Price.OutputMicros
		}
		out.Lines = append(out.Lines, al)
	}
	for _, g := range inv.GPU {
		ag := AdminGPULine{GPU: g.GPU, From: g.From.Unix(), Until: g.Until.Unix(), Requests: g.Requests, DurationMillis: g.DurationMillis, CostMicros: g.CostMicros}
		if !g.Unpriced {
			v := g.MicrosPerHour
			ag.MicrosPerHour = &v
		}
		out.GPU = append(out.GPU, ag)
	}
	return out
}

// invoiceLines is what a stored bill keeps of an invoice: its wire form.
func invoiceLines(inv *Invoice) AdminInvoice { return toAdminInvoice(inv) }

// billPeriodOf reads ?period=YYYY-MM (default: the current month) or ?since=&until= (RFC 3339).
func (a *Admin) billPeriodOf(q url.Values) (string, time.Time, time.Time, error) {
	period, since, until := q.Get("period"), q.Get("since"), q.Get("until")
	loc := a.location()
	switch {
	case since != "" || until != "":
		if period != "" {
			return "", time.Time{}, time.Time{}, openai.InvalidRequest("period", "invalid_value", "Give 'period' or 'since' and 'until', not both.")
		}
		s, err := time.Parse(time.RFC3339, since)
		if err != nil {
			return "", time.Time{}, time.Time{}, openai.InvalidRequest("since", "invalid_value", "'since' must be an RFC 3339 time.")
		}
		u, err := time.Parse(time.RFC3339, until)
		if err != nil {
			return "", time.Time{}, time.Time{}, openai.InvalidRequest("until", "invalid_value", "'until' must be an RFC 3339 time.")
		}
		if !s.Before(u) {
			return "", time.Time{}, time.Time{}, openai.InvalidRequest("until", "invalid_value", "'until' must be after 'since'.")
		}
		return "", s.In(loc), u.In(loc), nil
	case period != "":
		s, u, err := ParseMonth(period, loc)
		if err != nil {
			return "", time.Time{}, time.Time{}, openai.InvalidRequest("period", "invalid_value", "'period' must be a month YYYY-MM.")
		}
		return period, s, u, nil
	default:
		p, s, u := Month(a.now(), loc)
		return p, s, u, nil
	}
}

func adminGetBill(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	q := r.URL.Query()
	asCSV, err := wantsCSV(r)
	if err != nil {
		return 0, nil, err
	}
	tenant := q.Get("tenant")
	if tenant != "" && !tenantName.MatchString(tenant) {
		return 0, nil, openai.InvalidRequest("tenant", "invalid_value", "'tenant' is not a valid tenant name.")
	}
	period, since, until, err := a.billPeriodOf(q)
	if err != nil {
		return 0, nil, err
	}
	if asCSV {
		lines, err := a.Bill(ctx, tenant, since, until)
		if err != nil {
			return 0, nil, err
		}
		var b bytes.Buffer
		if err := WriteBillCSV(&b, lines); err != nil {
			return 0, nil, err
		}
		name := "bill-" + period + ".csv"
		if period == "" {
			name = "bill.csv"
		}
		return http.StatusOK, csvBody{b: b.Bytes(), filename: name}, nil
	}
	if tenant == "" {
		return 0, nil, openai.MissingParam("tenant")
	}
	inv, err := a.Invoice(ctx, tenant, period, since, until)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toAdminInvoice(inv), nil
}

// RerateRequest is the body of POST /admin/v1/bills/rerate.
type RerateRequest struct {
	Tenant string `json:"tenant"`
	Period string `json:"period"`
}

// AdminStoredBill is a stored bill version on the admin API's wire.
type AdminStoredBill struct {
	Object        string          `json:"object"` // "bill.version"
	TenantID      string          `json:"tenant_id"`
	Period        string          `json:"period"`
	Version       int64           `json:"version"`
	RatedAt       int64           `json:"rated_at"` // Unix seconds
	Actor         string          `json:"actor"`
	CostMicros    int64           `json:"cost_micros"`
	GPUCostMicros int64           `json:"gpu_cost_micros"`
	Bill          json.RawMessage `json:"bill"`
}

func toAdminStoredBill(b *store.Bill) *AdminStoredBill {
	if b == nil {
		return nil
	}
	return &AdminStoredBill{Object: "bill.version", TenantID: b.TenantID, Period: b.Period, Version: b.Version, RatedAt: b.RatedAt.Unix(),
		Actor: b.Actor, CostMicros: b.CostMicros, GPUCostMicros: b.GPUCostMicros, Bill: json.RawMessage(b.Lines)}
}

// AdminRerate answers a re-rating: the previous stored version (null for the first) and the new
// one, and the change of the charge.
type AdminRerate struct {
	Object          string           `json:"object"` // "bill.rerate"
	Previous        *AdminStoredBill `json:"previous"`
	Current         *AdminStoredBill `json:"current"`
	DeltaCostMicros int64            `json:"delta_cost_micros"`
}

func adminRerate(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	body, err := readAdminBody(r)
	if err != nil {
		return 0, nil, err
	}
	var req RerateRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, nil, err
	}
	switch {
	case req.Tenant == "":
		return 0, nil, openai.MissingParam("tenant")
	case !tenantName.MatchString(req.Tenant):
		return 0, nil, openai.InvalidRequest("tenant", "invalid_value", "'tenant' is not a valid tenant name.")
	case req.Period == "":
		return 0, nil, openai.MissingParam("period")
	}
	if _, _, err := ParseMonth(req.Period, time.UTC); err != nil {
		return 0, nil, openai.InvalidRequest("period", "invalid_value", "'period' must be a month YYYY-MM.")
	}
	prev, cur, _, err := a.Rerate(ctx, req.Tenant, req.Period)
	if cur == nil {
		return 0, nil, err
	}
	out := AdminRerate{Object: "bill.rerate", Previous: toAdminStoredBill(prev), Current: toAdminStoredBill(cur), DeltaCostMicros: cur.CostMicros}
	if prev != nil {
		out.DeltaCostMicros = cur.CostMicros - prev.CostMicros
	}
	return http.StatusOK, out, err
}

func adminBillHistory(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	q := r.URL.Query()
	tenant, period := q.Get("tenant"), q.Get("period")
	if tenant != "" && !tenantName.MatchString(tenant) {
		return 0, nil, openai.InvalidRequest("tenant", "invalid_value", "'tenant' is not a valid tenant name.")
	}
	if period != "" {
		if _, _, err := ParseMonth(period, time.UTC); err != nil {
			return 0, nil, openai.InvalidRequest("period", "invalid_value", "'period' must be a month YYYY-MM.")
		}
	}
	bs, err := a.Bills(ctx, tenant, period)
	if err != nil {
		return 0, nil, err
	}
	out := adminList[*AdminStoredBill]{Object: "list", Data: make([]*AdminStoredBill, 0, len(bs))}
	for i := range bs {
		out.Data = append(out.Data, toAdminStoredBill(&bs[i]))
	}
	return http.StatusOK, out, nil
}

// AdminAuditEntry is an audit log entry on the admin API's wire; hashes are hex.
type AdminAuditEntry struct {
	Object   string          `json:"object"` // "audit_entry"
	Seq      int64           `json:"seq"`
	At       int64           `json:"at"` // Unix milliseconds (the precision the chain hashes)
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Target   string          `json:"target"`
	Detail   json.RawMessage `json:"detail"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
}

func adminListAudit(ctx context.Context, a *Admin, r *http.Request, _ string) (int, any, error) {
	q := r.URL.Query()
	limit, after := DefaultUsageLimit, int64(0)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAdminUsageLimit {
			return 0, nil, openai.InvalidRequest("limit", "invalid_value", "'limit' must be an integer from 1 to %d.", MaxAdminUsageLimit)
		}
		limit = n
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, nil, openai.InvalidRequest("after", "invalid_value", "'after' must be a sequence number >= 0.")
		}
		after = n
	}
	es, err := a.Audit(ctx)
	if err != nil {
		return 0, nil, err
	}
	out := adminList[AdminAuditEntry]{Object: "list", Data: []AdminAuditEntry{}}
	for _, e := range es {
		if e.Seq <= after {
			continue
		}
		if len(out.Data) == limit {
			break
		}
		detail := json.RawMessage(e.Detail)
		if !json.Valid(detail) {
			detail, _ = json.Marshal(e.Detail)
		}
		out.Data = append(out.Data, AdminAuditEntry{Object: "audit_entry", Seq: e.Seq, At: e.At.UnixMilli(), Actor: e.Actor, Action: e.Action,
			Target: e.Target, Detail: detail, PrevHash: hex.EncodeToString(e.PrevHash), Hash: hex.EncodeToString(e.Hash)})
	}
	return http.StatusOK, out, nil
}

// AdminAuditVerification answers POST /admin/v1/audit/verify.
type AdminAuditVerification struct {
	Object   string `json:"object"` // "audit.verification"
	Verified bool   `json:"verified"`
	Entries  int    `json:"entries"` // entries verified (before the first bad one when not verified)
	Head     string `json:"head"`    // hex hash of the newest entry ("" for an empty log)
	Error    string `json:"error,omitempty"`
}

func adminVerifyAudit(ctx context.Context, a *Admin, _ *http.Request, _ string) (int, any, error) {
	n, verr := a.VerifyAudit(ctx)
	out := AdminAuditVerification{Object: "audit.verification", Verified: verr == nil, Entries: n}
	if verr != nil {
		if !errors.Is(verr, store.ErrAuditBroken) {
			return 0, nil, verr
		}
		out.Error = verr.Error()
		return http.StatusOK, out, nil
	}
	es, err := a.Audit(ctx)
	if err != nil {
		return 0, nil, err
	}
	if len(es) > 0 {
		out.Head = hex.EncodeToString(es[len(es)-1].Hash)
	}
	return http.StatusOK, out, nil
}

// AdminIOLogEntry is an I/O log entry on the admin API's wire; bodies as stored (redacted), as
// strings.
type AdminIOLogEntry struct {
	Object    string `json:"object"` // "iolog_entry"
	ID        string `json:"id"`
	TenantID  string `json:"tenant_id"`
	KeyID     string `json:"key_id"`
	RequestID string `json:"request_id"`
	Model     string `json:"model"`
	Request   string `json:"request"`
	Response  string `json:"response"`
	CreatedAt int64  `json:"created_at"` // Unix seconds
}

func adminTenantIOLog(ctx context.Context, a *Admin, r *http.Request, name string) (int, any, error) {
	limit := DefaultUsageLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAdminUsageLimit {
			return 0, nil, openai.InvalidRequest("limit", "invalid_value", "'limit' must be an integer from 1 to %d.", MaxAdminUsageLimit)
		}
		limit = n
	}
	if _, err := a.Tenant(ctx, name); err != nil {
		return 0, nil, err
	}
	es, err := a.IOLog(ctx, name, limit)
	if err != nil {
		return 0, nil, err
	}
	out := adminList[AdminIOLogEntry]{Object: "list", Data: make([]AdminIOLogEntry, 0, len(es))}
	for _, e := range es {
		out.Data = append(out.Data, AdminIOLogEntry{Object: "iolog_entry", ID: e.ID, TenantID: e.TenantID, KeyID: e.KeyID, RequestID: e.RequestID,
			Model: e.Model, Request: string(e.Request), Response: string(e.Response), CreatedAt: e.CreatedAt.Unix()})
	}
	return http.StatusOK, out, nil
}

// UsageCSVHeader is the header row of WriteUsageCSV.
var UsageCSVHeader = []string{"request_id", "tenant_id", "key_id", "model", "endpoint", "gpu", "prompt_tokens", "cached_tokens",
	"completion_tokens", "ttft_ms", "duration_ms", "status", "stream", "source", "billed_reason", "created_at"}

// WriteUsageCSV writes usage records as CSV (RFC 4180) with UsageCSVHeader; created_at is RFC 3339
// UTC with milliseconds.
func WriteUsageCSV(w io.Writer, recs []store.UsageRecord) error {
	cw := csv.NewWriter(w)
	_ = cw.Write(UsageCSVHeader)
	for _, u := range recs {
		_ = cw.Write([]string{u.RequestID, u.TenantID, u.KeyID, u.Model, u.Endpoint, u.GPU, strconv.FormatInt(u.PromptTokens, 10),
			strconv.FormatInt(u.CachedTokens, 10), strconv.FormatInt(u.CompletionTokens, 10), strconv.FormatInt(u.TTFT.Milliseconds(), 10),
			strconv.FormatInt(u.Duration.Milliseconds(), 10), strconv.Itoa(u.Status), strconv.FormatBool(u.Stream), u.Source, u.BilledReason,
			u.CreatedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
	}
	cw.Flush()
	return cw.Error()
}

// jsonFieldPath drops the Go names of embedded structs from an UnmarshalTypeError field path
// ("Policy.tpm" -> "tpm"): segments that start with an upper-case letter are Go field names,
// JSON names here are lower case.
func jsonFieldPath(field string) string {
	var keep []string
	for _, seg := range strings.Split(field, ".") {
		if seg != "" && (seg[0] < 'A' || seg[0] > 'Z') {
			keep = append(keep, seg)
		}
	}
	if len(keep) == 0 {
		return field
	}
	return strings.Join(keep, ".")
}

// acceptsCSV reports whether Accept (RFC 9110 §12.5.1) gives text/csv a positive weight at least
// that of application/json (or of */* when JSON is not named).
func acceptsCSV(values []string) bool {
	csvQ, jsonQ := -1.0, -1.0
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			q := 1.0
			if qs, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(qs, 64); err == nil {
					q = f
				}
			}
			switch mt {
			case "text/csv":
				csvQ = max(csvQ, q)
			case "application/json", "*/*", "application/*":
				jsonQ = max(jsonQ, q)
			}
		}
	}
	return csvQ > 0 && csvQ >= jsonQ
}
