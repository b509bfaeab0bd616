package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

type adminFixture struct {
	h      http.Handler
	a      *Admin
	st     *store.Store
	tokens map[string]string // scope set name -> token
	tenKey string            // a tenant key of tenant "acme"
	keyID  string
}

func newAdminFixture(t testing.TB) *adminFixture {
	t.Helper()
	ctx := context.Background()
	st := openTestStore(t)
	a := NewAdmin(st, testSecret)
	f := &adminFixture{h: NewAdminHandler(a, nil), a: a, st: st, tokens: map[string]string{}}
	for name, scopes := range map[string][]string{
		"all": AdminScopes, "read": {ScopeRead}, "keys": {ScopeKeys}, "policy": {ScopePolicy}, "billing": {ScopeBilling},
	} {
		tok, _, err := a.CreateAdminToken(ctx, name, scopes)
		require.NoError(t, err)
		f.tokens[name] = tok
	}
	_, err := a.CreateTenant(ctx, "acme", 60, 1000, []string{"m1"})
	require.NoError(t, err)
	key, k, err := a.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	f.tenKey, f.keyID = key, k.ID
	_, err = st.InsertUsage(ctx, &store.UsageRecord{RequestID: "req-1", TenantID: k.TenantID, KeyID: k.ID, Model: "m1",
		PromptTokens: 10, CachedTokens: 4, CompletionTokens: 5, TTFT: 20 * time.Millisecond, Duration: time.Second, Status: 200,
		Source: store.UsageEngine, BilledReason: store.BilledComplete, CreatedAt: time.Now().UTC().Truncate(time.Millisecond)})
	require.NoError(t, err)
	return f
}

// do sends one request with token (as a Bearer credential unless it is "", or a raw
// Authorization header value when it starts with "raw:") and returns status and decoded body.
func (f *adminFixture) do(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	switch {
	case strings.HasPrefix(token, "raw:"):
		req.Header.Set("Authorization", strings.TrimPrefix(token, "raw:"))
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var out map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out), rec.Body.String())
	return rec.Code, out
}

func errOf(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	e, ok := body["error"].(map[string]any)
	require.True(t, ok, "want an OpenAI error envelope, got %v", body)
	return e
}

func TestAdminAPIRoutes(t *testing.T) {
	f := newAdminFixture(t)
	all := f.tokens["all"]

	code, body := f.do(t, http.MethodGet, "/admin/v1/tenants", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "list", body["object"])
	data := body["data"].([]any)
	require.Len(t, data, 1)
	require.Equal(t, "acme", data[0].(map[string]any)["name"])
	require.Equal(t, []any{"m1"}, data[0].(map[string]any)["models"])

	code, body = f.do(t, http.MethodPost, "/admin/v1/tenants", all, `{"name":"beta","rpm":5,"tpm":0,"models":["m2"]}`)
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "tenant", body["object"])
	require.Equal(t, "beta", body["name"])
	require.EqualValues(t, 5, body["rpm"])
	require.Regexp(t, `^ten_`, body["id"])

	code, body = f.do(t, http.MethodPost, "/admin/v1/tenants", all, `{"name":"beta"}`)
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, "already_exists", errOf(t, body)["code"])

	code, body = f.do(t, http.MethodPost, "/admin/v1/tenants/beta/keys", all, "")
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "api_key", body["object"])
	newKey := body["key"].(string)
	require.True(t, strings.HasPrefix(newKey, KeyPrefix))
	require.True(t, strings.HasPrefix(newKey, body["prefix"].(string)))
	require.Nil(t, body["revoked_at"])
	newID := body["id"].(string)

	code, body = f.do(t, http.MethodPost, "/admin/v1/tenants/beta/keys", all, `{}`)
	require.Equal(t, http.StatusCreated, code, body)

	code, body = f.do(t, http.MethodGet, "/admin/v1/tenants/beta/keys", all, "")
	require.Equal(t, http.StatusOK, code)
	keys := body["data"].([]any)
	require.Len(t, keys, 2)
	for _, k := range keys {
		require.NotContains(t, k.(map[string]any), "key", "a listed key never carries the key itself")
	}

	code, body = f.do(t, http.MethodPost, "/admin/v1/keys/"+newID+"/revoke", all, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, newID, body["id"])
	require.NotNil(t, body["revoked_at"])
	k, err := f.st.APIKey(context.Background(), newID)
	require.NoError(t, err)
	require.True(t, k.Revoked(time.Now()))

	code, body = f.do(t, http.MethodGet, "/admin/v1/usage?tenant=acme&limit=10", all, "")
	require.Equal(t, http.StatusOK, code)
	recs := body["data"].([]any)
	require.Len(t, recs, 1)
	r0 := recs[0].(map[string]any)
	require.Equal(t, "req-1", r0["request_id"])
	require.EqualValues(t, 4, r0["cached_tokens"])
	require.EqualValues(t, 20, r0["ttft_ms"])
	require.Equal(t, "complete", r0["billed_reason"])

	code, body = f.do(t, http.MethodGet, "/admin/v1/usage?tenant=beta", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, body["data"])

	code, body = f.do(t, http.MethodGet, "/admin/v1/usage", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["data"], 1)

	// Every action above is in the audit log under the token's id.
	entries, err := f.a.Audit(context.Background())
	require.NoError(t, err)
	var byToken []string
	for _, e := range entries {
		if strings.HasPrefix(e.Actor, "admin_token:adm_") {
			byToken = append(byToken, e.Action)
		}
	}
	require.Equal(t, []string{"tenant.create", "key.create", "key.create", "key.revoke"}, byToken)
	n, err := f.a.VerifyAudit(context.Background())
	require.NoError(t, err)
	require.Equal(t, len(entries), n)
}

func TestAdminAPIErrors(t *testing.T) {
	f := newAdminFixture(t)
	ctx := context.Background()
	revoked, tok, err := f.a.CreateAdminToken(ctx, "old", AdminScopes)
	require.NoError(t, err)
	require.NoError(t, f.a.RevokeAdminToken(ctx, tok.ID))

	type route struct{ method, path, body, scope string }
	routes := []route{
		{http.MethodGet, "/admin/v1/tenants", "", "read"},
		{http.MethodPost, "/admin/v1/tenants", `{"name":"new1"}`, "policy"},
		{http.MethodGet, "/admin/v1/tenants/acme/keys", "", "read"},
		{http.MethodPost, "/admin/v1/tenants/acme/keys", "", "keys"},
		{http.MethodPost, "/admin/v1/keys/" + f.keyID + "/revoke", "", "keys"},
		{http.MethodGet, "/admin/v1/usage", "", "billing"},
	}
	for _, r := range routes {
		t.Run("401 "+r.method+" "+r.path, func(t *testing.T) {
			for _, cred := range []string{"", f.tenKey, revoked, AdminTokenPrefix + "nope", "raw:Basic abc", "raw:Bearer"} {
				code, body := f.do(t, r.method, r.path, cred, r.body)
				require.Equal(t, http.StatusUnauthorized, code, "credential %q", cred)
				require.Equal(t, "invalid_api_key", errOf(t, body)["code"])
			}
		})
		t.Run("403 "+r.method+" "+r.path, func(t *testing.T) {
			for name, tok := range f.tokens {
				if name == "all" || name == r.scope {
					continue
				}
				code, body := f.do(t, r.method, r.path, tok, r.body)
				require.Equal(t, http.StatusForbidden, code, "token with scope %s", name)
				e := errOf(t, body)
				require.Equal(t, "insufficient_scope", e["code"])
				require.Equal(t, "permission_error", e["type"])
			}
			code, _ := f.do(t, r.method, r.path, f.tokens[r.scope], r.body)
			require.Less(t, code, 300, "the token with exactly the scope passes")
		})
	}

	all := f.tokens["all"]
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		param                    any
	}{
		{"missing name", http.MethodPost, "/admin/v1/tenants", `{}`, 400, "name"},
		{"bad name", http.MethodPost, "/admin/v1/tenants", `{"name":"a b"}`, 400, "name"},
		{"negative rpm", http.MethodPost, "/admin/v1/tenants", `{"name":"x","rpm":-1}`, 400, "rpm"},
		{"negative tpm", http.MethodPost, "/admin/v1/tenants", `{"name":"x","tpm":-1}`, 400, "tpm"},
		{"rpm of wrong type", http.MethodPost, "/admin/v1/tenants", `{"name":"x","rpm":"5"}`, 400, "rpm"},
		{"blank model", http.MethodPost, "/admin/v1/tenants", `{"name":"x","models":[" "]}`, 400, "models"},
		{"unknown field", http.MethodPost, "/admin/v1/tenants", `{"name":"x","colour":1}`, 400, "colour"},
		{"not json", http.MethodPost, "/admin/v1/tenants", `{"name":`, 400, nil},
		{"trailing data", http.MethodPost, "/admin/v1/tenants", `{"name":"x"} {}`, 400, nil},
		{"key body field", http.MethodPost, "/admin/v1/tenants/acme/keys", `{"key":"sk-mine-12345"}`, 400, "key"},
		{"bad limit", http.MethodGet, "/admin/v1/usage?limit=0", "", 400, "limit"},
		{"huge limit", http.MethodGet, "/admin/v1/usage?limit=1001", "", 400, "limit"},
		{"text limit", http.MethodGet, "/admin/v1/usage?limit=ten", "", 400, "limit"},
		{"bad tenant", http.MethodGet, "/admin/v1/usage?tenant=a%20b", "", 400, "tenant"},
		{"unknown tenant usage", http.MethodGet, "/admin/v1/usage?tenant=ghost", "", 404, nil},
		{"unknown tenant keys", http.MethodGet, "/admin/v1/tenants/ghost/keys", "", 404, nil},
		{"unknown tenant new key", http.MethodPost, "/admin/v1/tenants/ghost/keys", "", 404, nil},
		{"unknown key", http.MethodPost, "/admin/v1/keys/key_ghost/revoke", "", 404, nil},
		{"unknown route", http.MethodGet, "/admin/v1/nothing", "", 404, nil},
		{"wrong method", http.MethodDelete, "/admin/v1/tenants", "", 405, nil},
		{"body too large", http.MethodPost, "/admin/v1/tenants", `{"name":"` + strings.Repeat("a", MaxAdminBodyBytes) + `"}`, 413, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := f.do(t, tc.method, tc.path, all, tc.body)
			require.Equal(t, tc.status, code, body)
			require.Equal(t, tc.param, errOf(t, body)["param"])
		})
	}
}

func TestAdminTokensLifecycle(t *testing.T) {
	ctx := context.Background()
	a := NewAdmin(openTestStore(t), testSecret)
	tok, at, err := a.CreateAdminToken(ctx, "ci", []string{ScopeRead})
	require.NoError(t, err)
	require.Regexp(t, `^sk-strata-admin-[0-9A-Za-z]{43}$`, tok)
	require.Equal(t, tok[:len(AdminTokenPrefix)+4], at.Prefix)
	require.Equal(t, hashKey(testSecret, tok), at.Hash, "stored as HMAC-SHA-256 with the server secret")

	got, err := a.AuthenticateAdminToken(ctx, tok)
	require.NoError(t, err)
	require.Equal(t, at.ID, got.ID)
	_, err = NewAdmin(a.st, []byte("another-secret-another-secret-32")).AuthenticateAdminToken(ctx, tok)
	require.ErrorIs(t, err, ErrAdminUnauthorized, "another server secret does not match")

	for _, bad := range []string{"", "sk-strata-abc", tok + "x", tok[:len(tok)-1], AdminTokenPrefix + " x"} {
		_, err := a.AuthenticateAdminToken(ctx, bad)
		require.ErrorIs(t, err, ErrAdminUnauthorized, bad)
	}
	_, _, err = a.CreateAdminToken(ctx, "x", nil)
	require.ErrorContains(t, err, "at least one scope")
	_, _, err = a.CreateAdminToken(ctx, "x", []string{"root"})
	require.ErrorContains(t, err, `unknown admin scope "root"`)
	_, _, err = a.CreateAdminToken(ctx, strings.Repeat("n", 65), []string{ScopeRead})
	require.ErrorContains(t, err, "name")

	_, err = a.CreateTenant(ctx, "acme", 0, 0, nil)
	require.NoError(t, err)
	_, _, err = a.CreateKey(ctx, "acme", AdminTokenPrefix+"looks-like-admin")
	require.ErrorContains(t, err, "admin token prefix", "a tenant key may not pose as an admin token")

	require.NoError(t, a.RevokeAdminToken(ctx, at.ID))
	_, err = a.AuthenticateAdminToken(ctx, tok)
	require.ErrorIs(t, err, ErrAdminUnauthorized)
	require.ErrorIs(t, a.RevokeAdminToken(ctx, "adm_ghost"), store.ErrNotFound)

	list, err := a.ListAdminTokens(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	entries, err := a.Audit(ctx)
	require.NoError(t, err)
	require.Equal(t, "admin_token.create", entries[0].Action)
	require.NotContains(t, entries[0].Detail, tok, "the audit log never holds the token")
	require.Equal(t, "admin_token.revoke", entries[len(entries)-1].Action)
}

func TestParseScopes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"read,keys", []string{"read", "keys"}, ""},
		{" billing , read,read", []string{"read", "billing"}, ""},
		{"policy,keys,billing,read", AdminScopes, ""},
		{"", nil, "at least one scope"},
		{" , ", nil, "at least one scope"},
		{"read,admin", nil, `unknown admin scope "admin"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseScopes(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// FuzzAdminRequestBodies checks that no request body makes the parsers panic, that every error
// is a 400, and that an accepted tenant request is valid.
func FuzzAdminRequestBodies(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":"a","rpm":1,"tpm":2,"models":["m"]}`, `{"name":1}`, `[]`, `null`, `{"x":1}`,
		`{"name":"a"} x`, ``, `{"rpm":-1}`, `{"models":[""]}`, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseCreateTenantRequest(body)
		if err != nil {
			require.Equal(t, http.StatusBadRequest, asOpenAIStatus(err))
		} else {
			require.Regexp(t, tenantName, req.Name)
			require.GreaterOrEqual(t, req.RPM, 0)
			require.GreaterOrEqual(t, req.TPM, 0)
		}
		if _, err := ParseCreateKeyRequest(body); err != nil {
			require.Equal(t, http.StatusBadRequest, asOpenAIStatus(err))
		}
	})
}

func asOpenAIStatus(err error) int { return openai.AsError(err).Status }

// TestAdminOpenAPIMatchesRoutes keeps docs/admin-openapi.yaml exact: it documents every route the
// handler serves, with its methods, and no other.
func TestAdminOpenAPIMatchesRoutes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "admin-openapi.yaml"))
	require.NoError(t, err)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, yaml.Unmarshal(b, &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."))
	got := map[string]string{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Description string `json:"description"`
			}
			require.NoError(t, json.Unmarshal(ops[method], &op))
			got[strings.ToUpper(method)+" "+path] = op.Description
		}
	}
	want := map[string]string{}
	for _, d := range adminRoutes {
		want[d.method+" /admin/v1"+d.pattern] = d.scope
	}
	require.Len(t, want, len(adminRoutes), "a route is listed twice")
	for route := range got {
		_, ok := want[route]
		require.True(t, ok, "%s is documented but not served", route)
	}
	for route, scope := range want {
		desc, ok := got[route]
		require.True(t, ok, "%s not documented", route)
		require.Contains(t, desc, "Scope: "+scope+".", route)
		method, path, _ := strings.Cut(route, " ")
		path = strings.NewReplacer("{name}", "acme", "{id}", "key_x").Replace(path)
		r, _, err := matchAdminRoute(method, path)
		require.NoError(t, err, route)
		require.Equal(t, scope, r.scope, route)
	}
}

// TestGatewayAdminHandler: the handler the stack mounts works over the gateway's own store and
// secret, refuses the gateway's tenant key, and counts its answers by status.
func TestGatewayAdminHandler(t *testing.T) {
	h := newHarness(t, 0, 0)
	tok, _, err := NewAdmin(h.st, testSecret).CreateAdminToken(context.Background(), "ops", []string{ScopeRead})
	require.NoError(t, err)
	ah := h.gw.AdminHandler()
	for _, tc := range []struct {
		cred, path string
		status     int
	}{
		{tok, "/admin/v1/tenants", 200},
		{h.key, "/admin/v1/tenants", 401},
		{tok, "/admin/v1/usage", 403},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		r.Header.Set("Authorization", "Bearer "+tc.cred)
		w := httptest.NewRecorder()
		ah.ServeHTTP(w, r)
		require.Equal(t, tc.status, w.Code, w.Body.String())
		require.NotContains(t, w.Body.String(), h.key)
	}
	for _, code := range []string{"200", "401", "403"} {
		require.Equal(t, 1.0, testutil.ToFloat64(h.gw.m.adminRequests.WithLabelValues(code)), code)
	}
	h.gw.syncWriteBehind()
	es, err := h.st.ListAudit(context.Background())
	require.NoError(t, err)
	var refused []string
	for _, e := range es {
		if e.Action == "auth.failure" {
			refused = append(refused, e.Target+" "+e.Detail)
		}
	}
	require.Len(t, refused, 1, "the refused admin token is audited")
	require.Contains(t, refused[0], `admin_token {"count":1`)
	require.NotContains(t, refused[0], h.key)
}

// FuzzAdminRoute: any method and path either matches a route with a known scope or is refused
// with 404 or 405, never a panic.
func FuzzAdminRoute(f *testing.F) {
	for _, s := range []string{"/admin/v1/tenants", "/admin/v1/tenants/a/keys", "/admin/v1/keys/k/revoke", "/admin/v1/usage",
		"/admin/v1", "/admin/v1//tenants/", "/admin/v1/tenants//keys", "/x", ""} {
		f.Add("GET", s)
		f.Add("POST", s)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		r, arg, err := matchAdminRoute(method, path)
		if err != nil {
			require.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, asOpenAIStatus(err))
			return
		}
		require.Contains(t, AdminScopes, r.scope)
		require.NotContains(t, arg, "/")
	})
}
