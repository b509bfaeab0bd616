package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

func TestAdminTenants(t *testing.T) {
	ctx := context.Background()
	a := NewAdmin(openTestStore(t), testSecret)
	ten, err := a.CreateTenant(ctx, "acme", 60, 1000, []string{" m1 ", "m2", "m1"})
	require.NoError(t, err)
	require.Regexp(t, `^ten_[0-9A-Za-z]{16}$`, ten.ID)
	require.Equal(t, []string{"m1", "m2"}, ten.Models)
	_, err = a.CreateTenant(ctx, "acme", 0, 0, nil)
	require.ErrorIs(t, err, store.ErrExists)
	for _, tc := range []struct {
		name     string
		tenant   string
		rpm, tpm int
		models   []string
		msg      string
	}{
		{"empty name", "", 0, 0, nil, "tenant name"},
		{"name with space", "a b", 0, 0, nil, "tenant name"},
		{"name too long", strings.Repeat("a", 65), 0, 0, nil, "tenant name"},
		{"negative rpm", "x", -1, 0, nil, "must not be negative"},
		{"negative tpm", "x", 0, -1, nil, "must not be negative"},
		{"blank model", "x", 0, 0, []string{" "}, "model name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.CreateTenant(ctx, tc.tenant, tc.rpm, tc.tpm, tc.models)
			require.ErrorContains(t, err, tc.msg)
		})
	}
	_, err = a.CreateTenant(ctx, "beta", 0, 0, nil)
	require.NoError(t, err)
	all, err := a.ListTenants(ctx)
	require.NoError(t, err)
	require.Len(t, all, 2)
	require.Equal(t, "acme", all[0].Name)
}

func TestAdminKeys(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t)
	a := NewAdmin(st, testSecret)
	_, err := a.CreateTenant(ctx, "acme", 0, 0, nil)
	require.NoError(t, err)
	_, err = a.CreateTenant(ctx, "beta", 0, 0, nil)
	require.NoError(t, err)

	key, k, err := a.CreateKey(ctx, "acme", "")
	require.NoError(t, err)
	require.Regexp(t, `^sk-strata-[0-9A-Za-z]{43}$`, key)
	require.Regexp(t, `^key_[0-9A-Za-z]{16}$`, k.ID)
	require.Equal(t, key[:14], k.Prefix)
	require.Equal(t, hashKey(testSecret, key), k.Hash)
	got, _, err := st.APIKeyByHash(ctx, hashKey(testSecret, key))
	require.NoError(t, err)
	require.Equal(t, k.ID, got.ID)

	key2, k2, err := a.CreateKey(ctx, "beta", "sk-dev-0123456789")
	require.NoError(t, err)
	require.Equal(t, "sk-dev-0123456789", key2)
	_, _, err = a.CreateKey(ctx, "beta", "sk-dev-0123456789")
	require.ErrorIs(t, err, store.ErrExists)
	_, _, err = a.CreateKey(ctx, "beta", "short")
	require.ErrorContains(t, err, "8 to 256")
	_, _, err = a.CreateKey(ctx, "nope", "")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, _, err = a.CreateKey(ctx, "", "")
	require.Error(t, err)

	keys, err := a.ListKeys(ctx, "")
	require.NoError(t, err)
	require.Len(t, keys, 2)
	keys, err = a.ListKeys(ctx, "beta")
	require.NoError(t, err)
	require.Equal(t, []string{k2.ID}, []string{keys[0].ID})
	_, err = a.ListKeys(ctx, "nope")
	require.ErrorIs(t, err, store.ErrNotFound)

	require.NoError(t, a.RevokeKey(ctx, k2.ID))
	require.ErrorIs(t, a.RevokeKey(ctx, "key_nope"), store.ErrNotFound)
	keys, err = a.ListKeys(ctx, "beta")
	require.NoError(t, err)
	require.False(t, keys[0].RevokedAt.IsZero())
}

func TestAdminUsage(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	_, err := h.admin.CreateTenant(ctx, "other", 0, 0, nil)
	require.NoError(t, err)
	otherKey, _, err := h.admin.CreateKey(ctx, "other", "")
	require.NoError(t, err)
	for i := range 3 {
		h.clk.Step(time.Second)
		require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "acme-"+string(rune('a'+i))).Code)
	}
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, "Authorization", "Bearer "+otherKey).Code)
	recs, err := h.admin.Usage(ctx, "acme", 2)
	require.NoError(t, err)
	require.Equal(t, []string{"acme-c", "acme-b"}, []string{recs[0].RequestID, recs[1].RequestID})
	recs, err = h.admin.Usage(ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	_, err = h.admin.Usage(ctx, "nope", 0)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestEnsureDevTenant(t *testing.T) {
	h := newHarness(t, 0, 0) // has tenant acme: nothing to do
	key, created, err := h.admin.EnsureDevTenant(context.Background(), "dev", 600, 1000000, "")
	require.NoError(t, err)
	require.False(t, created)
	require.Empty(t, key)

	ctx := context.Background()
	a := NewAdmin(openTestStore(t), testSecret)
	_, _, err = a.EnsureDevTenant(ctx, "bad name", 1, 1, "")
	require.Error(t, err)
	key, created, err = a.EnsureDevTenant(ctx, "dev", 600, 1000000, "sk-dev-from-the-environment")
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "sk-dev-from-the-environment", key)
	tenants, err := a.ListTenants(ctx)
	require.NoError(t, err)
	require.Len(t, tenants, 1)
	require.Equal(t, 600, tenants[0].RPM)
	require.Equal(t, 1000000, tenants[0].TPM)
	keys, err := a.ListKeys(ctx, "dev")
	require.NoError(t, err)
	require.Len(t, keys, 1)

	key, created, err = a.EnsureDevTenant(ctx, "dev", 600, 1000000, "")
	require.NoError(t, err)
	require.False(t, created)
	require.Empty(t, key)
}
