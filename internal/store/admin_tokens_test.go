package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/store"
)

func TestAdminTokens(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		hash := make([]byte, 32)
		hash[0] = 7
		tok := &store.AdminToken{ID: "adm_1", Name: "ops", Prefix: "sk-strata-admin-AAAA", Hash: hash,
			Scopes: []string{"read", "keys"}, CreatedAt: gwT0}
		require.NoError(t, st.CreateAdminToken(ctx, tok))
		require.ErrorIs(t, st.CreateAdminToken(ctx, &store.AdminToken{ID: "adm_2", Hash: hash, Scopes: []string{"read"}, CreatedAt: gwT0}), store.ErrExists)
		require.ErrorIs(t, st.CreateAdminToken(ctx, &store.AdminToken{ID: "adm_1", Hash: []byte{9}, Scopes: []string{"read"}, CreatedAt: gwT0}), store.ErrExists)
		require.Error(t, st.CreateAdminToken(ctx, &store.AdminToken{ID: "adm_3", Hash: []byte{8}, Scopes: []string{"a,b"}, CreatedAt: gwT0}))

		got, err := st.AdminTokenByHash(ctx, hash)
		require.NoError(t, err)
		require.Equal(t, tok, got)
		require.True(t, got.HasScope("keys"))
		require.False(t, got.HasScope("billing"))
		require.False(t, got.Revoked(gwT0.Add(time.Hour)))

		_, err = st.AdminTokenByHash(ctx, []byte{1})
		require.ErrorIs(t, err, store.ErrNotFound)

		// A tenant key's hash is never found among admin tokens.
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_a", Name: "a", CreatedAt: gwT0},
			&store.APIKey{ID: "key_a", TenantID: "ten_a", Prefix: "sk-strata-BBBB", Hash: []byte{5, 5}, CreatedAt: gwT0}))
		_, err = st.AdminTokenByHash(ctx, []byte{5, 5})
		require.ErrorIs(t, err, store.ErrNotFound)

		at := gwT0.Add(time.Minute)
		require.NoError(t, st.RevokeAdminToken(ctx, "adm_1", at))
		require.NoError(t, st.RevokeAdminToken(ctx, "adm_1", at.Add(time.Hour)), "revoking twice is fine")
		require.ErrorIs(t, st.RevokeAdminToken(ctx, "adm_none", at), store.ErrNotFound)
		got, err = st.AdminTokenByHash(ctx, hash)
		require.NoError(t, err)
		require.Equal(t, at, got.RevokedAt, "the first revocation time is kept")
		require.True(t, got.Revoked(at))
		require.False(t, got.Revoked(at.Add(-time.Millisecond)))

		require.NoError(t, st.CreateAdminToken(ctx, &store.AdminToken{ID: "adm_0", Hash: []byte{3}, Scopes: []string{"billing"}, CreatedAt: gwT0.Add(time.Second)}))
		list, err := st.ListAdminTokens(ctx)
		require.NoError(t, err)
		require.Len(t, list, 2)
		require.Equal(t, "adm_1", list[0].ID)
		require.Equal(t, []string{"billing"}, list[1].Scopes)
	})
}
