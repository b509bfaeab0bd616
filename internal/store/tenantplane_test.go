package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

// gwPostgresURL is the PostgreSQL the store suite also runs against.
const gwPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// gwEachStore runs fn against a fresh SQLite store and a fresh PostgreSQL store (skipped with a
// message when PostgreSQL is unreachable). Each PostgreSQL run gets its own schema, dropped at
// the end, so reruns and packages testing in parallel never see each other's rows.
func gwEachStore(t *testing.T, fn func(t *testing.T, st *store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := store.Open(context.Background(), config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "strata.db")})
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		ctx := context.Background()
		admin, err := sql.Open("pgx", gwPostgresURL)
		require.NoError(t, err)
		defer admin.Close()
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := admin.PingContext(pctx); err != nil {
			t.Skipf("PostgreSQL at %s unreachable, skipping the PostgreSQL half of the suite: %v", gwPostgresURL, err)
		}
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		schema := "strata_gw_test_" + hex.EncodeToString(b)
		_, err = admin.ExecContext(ctx, "CREATE SCHEMA "+schema)
		require.NoError(t, err)
		t.Cleanup(func() {
			db, err := sql.Open("pgx", gwPostgresURL)
			if err == nil {
				_, _ = db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
				db.Close()
			}
		})
		st, err := store.Open(ctx, config.Store{Driver: "postgres", DSN: gwPostgresURL + "&search_path=" + schema})
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
}

var gwT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestTenants(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		n, err := st.CountTenants(ctx)
		require.NoError(t, err)
		require.Zero(t, n)

		acme := &store.Tenant{ID: "ten_a", Name: "acme", ExternalID: "cus_1", RPM: 60, TPM: 1000, Models: []string{"m1", "m2"}, CreatedAt: gwT0}
		require.NoError(t, st.CreateTenant(ctx, acme))
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_b", Name: "beta", CreatedAt: gwT0.Add(time.Second)}))
		require.ErrorIs(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_c", Name: "acme", CreatedAt: gwT0}), store.ErrExists)
		require.ErrorIs(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_a", Name: "other", CreatedAt: gwT0}), store.ErrExists)

		got, err := st.TenantByName(ctx, "acme")
		require.NoError(t, err)
		require.Equal(t, acme, got)
		got, err = st.Tenant(ctx, "ten_b")
		require.NoError(t, err)
		require.Nil(t, got.Models)
		require.True(t, got.Allows("anything"))
		require.True(t, acme.Allows("m2"))
		require.False(t, acme.Allows("m3"))

		_, err = st.TenantByName(ctx, "nope")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = st.Tenant(ctx, "ten_nope")
		require.ErrorIs(t, err, store.ErrNotFound)

		all, err := st.ListTenants(ctx)
		require.NoError(t, err)
		require.Len(t, all, 2)
		require.Equal(t, []string{"acme", "beta"}, []string{all[0].Name, all[1].Name})
		n, err = st.CountTenants(ctx)
		require.NoError(t, err)
		require.Equal(t, 2, n)
	})
}

func TestCreateTenantWithKeyIsAtomic(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_a", Name: "a", CreatedAt: gwT0},
			&store.APIKey{ID: "key_1", TenantID: "ten_a", Prefix: "sk-strata-AAAA", Hash: []byte("h1"), CreatedAt: gwT0}))
		// The key's hash collides, so neither the tenant nor its key may remain.
		err := st.CreateTenant(ctx, &store.Tenant{ID: "ten_b", Name: "b", CreatedAt: gwT0},
			&store.APIKey{ID: "key_2", TenantID: "ten_b", Prefix: "sk-strata-BBBB", Hash: []byte("h1"), CreatedAt: gwT0})
		require.ErrorIs(t, err, store.ErrExists)
		_, err = st.TenantByName(ctx, "b")
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestAPIKeys(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		ten := &store.Tenant{ID: "ten_a", Name: "acme", RPM: 5, Models: []string{"m"}, CreatedAt: gwT0}
		require.NoError(t, st.CreateTenant(ctx, ten))
		require.NoError(t, st.CreateTenant(ctx, &store.Tenant{ID: "ten_b", Name: "beta", CreatedAt: gwT0}))
		k1 := &store.APIKey{ID: "key_1", TenantID: "ten_a", Prefix: "sk-strata-AAAA", Hash: []byte{1, 2, 3}, CreatedAt: gwT0}
		k2 := &store.APIKey{ID: "key_2", TenantID: "ten_b", Prefix: "sk-strata-BBBB", Hash: []byte{4, 5, 6}, CreatedAt: gwT0.Add(time.Second)}
		require.NoError(t, st.CreateAPIKey(ctx, k1))
		require.NoError(t, st.CreateAPIKey(ctx, k2))
		require.ErrorIs(t, st.CreateAPIKey(ctx, &store.APIKey{ID: "key_3", TenantID: "ten_a", Hash: []byte{1, 2, 3}, CreatedAt: gwT0}), store.ErrExists)
		require.ErrorIs(t, st.CreateAPIKey(ctx, &store.APIKey{ID: "key_4", TenantID: "ten_x", Hash: []byte{9}, CreatedAt: gwT0}), store.ErrNotFound)

		k, tn, err := st.APIKeyByHash(ctx, []byte{1, 2, 3})
		require.NoError(t, err)
		require.Equal(t, k1, k)
		require.Equal(t, ten, tn)
		_, _, err = st.APIKeyByHash(ctx, []byte{7})
		require.ErrorIs(t, err, store.ErrNotFound)

		keys, err := st.ListAPIKeys(ctx, "")
		require.NoError(t, err)
		require.Equal(t, []store.APIKey{*k1, *k2}, keys)
		keys, err = st.ListAPIKeys(ctx, "ten_b")
		require.NoError(t, err)
		require.Equal(t, []store.APIKey{*k2}, keys)

		// Touch only moves forward.
		require.NoError(t, st.TouchAPIKey(ctx, "key_1", gwT0.Add(time.Minute)))
		require.NoError(t, st.TouchAPIKey(ctx, "key_1", gwT0.Add(30*time.Second)))
		got, err := st.APIKey(ctx, "key_1")
		require.NoError(t, err)
		require.Equal(t, gwT0.Add(time.Minute), got.LastUsedAt)

		// Revoke keeps the first time; unknown ids are ErrNotFound.
		require.NoError(t, st.RevokeAPIKey(ctx, "key_1", gwT0.Add(time.Hour)))
		require.NoError(t, st.RevokeAPIKey(ctx, "key_1", gwT0.Add(2*time.Hour)))
		require.ErrorIs(t, st.RevokeAPIKey(ctx, "key_nope", gwT0), store.ErrNotFound)
		k, _, err = st.APIKeyByHash(ctx, []byte{1, 2, 3})
		require.NoError(t, err)
		require.Equal(t, gwT0.Add(time.Hour), k.RevokedAt)
		require.True(t, k.Revoked(gwT0.Add(time.Hour)))
		require.False(t, k.Revoked(gwT0))
	})
}

func TestUsage(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		rec := func(id, tenant string, at time.Time) *store.UsageRecord {
			return &store.UsageRecord{RequestID: id, TenantID: tenant, KeyID: "key_1", Model: "m", Endpoint: "sim-0", GPU: "H100-SXM",
				PromptTokens: 120, CachedTokens: 64, CompletionTokens: 33, TTFT: 41 * time.Millisecond, Duration: 900 * time.Millisecond,
				Status: 200, Stream: true, Source: store.UsageEngine, CreatedAt: at}
		}
		r1 := rec("req-1", "ten_a", gwT0)
		ok, err := st.InsertUsage(ctx, r1)
		require.NoError(t, err)
		require.True(t, ok)

		// A retried write of the same request id leaves the first record unchanged.
		dup := rec("req-1", "ten_a", gwT0.Add(time.Hour))
		dup.CompletionTokens = 999
		ok, err = st.InsertUsage(ctx, dup)
		require.NoError(t, err)
		require.False(t, ok)
		got, err := st.UsageByRequestID(ctx, "req-1")
		require.NoError(t, err)
		require.Equal(t, r1, got)
		_, err = st.UsageByRequestID(ctx, "req-nope")
		require.ErrorIs(t, err, store.ErrNotFound)

		r2 := rec("req-2", "ten_b", gwT0.Add(time.Minute))
		r2.Stream, r2.Source = false, store.UsageEstimated
		r3 := rec("req-3", "ten_a", gwT0.Add(2*time.Minute))
		for _, r := range []*store.UsageRecord{r2, r3} {
			ok, err := st.InsertUsage(ctx, r)
			require.NoError(t, err)
			require.True(t, ok)
		}
		for _, tc := range []struct {
			name string
			f    store.UsageFilter
			want []*store.UsageRecord
		}{
			{"all newest first", store.UsageFilter{}, []*store.UsageRecord{r3, r2, r1}},
			{"tenant", store.UsageFilter{TenantID: "ten_a"}, []*store.UsageRecord{r3, r1}},
			{"limit", store.UsageFilter{Limit: 1}, []*store.UsageRecord{r3}},
			{"since until", store.UsageFilter{Since: gwT0.Add(time.Minute), Until: gwT0.Add(2 * time.Minute)}, []*store.UsageRecord{r2}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := st.ListUsage(ctx, tc.f)
				require.NoError(t, err)
				want := make([]store.UsageRecord, len(tc.want))
				for i, r := range tc.want {
					want[i] = *r
				}
				require.Equal(t, want, got)
			})
		}
	})
}

// TestUsageConcurrentSameRequestID races writers of one request id: exactly one wins.
func TestUsageConcurrentSameRequestID(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		var mu sync.Mutex
		inserted := 0
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := st.InsertUsage(ctx, &store.UsageRecord{RequestID: "req-race", TenantID: "ten_a", KeyID: fmt.Sprint(i),
					Source: store.UsageEngine, CreatedAt: gwT0})
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					inserted++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		require.Equal(t, 1, inserted)
		recs, err := st.ListUsage(ctx, store.UsageFilter{})
		require.NoError(t, err)
		require.Len(t, recs, 1)
	})
}
