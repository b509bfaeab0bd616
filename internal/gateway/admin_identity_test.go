package gateway

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// TestAdminScopesEveryRoute: every route of adminRoutes answers 403 insufficient_scope to a
// token holding every scope but its own, before looking at the body or the path parameter.
func TestAdminScopesEveryRoute(t *testing.T) {
	f := newAdminFixture(t)
	for _, d := range adminRoutes {
		path := "/admin/v1" + strings.NewReplacer("{name}", "acme", "{id}", f.keyID).Replace(d.pattern)
		for name, tok := range f.tokens {
			if name == "all" || name == d.scope {
				continue
			}
			code, body := f.do(t, d.method, path, tok, "{}")
			require.Equal(t, http.StatusForbidden, code, "%s %s with scope %s", d.method, path, name)
			require.Equal(t, "insufficient_scope", errOf(t, body)["code"])
		}
	}
}

// TestAdminTenantPatchAndExternalID: external ids are settable at creation and by PATCH, unique
// (409), and the I/O log opt-in toggles.
func TestAdminTenantPatchAndExternalID(t *testing.T) {
	f := newAdminFixture(t)
	all := f.tokens["all"]
	code, body := f.do(t, http.MethodPost, "/admin/v1/tenants", all, `{"name":"beta","external_id":"cus_9","iolog":true}`)
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "cus_9", body["external_id"])
	require.Equal(t, true, body["iolog"])

	code, body = f.do(t, http.MethodPatch, "/admin/v1/tenants/acme", all, `{"external_id":"cus_9"}`)
	require.Equal(t, http.StatusConflict, code, body)
	code, body = f.do(t, http.MethodPatch, "/admin/v1/tenants/acme", all, `{"external_id":"cus_1","rpm":9,"iolog":true}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "cus_1", body["external_id"])
	require.EqualValues(t, 9, body["rpm"])
	require.EqualValues(t, 1000, body["tpm"], "untouched")
	require.Equal(t, true, body["iolog"])
	code, body = f.do(t, http.MethodGet, "/admin/v1/tenants/acme", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cus_1", body["external_id"])
	code, body = f.do(t, http.MethodGet, "/admin/v1/tenants?external_id=cus_1", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["data"], 1)
	require.Equal(t, "acme", body["data"].([]any)[0].(map[string]any)["name"])
	code, body = f.do(t, http.MethodGet, "/admin/v1/tenants?external_id=nobody", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, body["data"])

	for _, tc := range []struct{ body, param string }{
		{`{"rpm":-1}`, "rpm"},
		{`{"tpm":-5}`, "tpm"},
		{`{"external_id":"` + strings.Repeat("x", 257) + `"}`, "external_id"},
		{`{"models":[""]}`, "models"},
		{`{"iolog":"yes"}`, "iolog"},
		{`{"nope":1}`, "nope"},
	} {
		code, body := f.do(t, http.MethodPatch, "/admin/v1/tenants/acme", all, tc.body)
		require.Equal(t, http.StatusBadRequest, code, tc.body)
		require.Equal(t, tc.param, errOf(t, body)["param"], tc.body)
	}
	code, _ = f.do(t, http.MethodPatch, "/admin/v1/tenants/nope", all, `{"rpm":1}`)
	require.Equal(t, http.StatusNotFound, code)
}

// TestAdminKeyLifecycle: a key created with an expiry, its expiry changed by PATCH, a rotation
// with a grace period (the new key shown once, the old one valid until the grace ends), and the
// errors of each.
func TestAdminKeyLifecycle(t *testing.T) {
	f := newAdminFixture(t)
	all := f.tokens["all"]
	code, body := f.do(t, http.MethodPost, "/admin/v1/tenants/acme/keys", all, `{"expires_in":"720h"}`)
	require.Equal(t, http.StatusCreated, code, body)
	require.NotNil(t, body["expires_at"])
	require.InDelta(t, float64(time.Now().Add(720*time.Hour).Unix()), body["expires_at"], 5)
	require.Equal(t, true, body["active"])
	id := body["id"].(string)

	for _, tc := range []struct{ body, param string }{
		{`{"expires_in":"-1h"}`, "expires_in"},
		{`{"expires_in":"soon"}`, "expires_in"},
		{`{"expires_at":1}`, "expires_at"},
		{`{"expires_at":"yesterday"}`, "expires_at"},
		{`{"expires_at":1,"expires_in":"1h"}`, "expires_in"},
	} {
		code, body := f.do(t, http.MethodPost, "/admin/v1/tenants/acme/keys", all, tc.body)
		require.Equal(t, http.StatusBadRequest, code, tc.body)
		require.Equal(t, tc.param, errOf(t, body)["param"], tc.body)
	}

	code, body = f.do(t, http.MethodPatch, "/admin/v1/keys/"+id, all, `{"expires_at":"2030-01-02T03:04:05Z"}`)
	require.Equal(t, http.StatusOK, code, body)
	require.EqualValues(t, time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).Unix(), body["expires_at"])
	code, body = f.do(t, http.MethodPatch, "/admin/v1/keys/"+id, all, `{"expires_at":null}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Nil(t, body["expires_at"])
	code, body = f.do(t, http.MethodPatch, "/admin/v1/keys/"+id, all, `{}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "expires_at", errOf(t, body)["param"])
	code, body = f.do(t, http.MethodPatch, "/admin/v1/keys/"+id, all, `{"expires_at":[1]}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "expires_at", errOf(t, body)["param"])

	code, body = f.do(t, http.MethodPost, "/admin/v1/keys/"+f.keyID+"/rotate", all, `{"grace_period":"24h"}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "api_key.rotation", body["object"])
	nk, ok := body["new_key"].(map[string]any)
	require.True(t, ok)
	ok2 := body["old_key"].(map[string]any)
	newKey := nk["key"].(string)
	require.True(t, strings.HasPrefix(newKey, KeyPrefix))
	require.Equal(t, nk["id"], ok2["replaced_by"])
	require.Equal(t, true, ok2["active"], "still valid during the grace period")
	require.InDelta(t, float64(time.Now().Add(24*time.Hour).Unix()), ok2["revoked_at"], 5)

	code, body = f.do(t, http.MethodPost, "/admin/v1/keys/"+f.keyID+"/rotate", all, "")
	require.Equal(t, http.StatusConflict, code, "rotated once")
	require.Equal(t, "already_exists", errOf(t, body)["code"])
	code, body = f.do(t, http.MethodPost, "/admin/v1/keys/"+nk["id"].(string)+"/rotate", all, `{"grace_period":"1000h"}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "grace_period", errOf(t, body)["param"])
	code, _ = f.do(t, http.MethodPost, "/admin/v1/keys/key_nope/rotate", all, "")
	require.Equal(t, http.StatusNotFound, code)
	code, body = f.do(t, http.MethodGet, "/admin/v1/keys/"+nk["id"].(string), all, "")
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, body, "key", "the key is shown only once")

	var actions []string
	es, err := f.a.Audit(context.Background())
	require.NoError(t, err)
	for _, e := range es {
		actions = append(actions, e.Action)
		require.NotContains(t, e.Detail, newKey)
	}
	require.Contains(t, actions, "key.rotate")
	require.Contains(t, actions, "key.expiry")
}

// TestAdminPolicyRoutes: policy overrides of a tenant and a key, with the effective policy, and a
// 400 naming the field for every out-of-range value.
func TestAdminPolicyRoutes(t *testing.T) {
	f := newAdminFixture(t)
	cfg := config.Default().Gateway
	cfg.DefaultTier = "free"
	cfg.Tiers = map[string]config.Policy{"free": {RPM: ptr64(10), MaxTokensCap: ptr64(1000)}, "gold": {RPM: ptr64(100)}}
	cfg.ModelGroups = map[string][]string{"small": {"m1", "m2"}}
	f.a = f.a.WithConfig(cfg)
	f.h = NewAdminHandler(f.a, nil)
	all := f.tokens["all"]

	code, body := f.do(t, http.MethodPut, "/admin/v1/tenants/acme/policy", all,
		`{"tier":"gold","tpm":5000,"models":["@small"],"fairness":"key","objective":"batch","monthly_spend_micros":1000000}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "gold", body["tier"])
	eff := body["effective"].(map[string]any)
	require.EqualValues(t, 60, eff["rpm"], "the tenant's rpm column overrides the tier's 100")
	require.Nil(t, eff["max_tokens_cap"], "the free tier's cap does not apply to a gold tenant")
	require.EqualValues(t, 5000, eff["tpm"], "the tenant's override")
	require.Equal(t, "key", eff["fairness"])

	code, body = f.do(t, http.MethodPut, "/admin/v1/keys/"+f.keyID+"/policy", all, `{"rpm":3,"max_tokens_cap":50}`)
	require.Equal(t, http.StatusOK, code, body)
	eff = body["effective"].(map[string]any)
	require.EqualValues(t, 3, eff["rpm"])
	require.EqualValues(t, 5000, eff["tpm"])
	code, body = f.do(t, http.MethodGet, "/admin/v1/keys/"+f.keyID+"/policy", all, "")
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 3, body["overrides"].(map[string]any)["rpm"])

	for _, tc := range []struct{ path, body, param string }{
		{"/admin/v1/tenants/acme/policy", `{"rpm":-1}`, "rpm"},
		{"/admin/v1/tenants/acme/policy", `{"tpm":2e20}`, "tpm"},
		{"/admin/v1/tenants/acme/policy", `{"max_concurrent":-2}`, "max_concurrent"},
		{"/admin/v1/tenants/acme/policy", `{"monthly_tokens":1125899906842625}`, "monthly_tokens"},
		{"/admin/v1/tenants/acme/policy", `{"monthly_spend_micros":-1}`, "monthly_spend_micros"},
		{"/admin/v1/tenants/acme/policy", `{"max_tokens_default":100,"max_tokens_cap":10}`, "max_tokens_default"},
		{"/admin/v1/tenants/acme/policy", `{"objective":"no spaces"}`, "objective"},
		{"/admin/v1/tenants/acme/policy", `{"fairness":"session"}`, "fairness"},
		{"/admin/v1/tenants/acme/policy", `{"models":["@nope"]}`, "models"},
		{"/admin/v1/tenants/acme/policy", `{"tier":"platinum"}`, "tier"},
		{"/admin/v1/tenants/acme/policy", `{"rpm":"ten"}`, "rpm"},
		{"/admin/v1/keys/" + f.keyID + "/policy", `{"tier":"gold"}`, "tier"},
		{"/admin/v1/keys/" + f.keyID + "/policy", `{"max_tokens_cap":-1}`, "max_tokens_cap"},
	} {
		code, body := f.do(t, http.MethodPut, tc.path, all, tc.body)
		require.Equal(t, http.StatusBadRequest, code, tc.body)
		require.Equal(t, tc.param, errOf(t, body)["param"], tc.body)
	}

	code, body = f.do(t, http.MethodGet, "/admin/v1/tiers", f.tokens["read"], "")
	require.Equal(t, http.StatusOK, code)
	tiers := body["data"].([]any)
	require.Len(t, tiers, 2)
	require.Equal(t, "free", tiers[0].(map[string]any)["name"])
	require.Equal(t, true, tiers[0].(map[string]any)["default"])
	require.EqualValues(t, 2, tiers[0].(map[string]any)["ttft_slo_seconds"], "the default SLO")
	require.Equal(t, []any{"m1", "m2"}, body["model_groups"].(map[string]any)["small"])
}

// TestAdminBillingRoutes: tier prices override the general book for that tier's tenants, GPU
// costs give the margin, CSV comes by ?format=csv and by Accept, and re-rating after a price
// correction stores a new version with the change of the charge.
func TestAdminBillingRoutes(t *testing.T) {
	f := newAdminFixture(t)
	f.a = f.a.WithConfig(config.Gateway{Tiers: map[string]config.Policy{"gold": {}}})
	f.h = NewAdminHandler(f.a, nil)
	ctx := context.Background()
	all := f.tokens["all"]
	acme, err := f.st.TenantByName(ctx, "acme")
	require.NoError(t, err)
	period, start, _ := Month(time.Now(), time.UTC)
	_, err = f.st.InsertUsage(ctx, &store.UsageRecord{RequestID: "req-gpu", TenantID: acme.ID, KeyID: f.keyID, Model: "m1", GPU: "H100",
		PromptTokens: 1_000_000, CachedTokens: 0, CompletionTokens: 1_000_000, Duration: 36 * time.Second, Status: 200,
		Source: store.UsageEngine, CreatedAt: start.Add(time.Minute)})
	require.NoError(t, err)

	code, body := f.do(t, http.MethodPost, "/admin/v1/prices", all,
		fmt.Sprintf(`{"model":"m1","effective_at":%d,"input_micros":1000000,"cached_micros":500000,"output_micros":2000000}`, start.Add(-time.Hour).Unix()))
	require.Equal(t, http.StatusCreated, code, body)
	code, body = f.do(t, http.MethodPost, "/admin/v1/gpu-costs", all, fmt.Sprintf(`{"gpu":"H100","effective_at":%d,"micros_per_hour":3600000}`, start.Add(-time.Hour).Unix()))
	require.Equal(t, http.StatusCreated, code, body)

	code, body = f.do(t, http.MethodGet, "/admin/v1/bills?tenant=acme&period="+period, all, "")
	require.Equal(t, http.StatusOK, code, body)
	// req-gpu: 1M fresh input at $1 + 1M output at $2 = $3; req-1 (fixture): 6 fresh, 4 cached, 5 output.
	want := int64(3_000_000) + microsRound(6*1_000_000+4*500_000+5*2_000_000)
	require.EqualValues(t, want, body["cost_micros"])
	require.EqualValues(t, 36_000, body["gpu_cost_micros"], "36 s of a $3.60/h GPU")
	require.EqualValues(t, want-36_000, body["margin_micros"])
	require.EqualValues(t, 1_000_006, body["fresh_input_tokens"])
	require.EqualValues(t, 4, body["cached_input_tokens"])

	code, body = f.do(t, http.MethodPost, "/admin/v1/bills/rerate", all, `{"tenant":"acme","period":"`+period+`"}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Nil(t, body["previous"])
	require.EqualValues(t, want, body["delta_cost_micros"])

	// A tier override of the price, then the tenant moves to that tier: the re-rating shows it.
	code, body = f.do(t, http.MethodPost, "/admin/v1/prices", all,
		fmt.Sprintf(`{"model":"m1","tier":"gold","effective_at":"%s","input_micros":0,"cached_micros":0,"output_micros":1000000}`, start.Add(-time.Hour).Format(time.RFC3339)))
	require.Equal(t, http.StatusCreated, code, body)
	code, body = f.do(t, http.MethodPost, "/admin/v1/prices", all, `{"model":"m1","tier":"platinum","input_micros":0,"cached_micros":0,"output_micros":0}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "tier", errOf(t, body)["param"])
	code, _ = f.do(t, http.MethodPut, "/admin/v1/tenants/acme/policy", all, `{"tier":"gold"}`)
	require.Equal(t, http.StatusOK, code)
	code, body = f.do(t, http.MethodPost, "/admin/v1/bills/rerate", all, `{"tenant":"acme","period":"`+period+`"}`)
	require.Equal(t, http.StatusOK, code, body)
	newCost := int64(1_000_000) + microsRound(5*1_000_000)
	require.EqualValues(t, newCost-want, body["delta_cost_micros"])
	require.EqualValues(t, 2, body["current"].(map[string]any)["version"])
	code, body = f.do(t, http.MethodGet, "/admin/v1/bills/history?tenant=acme", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["data"], 2)

	code, body = f.do(t, http.MethodGet, "/admin/v1/prices", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["data"], 2)
	code, body = f.do(t, http.MethodGet, "/admin/v1/gpu-costs", all, "")
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["data"], 1)

	for _, tc := range []struct{ method, path, body, param string }{
		{http.MethodPost, "/admin/v1/prices", `{"model":"m1","input_micros":-1,"cached_micros":0,"output_micros":0}`, "input_micros"},
		{http.MethodPost, "/admin/v1/prices", `{"model":"m1","input_micros":1,"cached_micros":1000000000001,"output_micros":0}`, "cached_micros"},
		{http.MethodPost, "/admin/v1/prices", `{"model":"m1","input_micros":1,"cached_micros":1}`, "output_micros"},
		{http.MethodPost, "/admin/v1/prices", `{"input_micros":1}`, "model"},
		{http.MethodPost, "/admin/v1/prices", `{"model":"m1","effective_at":"tomorrow","input_micros":1,"cached_micros":1,"output_micros":1}`, "effective_at"},
		{http.MethodPost, "/admin/v1/gpu-costs", `{"gpu":"H100","micros_per_hour":-1}`, "micros_per_hour"},
		{http.MethodPost, "/admin/v1/gpu-costs", `{"micros_per_hour":1}`, "gpu"},
		{http.MethodPost, "/admin/v1/bills/rerate", `{"tenant":"acme","period":"2026-13"}`, "period"},
		{http.MethodPost, "/admin/v1/bills/rerate", `{"period":"2026-01"}`, "tenant"},
		{http.MethodGet, "/admin/v1/bills?period=2026", "", "period"},
		{http.MethodGet, "/admin/v1/bills?period=" + period, "", "tenant"},
		{http.MethodGet, "/admin/v1/bills?tenant=acme&since=2026-01-01T00:00:00Z", "", "until"},
		{http.MethodGet, "/admin/v1/bills?tenant=acme&format=xml", "", "format"},
		{http.MethodGet, "/admin/v1/audit?limit=0", "", "limit"},
		{http.MethodGet, "/admin/v1/audit?after=-1", "", "after"},
	} {
		code, body := f.do(t, tc.method, tc.path, all, tc.body)
		require.Equal(t, http.StatusBadRequest, code, tc.path+" "+tc.body)
		require.Equal(t, tc.param, errOf(t, body)["param"], tc.path+" "+tc.body)
	}

	for _, tc := range []struct{ path, accept, header string }{
		{"/admin/v1/bills?tenant=acme&period=" + period + "&format=csv", "", BillCSVHeader[0]},
		{"/admin/v1/bills?period=" + period, "text/csv", BillCSVHeader[0]},
		{"/admin/v1/usage?format=csv", "", UsageCSVHeader[0]},
		{"/admin/v1/usage", "application/json;q=0.5, text/csv", UsageCSVHeader[0]},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		r.Header.Set("Authorization", "Bearer "+all)
		if tc.accept != "" {
			r.Header.Set("Accept", tc.accept)
		}
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, r)
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		require.Equal(t, "text/csv; charset=utf-8", w.Header().Get("Content-Type"))
		rows, err := csv.NewReader(strings.NewReader(w.Body.String())).ReadAll()
		require.NoError(t, err)
		require.Equal(t, tc.header, rows[0][0])
		require.GreaterOrEqual(t, len(rows), 2, tc.path)
	}
}

// TestAdminAuditRoutes: the audit log lists with paging and verifies, also over the API.
func TestAdminAuditRoutes(t *testing.T) {
	f := newAdminFixture(t)
	read := f.tokens["read"]
	code, body := f.do(t, http.MethodGet, "/admin/v1/audit?limit=1", read, "")
	require.Equal(t, http.StatusOK, code)
	data := body["data"].([]any)
	require.Len(t, data, 1)
	first := data[0].(map[string]any)
	require.EqualValues(t, 1, first["seq"])
	require.Len(t, first["hash"], 64)
	code, body = f.do(t, http.MethodGet, "/admin/v1/audit?after=1", read, "")
	require.Equal(t, http.StatusOK, code)
	for _, e := range body["data"].([]any) {
		require.Greater(t, e.(map[string]any)["seq"], 1.0)
	}
	code, body = f.do(t, http.MethodPost, "/admin/v1/audit/verify", read, "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, true, body["verified"])
	require.Len(t, body["head"], 64)
}

// TestAuthFailuresSameBodyAndAudited: unknown, malformed, revoked and expired keys get one and the
// same 401 body; the refusals are audited, coalesced per reason, only once the write-behind runs.
func TestAuthFailuresSameBodyAndAudited(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	revoked, rk, err := h.admin.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	require.NoError(t, h.admin.RevokeKey(ctx, rk.ID))
	expired, ek, err := h.admin.CreateKeyExpiring(ctx, "acme", t0.Add(time.Minute))
	require.NoError(t, err)
	h.clk.Step(2 * time.Minute)
	require.True(t, ek.Expired(h.clk.Now()))

	var bodies []string
	for _, key := range []string{revoked, expired, KeyPrefix + "unknown000000000000000000000000000000000000", "bad key with spaces", strings.Repeat("k", 300)} {
		w := h.do(http.MethodPost, openai.PathChatCompletions, simpleChat, "Authorization", "Bearer "+key)
		require.Equal(t, http.StatusUnauthorized, w.Code, key)
		bodies = append(bodies, w.Body.String())
	}
	for _, b := range bodies[1:] {
		require.Equal(t, bodies[0], b, "a caller cannot tell why a key was refused")
	}
	require.NotContains(t, bodies[0], "expired")
	require.NotContains(t, bodies[0], "revoked")

	countAuth := func() map[string]string {
		es, err := h.st.ListAudit(ctx)
		require.NoError(t, err)
		out := map[string]string{}
		for _, e := range es {
			if e.Action == "auth.failure" {
				require.Equal(t, AuditActorGateway, e.Actor)
				out[e.Target] = e.Detail
			}
		}
		return out
	}
	require.Empty(t, countAuth(), "written behind, not per request")
	h.clk.Step(WriteBehindDelay) // the timer fires: one batch
	got := countAuth()
	require.Len(t, got, 3)
	require.Contains(t, got["invalid"], `"count":3`)
	require.Contains(t, got["revoked"], `"count":1`)
	require.Contains(t, got["expired"], `"count":1`)
	for _, d := range got {
		require.NotContains(t, d, revoked)
		require.NotContains(t, d, expired)
	}
	n, err := h.st.VerifyAudit(ctx)
	require.NoError(t, err)
	require.Positive(t, n)
}

// TestKeyRotationEndToEnd: after a rotation with a 24h grace period both keys work; once the grace
// ends (and the auth cache expires) the old key is refused and the new one still works.
func TestKeyRotationEndToEnd(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	newKey, next, old, err := h.admin.RotateKey(ctx, h.keyRec.ID, 24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, next.ID, old.ReplacedBy)
	require.Equal(t, 200, h.do(http.MethodGet, openai.PathModels, "").Code, "old key in its grace period")
	require.Equal(t, 200, h.do(http.MethodGet, openai.PathModels, "", "Authorization", "Bearer "+newKey).Code)
	h.clk.Step(24*time.Hour + time.Second)
	require.Equal(t, 401, h.do(http.MethodGet, openai.PathModels, "").Code, "grace over")
	require.Equal(t, 200, h.do(http.MethodGet, openai.PathModels, "", "Authorization", "Bearer "+newKey).Code)
}

// TestLastUsedAtWriteBehind: many requests of many keys within one interval make one batched
// write, on the write-behind timer, not on the request path.
func TestLastUsedAtWriteBehind(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	other, ok2, err := h.admin.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	for range 20 {
		require.Equal(t, 200, h.do(http.MethodGet, openai.PathModels, "").Code)
		require.Equal(t, 200, h.do(http.MethodGet, openai.PathModels, "", "Authorization", "Bearer "+other).Code)
	}
	for _, id := range []string{h.keyRec.ID, ok2.ID} {
		k, err := h.st.APIKey(ctx, id)
		require.NoError(t, err)
		require.True(t, k.LastUsedAt.IsZero(), "nothing written on the request path")
	}
	h.clk.Step(WriteBehindDelay)
	for _, id := range []string{h.keyRec.ID, ok2.ID} {
		k, err := h.st.APIKey(ctx, id)
		require.NoError(t, err)
		require.False(t, k.LastUsedAt.IsZero(), "written by the timer")
		require.False(t, k.LastUsedAt.After(h.clk.Now()))
	}
	require.NoError(t, h.gw.Close())
}

// FuzzAdminBodies: any body on the routes that decode JSON gives 2xx or a 4xx OpenAI error,
// never a panic or a 500.
func FuzzAdminBodies(f *testing.F) {
	for _, s := range []string{`{}`, `{"rpm":-1}`, `{"expires_at":"2030-01-01T00:00:00Z"}`, `{"expires_at":1e99}`, `{"grace_period":"24h"}`,
		`{"tier":"x","models":["@g"]}`, `{"model":"m","input_micros":1,"cached_micros":1,"output_micros":1,"effective_at":-1}`, `[`, `null`} {
		f.Add(s)
	}
	fx := newAdminFixture(f)
	paths := []struct{ method, path string }{
		{http.MethodPatch, "/admin/v1/tenants/acme"}, {http.MethodPut, "/admin/v1/tenants/acme/policy"},
		{http.MethodPost, "/admin/v1/tenants/acme/keys"}, {http.MethodPatch, "/admin/v1/keys/" + fx.keyID},
		{http.MethodPut, "/admin/v1/keys/" + fx.keyID + "/policy"}, {http.MethodPost, "/admin/v1/prices"},
		{http.MethodPost, "/admin/v1/gpu-costs"}, {http.MethodPost, "/admin/v1/bills/rerate"},
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, p := range paths {
			r := httptest.NewRequest(p.method, p.path, strings.NewReader(body))
			r.Header.Set("Authorization", "Bearer "+fx.tokens["all"])
			w := httptest.NewRecorder()
			fx.h.ServeHTTP(w, r)
			require.Less(t, w.Code, 500, "%s %s %q: %s", p.method, p.path, body, w.Body.String())
		}
	})
}

// TestFairnessPerKeyAndModelGroups: policy fairness "key" gives each key of a tenant its own
// fairness id (the default, one per tenant, is unchanged); a "@group" allowlist admits exactly the
// group's models.
func TestFairnessPerKeyAndModelGroups(t *testing.T) {
	cfg := tierConfig(map[string]config.Policy{"t": {Models: []string{"@small"}}}, "t")
	cfg.ModelGroups = map[string][]string{"small": {"m1"}}
	h := newHarnessCfg(t, cfg, 0, 0)
	ctx := context.Background()
	other, ok2, err := h.admin.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	send := func(key, model string) int {
		return h.do(http.MethodPost, openai.PathChatCompletions, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`,
			"Authorization", "Bearer "+key).Code
	}
	require.Equal(t, 200, send(h.key, "m1"))
	require.Equal(t, 404, send(h.key, "m2"), "m2 is not in the group")
	require.Equal(t, 200, send(other, "m1"))
	seen := h.eng.seen()
	require.Equal(t, seen[0].header.Get(openai.HeaderFairnessID), seen[1].header.Get(openai.HeaderFairnessID), "one flow per tenant by default")

	key := "key"
	require.NoError(t, h.admin.SetKeyPolicy(ctx, ok2.ID, config.Policy{Fairness: &key}))
	h.clk.Step(AuthCacheTTL)
	require.Equal(t, 200, send(h.key, "m1"))
	require.Equal(t, 200, send(other, "m1"))
	seen = h.eng.seen()
	a, b := seen[2].header.Get(openai.HeaderFairnessID), seen[3].header.Get(openai.HeaderFairnessID)
	require.NotEmpty(t, b)
	require.NotEqual(t, a, b, "the key with fairness=key is a flow of its own")
	require.Len(t, b, 16)
}

func TestAcceptsCSV(t *testing.T) {
	for _, tc := range []struct {
		accept []string
		want   bool
	}{
		{nil, false},
		{[]string{"text/csv"}, true},
		{[]string{"application/json;q=0.5, text/csv"}, true},
		{[]string{"text/csv;q=0, application/json"}, false},
		{[]string{"application/json", "text/csv;q=0.2"}, false},
		{[]string{"*/*"}, false},
		{[]string{"text/csv; charset=utf-8", "*/*;q=0.1"}, true},
		{[]string{"garbage;;;"}, false},
	} {
		require.Equal(t, tc.want, acceptsCSV(tc.accept), "%q", tc.accept)
	}
}

// TestCloseFlushesWriteBehind: Close writes what the write-behind holds (last uses, refused
// authentications) without waiting for its timer.
func TestCloseFlushesWriteBehind(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	require.Equal(t, 200, h.do(http.MethodGet, openai.PathModels, "").Code)
	require.Equal(t, 401, h.do(http.MethodGet, openai.PathModels, "", "Authorization", "Bearer "+KeyPrefix+"nope00000000").Code)
	require.NoError(t, h.gw.Close())
	k, err := h.st.APIKey(ctx, h.keyRec.ID)
	require.NoError(t, err)
	require.False(t, k.LastUsedAt.IsZero())
	es, err := h.st.ListAudit(ctx)
	require.NoError(t, err)
	require.Equal(t, "auth.failure", es[len(es)-1].Action)
	require.Equal(t, "invalid", es[len(es)-1].Target)
}
