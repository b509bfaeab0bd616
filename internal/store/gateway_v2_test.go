package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

func p64(v int64) *int64 { return &v }

func TestGatewayMigrations(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		v, err := st.GatewayMigrations(ctx)
		require.NoError(t, err)
		require.Equal(t, gwAllVersions(), v)
		require.GreaterOrEqual(t, store.GatewaySchemaVersion, 5)
		require.NoError(t, st.MigrateGateway(ctx), "applying again is a no-op")
		v, err = st.GatewayMigrations(ctx)
		require.NoError(t, err)
		require.Equal(t, gwAllVersions(), v)
	})
}

func TestGatewayMigrationsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	cfg := config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "strata.db")}
	st, err := store.Open(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_a", Name: "a", Tier: "gold", CreatedAt: gwT0}))
	require.NoError(t, st.Close())
	st, err = store.Open(ctx, cfg)
	require.NoError(t, err)
	defer st.Close()
	got, err := st.TenantByName(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, "gold", got.Tier)
	v, err := st.GatewayMigrations(ctx)
	require.NoError(t, err)
	require.Equal(t, gwAllVersions(), v)
}

// gwAllVersions is every recorded gateway migration version: 2..GatewaySchemaVersion.
func gwAllVersions() []int {
	var out []int
	for v := 2; v <= store.GatewaySchemaVersion; v++ {
		out = append(out, v)
	}
	return out
}

func TestPolicyOverrides(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		obj := "batch"
		ten := &store.Tenant{ID: "ten_a", Name: "a", CreatedAt: gwT0, Tier: "free", Policy: config.Policy{RPM: p64(7), Objective: &obj}}
		key := &store.APIKey{ID: "key_a", TenantID: "ten_a", Prefix: "sk-strata-AAAA", Hash: make([]byte, 32), CreatedAt: gwT0,
			Policy: config.Policy{Models: []string{"m1"}, MaxTokensCap: p64(100)}}
		require.NoError(t, st.CreateTenant(ctx, ten, key))
		k, tn, err := st.APIKeyByHash(ctx, key.Hash)
		require.NoError(t, err)
		require.Equal(t, ten, tn)
		require.Equal(t, key.Policy, k.Policy)

		require.NoError(t, st.SetTenantPolicy(ctx, "ten_a", "gold", config.Policy{MonthlySpendMicros: p64(5_000_000)}))
		require.NoError(t, st.SetAPIKeyPolicy(ctx, "key_a", config.Policy{}))
		k, tn, err = st.APIKeyByHash(ctx, key.Hash)
		require.NoError(t, err)
		require.Equal(t, "gold", tn.Tier)
		require.Equal(t, config.Policy{MonthlySpendMicros: p64(5_000_000)}, tn.Policy)
		require.Equal(t, config.Policy{}, k.Policy)
		keys, err := st.ListAPIKeys(ctx, "ten_a")
		require.NoError(t, err)
		require.Equal(t, config.Policy{}, keys[0].Policy)

		require.ErrorIs(t, st.SetTenantPolicy(ctx, "ten_nope", "", config.Policy{}), store.ErrNotFound)
		require.ErrorIs(t, st.SetAPIKeyPolicy(ctx, "key_nope", config.Policy{}), store.ErrNotFound)
	})
}

func TestPricesAndTotals(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		p1 := &store.Price{Model: "m", EffectiveAt: gwT0, InputMicros: 1_000_000, CachedMicros: 100_000, OutputMicros: 2_000_000, CreatedAt: gwT0}
		p2 := &store.Price{Model: "m", EffectiveAt: gwT0.Add(time.Hour), InputMicros: 3, CachedMicros: 2, OutputMicros: 1, CreatedAt: gwT0}
		p0 := &store.Price{Model: "a", EffectiveAt: gwT0, InputMicros: 9, CachedMicros: 9, OutputMicros: 9, CreatedAt: gwT0}
		for _, p := range []*store.Price{p2, p1, p0} {
			require.NoError(t, st.SetPrice(ctx, p))
		}
		p2.OutputMicros = 4 // a correction replaces the entry of the same instant
		require.NoError(t, st.SetPrice(ctx, p2))
		got, err := st.ListPrices(ctx)
		require.NoError(t, err)
		require.Equal(t, []store.Price{*p0, *p1, *p2}, got)

		for i, r := range []struct {
			tenant, model string
			at            time.Duration
			reason        string
		}{{"ten_a", "m", 0, store.BilledComplete}, {"ten_a", "m", time.Minute, store.BilledClientDisconnect},
			{"ten_b", "m", time.Minute, store.BilledComplete}, {"ten_a", "n", 2 * time.Minute, store.BilledUpstreamError},
			{"ten_a", "m", time.Hour, store.BilledComplete}} {
			u := &store.UsageRecord{RequestID: string(rune('a' + i)), TenantID: r.tenant, KeyID: "k", Model: r.model,
				PromptTokens: 10, CachedTokens: 4, CompletionTokens: 3, Status: 200, Source: store.UsageEngine,
				CreatedAt: gwT0.Add(r.at), BilledReason: r.reason}
			ok, err := st.InsertUsage(ctx, u)
			require.NoError(t, err)
			require.True(t, ok)
			back, err := st.UsageByRequestID(ctx, u.RequestID)
			require.NoError(t, err)
			require.Equal(t, r.reason, back.BilledReason)
		}
		tot, err := st.UsageTotals(ctx, "ten_a", gwT0, gwT0.Add(time.Hour))
		require.NoError(t, err)
		require.Equal(t, []store.UsageTotal{
			{Model: "m", Requests: 2, PromptTokens: 20, CachedTokens: 8, CompletionTokens: 6},
			{Model: "n", Requests: 1, PromptTokens: 10, CachedTokens: 4, CompletionTokens: 3},
		}, tot)
		tot, err = st.UsageTotals(ctx, "", gwT0.Add(30*time.Second), gwT0.Add(2*time.Hour))
		require.NoError(t, err)
		require.Equal(t, []store.UsageTotal{
			{Model: "m", Requests: 3, PromptTokens: 30, CachedTokens: 12, CompletionTokens: 9},
			{Model: "n", Requests: 1, PromptTokens: 10, CachedTokens: 4, CompletionTokens: 3},
		}, tot)
		tot, err = st.UsageTotals(ctx, "ten_z", gwT0, gwT0.Add(time.Hour))
		require.NoError(t, err)
		require.Empty(t, tot)
	})
}

func TestAuditAppendVerify(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		n, err := st.VerifyAudit(ctx)
		require.NoError(t, err)
		require.Zero(t, n)
		var wg sync.WaitGroup
		for i := range 20 { // concurrent appends never fork the chain
			wg.Go(func() {
				require.NoError(t, st.AppendAudit(ctx, &store.AuditEntry{At: gwT0, Actor: "cli", Action: "key.create", Target: fmt.Sprint(i), Detail: "{}"}))
			})
		}
		wg.Wait()
		n, err = st.VerifyAudit(ctx)
		require.NoError(t, err)
		require.Equal(t, 20, n)
		es, err := st.ListAudit(ctx)
		require.NoError(t, err)
		require.Len(t, es, 20)
		require.Equal(t, make([]byte, 32), es[0].PrevHash)
		require.Equal(t, es[0].Hash, es[1].PrevHash)
	})
}
