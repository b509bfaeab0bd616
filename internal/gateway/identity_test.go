package gateway

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
)

func TestIdentity(t *testing.T) {
	h := newHarness(t, 1, 0)
	ctx := context.Background()
	second, secondRec, err := h.admin.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	_, err = h.admin.CreateTenant(ctx, "other", 0, 0, nil)
	require.NoError(t, err)
	otherKey, otherRec, err := h.admin.CreateKey(ctx, "other", "")
	require.NoError(t, err)

	for _, tc := range []struct {
		name        string
		hdr         []string
		tenant, key string
	}{
		{"bearer", nil, h.tenant.ID, h.keyRec.ID},
		{"x-api-key", []string{"Authorization", "", "x-api-key", h.key}, h.tenant.ID, h.keyRec.ID},
		{"second key of the tenant", []string{"Authorization", "Bearer " + second}, h.tenant.ID, secondRec.ID},
		{"another tenant", []string{"Authorization", "Bearer " + otherKey}, otherRec.TenantID, otherRec.ID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := h.do("GET", PathIdentity, "", tc.hdr...)
			require.Equal(t, 200, w.Code, w.Body.String())
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			var got map[string]string
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &got))
			require.Equal(t, map[string]string{"object": "strata.identity", "tenant_id": tc.tenant, "key_id": tc.key}, got)
		})
	}
	// Not rate limited (rpm 1 above) and not metered.
	require.Equal(t, 200, h.do("GET", PathIdentity, "").Code)
	require.Empty(t, h.usage())
	require.Empty(t, h.eng.seen(), "answered by the gateway itself")

	// Bad keys: the same 401s as inference routes.
	w := h.do("GET", PathIdentity, "", "Authorization", "")
	require.Equal(t, 401, w.Code)
	require.JSONEq(t, errorBody(errNoKey), w.Body.String())
	w = h.do("GET", PathIdentity, "", "Authorization", "Bearer sk-strata-nope")
	require.Equal(t, 401, w.Code)
	require.JSONEq(t, errorBody(errBadKey), w.Body.String())
	require.NoError(t, h.admin.RevokeKey(ctx, secondRec.ID))
	h.clk.Step(AuthCacheTTL)
	w = h.do("GET", PathIdentity, "", "Authorization", "Bearer "+second)
	require.Equal(t, 401, w.Code, "a revoked key")

	// Other methods are unknown routes.
	w = h.do("POST", PathIdentity, "")
	require.Equal(t, 404, w.Code)
	require.JSONEq(t, errorBody(openai.NotFound("Invalid URL (POST %s)", PathIdentity)), w.Body.String())
}
