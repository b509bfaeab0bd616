package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/store"
)

func ledgerRecord(id, tenant string, completion int64) *store.UsageRecord {
	return &store.UsageRecord{RequestID: id, TenantID: tenant, KeyID: "key_1", Model: "m", Adapter: "sql-lora", Endpoint: "sim-0",
		GPU: "H100-SXM", PromptTokens: 10, CachedTokens: 4, CompletionTokens: completion, TTFT: 5 * time.Millisecond,
		Duration: 30 * time.Millisecond, Status: 200, Stream: true, Source: store.UsageEngine, BilledReason: store.BilledComplete, CreatedAt: gwT0}
}

// TestWriteUsageBatch: records and their outbox events commit together; a replay writes nothing;
// a different record under a used id is re-keyed deterministically; the outbox delivers, retries
// and dead-letters; a failed event rolls its whole batch back. Both dialects.
func TestWriteUsageBatch(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		event := func(r *store.UsageRecord) ([]byte, error) { return []byte(`{"id":"` + r.RequestID + `"}`), nil }
		a, b := ledgerRecord("req-a", "ten_a", 3), ledgerRecord("req-b", "ten_a", 5)
		reuse := ledgerRecord("req-a", "ten_b", 9)
		outs, err := st.WriteUsageBatch(ctx, []*store.UsageRecord{a, b, a, reuse}, event)
		require.NoError(t, err)
		rekeyed := store.RekeyedUsageID(reuse)
		require.Equal(t, []store.UsageOutcome{{StoredID: "req-a", Inserted: true}, {StoredID: "req-b", Inserted: true},
			{StoredID: "req-a"}, {StoredID: rekeyed, Inserted: true, Rekeyed: true}}, outs)
		outs, err = st.WriteUsageBatch(ctx, []*store.UsageRecord{reuse}, event)
		require.NoError(t, err)
		require.Equal(t, []store.UsageOutcome{{StoredID: rekeyed, Rekeyed: true}}, outs, "a replay of the re-keyed record")

		got, err := st.UsageByRequestID(ctx, rekeyed)
		require.NoError(t, err)
		want := *reuse
		want.RequestID = rekeyed
		require.Equal(t, want, *got)
		ok, err := st.UsageExists(ctx, "req-b")
		require.NoError(t, err)
		require.True(t, ok)

		n, err := st.PendingUsageEvents(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(3), n)
		due, err := st.DueUsageEvents(ctx, gwT0, 10)
		require.NoError(t, err)
		require.Len(t, due, 3)
		require.NoError(t, st.AckUsageEvents(ctx, []string{"req-a"}))
		require.NoError(t, st.FailUsageEvent(ctx, "req-b", 1, "webhook answered 500", gwT0.Add(time.Second), false))
		require.NoError(t, st.FailUsageEvent(ctx, rekeyed, 3, "webhook answered 500", gwT0, true))
		due, err = st.DueUsageEvents(ctx, gwT0, 10)
		require.NoError(t, err)
		require.Empty(t, due, "req-b not due yet, the other dead")
		due, err = st.DueUsageEvents(ctx, gwT0.Add(time.Second), 10)
		require.NoError(t, err)
		require.Len(t, due, 1)
		require.Equal(t, "req-b", due[0].ID)
		require.Equal(t, 1, due[0].Attempts)
		require.Equal(t, `{"id":"req-b"}`, string(due[0].Payload))
		dead, err := st.DeadUsageEvents(ctx, 10)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, rekeyed, dead[0].ID)
		require.Equal(t, gwT0, dead[0].DeadAt)

		_, err = st.WriteUsageBatch(ctx, []*store.UsageRecord{ledgerRecord("req-c", "ten_a", 1), ledgerRecord("req-d", "ten_a", 1)},
			func(r *store.UsageRecord) ([]byte, error) {
				if r.RequestID == "req-d" {
					return nil, errors.New("boom")
				}
				return []byte(`{}`), nil
			})
		require.Error(t, err)
		ok, err = st.UsageExists(ctx, "req-c")
		require.NoError(t, err)
		require.False(t, ok, "the batch rolled back as a whole")
	})
}

// TestWriteUsageBatchConcurrentReplays: many transactions writing the same record at once leave
// one record and one event.
func TestWriteUsageBatchConcurrentReplays(t *testing.T) {
	gwEachStore(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		inserted := make([]bool, 8)
		for i := range inserted {
			wg.Go(func() {
				outs, err := st.WriteUsageBatch(ctx, []*store.UsageRecord{ledgerRecord("req-same", "ten_a", 2)},
					func(*store.UsageRecord) ([]byte, error) { return []byte(`{}`), nil })
				if err == nil {
					inserted[i] = outs[0].Inserted
				}
			})
		}
		wg.Wait()
		n := 0
		for _, ok := range inserted {
			if ok {
				n++
			}
		}
		require.Equal(t, 1, n)
		recs, err := st.ListUsage(ctx, store.UsageFilter{})
		require.NoError(t, err)
		require.Len(t, recs, 1)
		pending, err := st.PendingUsageEvents(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(1), pending)
	})
}
