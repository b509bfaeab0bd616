package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

func gwKey(id, tenant string, hashByte byte) *store.APIKey {
	h := make([]byte, 32)
	h[0] = hashByte
	return &store.APIKey{ID: id, TenantID: tenant, Prefix: "sk-strata-" + id[len(id)-1:], Hash: h, CreatedAt: gwT0}
}

// TestExternalIDUniqueAndUpdate: external ids are unique when set, any number of tenants may
// leave it empty, and UpdateTenant changes only the fields it is given.
func TestExternalIDUniqueAndUpdate(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_a", Name: "a", ExternalID: "cus_1", CreatedAt: gwT0}))
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_b", Name: "b", CreatedAt: gwT0}))
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_c", Name: "c", CreatedAt: gwT0}), "empty external ids do not collide")
		err := st.CreateTenant(ctx, &store.Tenant{ID: "ten_d", Name: "d", ExternalID: "cus_1", CreatedAt: gwT0})
		require.ErrorIs(t, err, store.ErrExists)

		dup := "cus_1"
		_, err = st.UpdateTenant(ctx, "ten_b", store.TenantUpdate{ExternalID: &dup})
		require.ErrorIs(t, err, store.ErrExists)
		ext, rpm, on := "cus_2", 7, true
		models := []string{"m1", "m2"}
		got, err := st.UpdateTenant(ctx, "ten_b", store.TenantUpdate{ExternalID: &ext, RPM: &rpm, Models: &models, IOLog: &on})
		require.NoError(t, err)
		require.Equal(t, "cus_2", got.ExternalID)
		require.Equal(t, 7, got.RPM)
		require.Equal(t, 0, got.TPM, "untouched")
		require.Equal(t, []string{"m1", "m2"}, got.Models)
		require.True(t, got.IOLog)
		byExt, err := st.TenantByExternalID(ctx, "cus_2")
		require.NoError(t, err)
		require.Equal(t, "ten_b", byExt.ID)
		_, err = st.TenantByExternalID(ctx, "")
		require.ErrorIs(t, err, store.ErrNotFound)
		empty := ""
		_, err = st.UpdateTenant(ctx, "ten_a", store.TenantUpdate{ExternalID: &empty})
		require.NoError(t, err)
		_, err = st.UpdateTenant(ctx, "ten_nope", store.TenantUpdate{RPM: &rpm})
		require.ErrorIs(t, err, store.ErrNotFound)

		ids, err := st.IOLogTenants(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"ten_b"}, ids)
	})
}

// TestKeyExpiryAndRotation: expiry round-trips through every read; rotation inserts the new key
// and ends the old one's validity at the grace end in one transaction, once.
func TestKeyExpiryAndRotation(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_a", Name: "a", CreatedAt: gwT0}))
		old := gwKey("key_1", "ten_a", 1)
		old.ExpiresAt = gwT0.Add(48 * time.Hour)
		rpm := int64(5)
		old.Policy = config.Policy{RPM: &rpm}
		require.NoError(t, st.CreateAPIKey(ctx, old))
		k, _, err := st.APIKeyByHash(ctx, old.Hash)
		require.NoError(t, err)
		require.Equal(t, old.ExpiresAt, k.ExpiresAt)
		require.True(t, k.Valid(gwT0))
		require.False(t, k.Valid(gwT0.Add(48*time.Hour)), "expired at expires_at")

		next := gwKey("key_2", "", 2)
		next.CreatedAt = gwT0.Add(time.Hour)
		graceEnd := next.CreatedAt.Add(24 * time.Hour)
		gotOld, err := st.RotateAPIKey(ctx, "key_1", next, graceEnd)
		require.NoError(t, err)
		require.Equal(t, "key_2", gotOld.ReplacedBy)
		require.Equal(t, graceEnd, gotOld.RevokedAt)
		require.True(t, gotOld.Valid(graceEnd.Add(-time.Millisecond)), "valid during the grace period")
		require.False(t, gotOld.Valid(graceEnd))
		n, tn, err := st.APIKeyByHash(ctx, next.Hash)
		require.NoError(t, err)
		require.Equal(t, "ten_a", tn.ID)
		require.Equal(t, old.ExpiresAt, n.ExpiresAt, "inherits the expiry")
		require.Equal(t, int64(5), *n.Policy.RPM, "inherits the policy")

		_, err = st.RotateAPIKey(ctx, "key_1", gwKey("key_3", "", 3), graceEnd)
		require.ErrorIs(t, err, store.ErrExists, "a key is rotated once")
		_, err = st.RotateAPIKey(ctx, "key_nope", gwKey("key_4", "", 4), graceEnd)
		require.ErrorIs(t, err, store.ErrNotFound)
		require.NoError(t, st.RevokeAPIKey(ctx, "key_2", gwT0.Add(time.Hour)))
		late := gwKey("key_5", "", 5)
		late.CreatedAt = gwT0.Add(2 * time.Hour)
		_, err = st.RotateAPIKey(ctx, "key_2", late, graceEnd)
		require.ErrorIs(t, err, store.ErrNotFound, "a revoked key cannot be rotated")

		require.NoError(t, st.SetAPIKeyExpiry(ctx, "key_2", time.Time{}))
		k2, err := st.APIKey(ctx, "key_2")
		require.NoError(t, err)
		require.True(t, k2.ExpiresAt.IsZero())
		require.ErrorIs(t, st.SetAPIKeyExpiry(ctx, "key_nope", gwT0), store.ErrNotFound)
	})
}

// TestTouchAPIKeysBatch: one batch writes every key and never moves last_used_at back.
func TestTouchAPIKeysBatch(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_a", Name: "a", CreatedAt: gwT0}, gwKey("key_1", "ten_a", 1), gwKey("key_2", "ten_a", 2)))
		require.NoError(t, st.TouchAPIKeys(ctx, map[string]time.Time{"key_1": gwT0.Add(time.Minute), "key_2": gwT0.Add(2 * time.Minute), "key_gone": gwT0}))
		require.NoError(t, st.TouchAPIKeys(ctx, map[string]time.Time{"key_1": gwT0}))
		require.NoError(t, st.TouchAPIKeys(ctx, nil))
		k1, err := st.APIKey(ctx, "key_1")
		require.NoError(t, err)
		require.Equal(t, gwT0.Add(time.Minute), k1.LastUsedAt)
		k2, err := st.APIKey(ctx, "key_2")
		require.NoError(t, err)
		require.Equal(t, gwT0.Add(2*time.Minute), k2.LastUsedAt)
	})
}

// TestTierPricesGPUCostsBills: the tier price book, the GPU cost table, GPU time per type, and
// bill versions numbered per tenant and period.
func TestTierPricesGPUCostsBills(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		tp := &store.TierPrice{Tier: "gold", Price: store.Price{Model: "m1", EffectiveAt: gwT0, InputMicros: 1, CachedMicros: 2, OutputMicros: 3, CreatedAt: gwT0}}
		require.NoError(t, st.SetTierPrice(ctx, tp))
		tp.OutputMicros = 4
		require.NoError(t, st.SetTierPrice(ctx, tp), "same key: replaced")
		tps, err := st.ListTierPrices(ctx)
		require.NoError(t, err)
		require.Equal(t, []store.TierPrice{*tp}, tps)

		c := &store.GPUCost{GPU: "H100", EffectiveAt: gwT0, MicrosPerHour: 2_500_000, CreatedAt: gwT0}
		require.NoError(t, st.SetGPUCost(ctx, c))
		c.MicrosPerHour = 3_000_000
		require.NoError(t, st.SetGPUCost(ctx, c))
		cs, err := st.ListGPUCosts(ctx)
		require.NoError(t, err)
		require.Equal(t, []store.GPUCost{*c}, cs)

		for i, u := range []struct {
			tenant, gpu string
			dur         time.Duration
		}{{"ten_a", "H100", time.Second}, {"ten_a", "H100", 2 * time.Second}, {"ten_a", "", time.Second}, {"ten_b", "H100", time.Hour}} {
			_, err := st.InsertUsage(ctx, &store.UsageRecord{RequestID: string(rune('a' + i)), TenantID: u.tenant, KeyID: "k", Model: "m1", GPU: u.gpu,
				Duration: u.dur, Status: 200, Source: store.UsageEngine, CreatedAt: gwT0.Add(time.Duration(i) * time.Second)})
			require.NoError(t, err)
		}
		gt, err := st.UsageGPUTime(ctx, "ten_a", gwT0, gwT0.Add(time.Hour))
		require.NoError(t, err)
		require.Equal(t, []store.GPUTime{{GPU: "", Requests: 1, DurationMillis: 1000}, {GPU: "H100", Requests: 2, DurationMillis: 3000}}, gt)

		for want := int64(1); want <= 2; want++ {
			b := &store.Bill{TenantID: "ten_a", Period: "2026-01", RatedAt: gwT0, Actor: "cli", CostMicros: 10 * want, Lines: `{}`}
			require.NoError(t, st.InsertBill(ctx, b))
			require.Equal(t, want, b.Version)
		}
		require.NoError(t, st.InsertBill(ctx, &store.Bill{TenantID: "ten_b", Period: "2026-01", RatedAt: gwT0, Actor: "cli", Lines: `{}`}))
		bs, err := st.ListBills(ctx, "ten_a", "2026-01")
		require.NoError(t, err)
		require.Len(t, bs, 2)
		require.Equal(t, int64(20), bs[1].CostMicros)
		all, err := st.ListBills(ctx, "", "")
		require.NoError(t, err)
		require.Len(t, all, 3)
	})
}

// TestIOLogStore: entries round-trip byte for byte (bodies are BLOBs: any bytes), list newest
// first per tenant, and purge deletes only what is older than the cutoff.
func TestIOLogStore(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		for i, tenant := range []string{"ten_a", "ten_a", "ten_b"} {
			require.NoError(t, st.InsertIOLog(ctx, &store.IOLogEntry{ID: "io_" + string(rune('0'+i)), TenantID: tenant, KeyID: "k", RequestID: "r",
				Model: "m", Request: []byte{0xff, 0x00, '{'}, Response: nil, CreatedAt: gwT0.Add(time.Duration(i) * time.Hour)}))
		}
		require.ErrorIs(t, st.InsertIOLog(ctx, &store.IOLogEntry{ID: "io_0", CreatedAt: gwT0}), store.ErrExists)
		es, err := st.ListIOLog(ctx, "ten_a", 0)
		require.NoError(t, err)
		require.Len(t, es, 2)
		require.Equal(t, "io_1", es[0].ID, "newest first")
		require.Equal(t, []byte{0xff, 0x00, '{'}, es[0].Request)
		require.Empty(t, es[0].Response)
		n, err := st.PurgeIOLog(ctx, gwT0.Add(90*time.Minute))
		require.NoError(t, err)
		require.Equal(t, int64(2), n)
		es, err = st.ListIOLog(ctx, "", 10)
		require.NoError(t, err)
		require.Len(t, es, 1)
		require.Equal(t, "io_2", es[0].ID)
	})
}
