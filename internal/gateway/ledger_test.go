package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	testclock "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

func testRecord(id string, completion int64) *store.UsageRecord {
	return &store.UsageRecord{RequestID: id, TenantID: "ten_a", KeyID: "key_a", Model: "m1", Endpoint: "sim-0", GPU: "H100-SXM",
		PromptTokens: 10, CompletionTokens: completion, TTFT: 5 * time.Millisecond, Duration: 20 * time.Millisecond, Status: 200,
		Source: store.UsageEngine, BilledReason: store.BilledComplete, CreatedAt: t0}
}

func newTestLedger(t *testing.T, st *store.Store, cfg config.Ledger, clk *testclock.FakeClock) (*ledger, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := newLedger(st, cfg, clk, reg, slog.New(slog.DiscardHandler), nil, nil)
	require.NoError(t, err)
	t.Cleanup(l.Close)
	return l, reg
}

// writeAll writes recs from one goroutine each and returns their outcomes and errors in order.
func writeAll(l *ledger, recs []*store.UsageRecord) ([]store.UsageOutcome, []error) {
	outs, errs := make([]store.UsageOutcome, len(recs)), make([]error, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { outs[i], errs[i] = l.write(context.Background(), r) })
	}
	wg.Wait()
	return outs, errs
}

// TestLedgerGroupCommit: records of concurrent requests share one transaction, and each waiter
// is released with its own outcome when it commits. max_delay is long on a fake clock, so the
// batch closes only by being full: exactly one commit of all records.
func TestLedgerGroupCommit(t *testing.T) {
	st := openTestStore(t)
	const n = 64
	l, _ := newTestLedger(t, st, config.Ledger{MaxBatch: n, MaxDelay: config.Duration(time.Hour), WriteTimeout: config.Duration(10 * time.Second)},
		testclock.NewFakeClock(t0))
	recs := make([]*store.UsageRecord, n)
	for i := range recs {
		recs[i] = testRecord(fmt.Sprintf("req-%02d", i), int64(i))
	}
	outs, errs := writeAll(l, recs)
	for i := range recs {
		require.NoError(t, errs[i])
		require.Equal(t, store.UsageOutcome{StoredID: recs[i].RequestID, Inserted: true}, outs[i])
	}
	require.Equal(t, 1.0, testutil.ToFloat64(l.commits), "one transaction for the whole batch")
	require.Equal(t, float64(n), testutil.ToFloat64(l.records))
	got, err := st.ListUsage(context.Background(), store.UsageFilter{})
	require.NoError(t, err)
	require.Len(t, got, n)
}

// TestLedgerMaxDelay: a batch that is not full commits when max_delay has passed.
func TestLedgerMaxDelay(t *testing.T) {
	st := openTestStore(t)
	clk := testclock.NewFakeClock(t0)
	l, _ := newTestLedger(t, st, config.Ledger{MaxBatch: 100, MaxDelay: config.Duration(5 * time.Millisecond), WriteTimeout: config.Duration(10 * time.Second)}, clk)
	done := make(chan error, 1)
	go func() {
		_, err := l.write(context.Background(), testRecord("req-1", 1))
		done <- err
	}()
	require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond, "the writer waits for more records")
	select {
	case <-done:
		t.Fatal("committed before max_delay")
	default:
	}
	clk.Step(5 * time.Millisecond)
	require.NoError(t, <-done)
	require.Equal(t, 1.0, testutil.ToFloat64(l.commits))
}

// TestLedgerErrorsReachEachWaiter: a failed commit fails every record of the batch, each waiter
// with its own error, after the one-by-one retry; nothing is half-written.
func TestLedgerErrorsReachEachWaiter(t *testing.T) {
	st := openTestStore(t)
	l, _ := newTestLedger(t, st, config.Ledger{MaxBatch: 8, MaxDelay: config.Duration(time.Hour), WriteTimeout: config.Duration(10 * time.Second)},
		testclock.NewFakeClock(t0))
	require.NoError(t, st.Close())
	recs := make([]*store.UsageRecord, 8)
	for i := range recs {
		recs[i] = testRecord(fmt.Sprintf("req-%d", i), 1)
	}
	_, errs := writeAll(l, recs)
	for _, err := range errs {
		require.ErrorContains(t, err, "store: write usage")
	}
	require.Equal(t, 9.0, testutil.ToFloat64(l.errs), "the batch, then each record alone")
}

// TestLedgerCloseFlushes: Close commits every record handed over, then refuses new ones.
func TestLedgerCloseFlushes(t *testing.T) {
	st := openTestStore(t)
	reg := prometheus.NewRegistry()
	l, err := newLedger(st, config.Ledger{MaxBatch: 4, WriteTimeout: config.Duration(10 * time.Second)}, testclock.NewFakeClock(t0), reg,
		slog.New(slog.DiscardHandler), nil, nil)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Go(func() { _, errs[i] = l.write(context.Background(), testRecord(fmt.Sprintf("req-%d", i), 1)) })
	}
	wg.Wait()
	l.Close()
	l.Close()
	for _, err := range errs {
		require.NoError(t, err)
	}
	_, err = l.write(context.Background(), testRecord("late", 1))
	require.ErrorIs(t, err, errLedgerClosed)
	got, err := st.ListUsage(context.Background(), store.UsageFilter{})
	require.NoError(t, err)
	require.Len(t, got, 50)
}

// TestLedgerReplayAndReuse: a replayed record (same id, same content) leaves one record; a
// different request under a used id is re-keyed deterministically, never dropped; its replay
// also leaves one record. Same within one batch and across batches.
func TestLedgerReplayAndReuse(t *testing.T) {
	for _, sameBatch := range []bool{false, true} {
		t.Run(fmt.Sprint("same batch ", sameBatch), func(t *testing.T) {
			st := openTestStore(t)
			cfg := config.Ledger{MaxBatch: 1, WriteTimeout: config.Duration(10 * time.Second)}
			if sameBatch {
				cfg = config.Ledger{MaxBatch: 3, MaxDelay: config.Duration(time.Hour), WriteTimeout: config.Duration(10 * time.Second)}
			}
			l, _ := newTestLedger(t, st, cfg, testclock.NewFakeClock(t0))
			first := testRecord("req-x", 3)
			replay := testRecord("req-x", 3)
			other := testRecord("req-x", 7) // another request reusing the id
			other.TenantID = "ten_b"
			otherReplay := *other
			recs := []*store.UsageRecord{first, replay, other, &otherReplay}
			var outs []store.UsageOutcome
			if sameBatch {
				// The first alone (it owns the id), then the other three in one batch.
				single, err := newLedger(st, config.Ledger{MaxBatch: 1}, testclock.NewFakeClock(t0), prometheus.NewRegistry(),
					slog.New(slog.DiscardHandler), nil, nil)
				require.NoError(t, err)
				o, err := single.write(context.Background(), first)
				require.NoError(t, err)
				rest, errs := writeAll(l, recs[1:])
				require.Equal(t, 1.0, testutil.ToFloat64(l.commits), "one batch")
				for _, err := range errs {
					require.NoError(t, err)
				}
				outs = append([]store.UsageOutcome{o}, rest...)
			} else {
				for _, r := range recs {
					o, err := l.write(context.Background(), r)
					require.NoError(t, err)
					outs = append(outs, o)
				}
			}
			rekeyed := store.RekeyedUsageID(other)
			require.Equal(t, store.UsageOutcome{StoredID: "req-x", Inserted: true}, outs[0])
			require.Equal(t, store.UsageOutcome{StoredID: "req-x"}, outs[1])
			inserted := 0
			for _, o := range outs[2:] {
				require.Equal(t, rekeyed, o.StoredID)
				require.True(t, o.Rekeyed)
				if o.Inserted {
					inserted++
				}
			}
			require.Equal(t, 1, inserted)
			got, err := st.ListUsage(context.Background(), store.UsageFilter{})
			require.NoError(t, err)
			require.Len(t, got, 2, "one record per request, none lost")
			byID := map[string]store.UsageRecord{}
			for _, r := range got {
				byID[r.RequestID] = r
			}
			require.Equal(t, int64(3), byID["req-x"].CompletionTokens)
			require.Equal(t, int64(7), byID[rekeyed].CompletionTokens)
			require.Equal(t, "ten_b", byID[rekeyed].TenantID)
		})
	}
}

// TestRecordRace: the completion path and the client-disconnect path of one request race to
// record it; exactly one record is written, with one reason, and both calls get its result. A
// replay of that record through the ledger leaves it alone.
func TestRecordRace(t *testing.T) {
	for i := range 20 {
		h := newHarness(t, 0, 0)
		p, err := h.gw.auth.authenticate(context.Background(), http.Header{"Authorization": {"Bearer " + h.key}})
		require.NoError(t, err)
		req, err := openai.ParseInferenceRequest(openai.PathChatCompletions, []byte(simpleChat))
		require.NoError(t, err)
		tk, adm, err := h.gw.admit(context.Background(), http.Header{}, p, "m1", 10, false, 256, 1)
		require.NoError(t, err)
		m := &metered{g: h.gw, p: p, path: openai.PathChatCompletions, req: req, requestID: fmt.Sprint("race-", i),
			start: h.clk.Now(), adm: adm, tk: tk, stream: true}
		u := &openai.Usage{PromptTokens: 9, CompletionTokens: 4, TotalTokens: 13}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		wg.Go(func() { errs[0] = m.record(context.Background(), 200, u, 4, time.Millisecond, store.BilledComplete) })
		wg.Go(func() {
			errs[1] = m.record(context.Background(), 200, u, 4, time.Millisecond, store.BilledClientDisconnect)
		})
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		recs := h.usage()
		require.Len(t, recs, 1)
		require.Contains(t, []string{store.BilledComplete, store.BilledClientDisconnect}, recs[0].BilledReason)

		out, err := h.gw.ledger.write(context.Background(), m.rec) // a replayed usage event
		require.NoError(t, err)
		require.False(t, out.Inserted)
		require.Equal(t, recs, h.usage())
	}
}

// TestRequestIDInFlight: a request id another request is serving is refused with 409; once it is
// released and metered it stays refused; a new id is accepted.
func TestRequestIDInFlight(t *testing.T) {
	h := newHarness(t, 0, 0)
	release, err := h.gw.claimRequestID("req-busy")
	require.NoError(t, err)
	w := h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-busy")
	require.Equal(t, 409, w.Code)
	require.Contains(t, w.Body.String(), `"code":"request_id_reused"`)
	release()
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-busy").Code)
	require.Equal(t, 409, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-busy").Code)
	require.Len(t, h.eng.seen(), 1, "refused requests never reach the engine")
	require.Equal(t, 2.0, testutil.ToFloat64(h.gw.mm.idReused))
}

// TestStreamDisconnectBilledExactly: with continuous usage from the engine, a client that leaves
// mid-stream is billed the engine's exact tokens so far, and the client never saw the usage it
// did not ask for.
func TestStreamDisconnectBilledExactly(t *testing.T) {
	h := newHarness(t, 0, 0)
	h.eng.set(func(e *fakeEngine) { e.mode = "hang" })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	r := httptest.NewRequestWithContext(ctx, "POST", openai.PathChatCompletions, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+h.key)
	r.Header.Set(openai.HeaderRequestID, "req-gone")
	w := &cancelAfterWrites{ResponseRecorder: httptest.NewRecorder(), n: 2, cancel: cancel}
	h.gw.ServeHTTP(w, r)
	require.NotContains(t, w.Body.String(), "usage")
	require.NotContains(t, w.Body.String(), "[DONE]")
	recs := h.usage()
	require.Len(t, recs, 1)
	require.Equal(t, store.UsageEngine, recs[0].Source)
	require.Equal(t, int64(17), recs[0].PromptTokens, "the engine's count, not the bytes/4 estimate")
	require.Equal(t, int64(1), recs[0].CompletionTokens, "the tokens of the two chunks sent: role and one token")
	require.Equal(t, store.BilledClientDisconnect, recs[0].BilledReason)
}

// TestStreamAbortedWhenNotDurable: a stream whose record cannot commit at [DONE] is cut (no
// [DONE], a broken connection), counted; a non-stream answer is replaced by 503.
func TestStreamAbortedWhenNotDurable(t *testing.T) {
	h := newHarness(t, 0, 0)
	srv := httptest.NewServer(h.gw)
	defer srv.Close()
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat).Code) // caches the key
	require.NoError(t, h.st.Close())
	req, err := http.NewRequest("POST", srv.URL+openai.PathChatCompletions,
		strings.NewReader(`{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+h.key)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	got, err := io.ReadAll(resp.Body)
	require.Error(t, err, "the stream is cut, not ended")
	require.NotContains(t, string(got), "[DONE]")
	require.Contains(t, string(got), "Hello", "content before the end was relayed")
	require.Equal(t, 1.0, testutil.ToFloat64(h.gw.mm.streamsAborted))
}

// TestHooksAtFinalRecord: the SLO histograms observe each metered request, and an opted-in
// tenant's I/O log gets the request body and the streamed text (contract C6).
func TestHooksAtFinalRecord(t *testing.T) {
	h := newHarness(t, 0, 0)
	on := true
	_, err := h.admin.UpdateTenant(context.Background(), "acme", store.TenantUpdate{IOLog: &on})
	require.NoError(t, err)
	body := `{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, body, openai.HeaderRequestID, "req-hook").Code)
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-hook2").Code)
	require.Equal(t, 1, testutil.CollectAndCount(h.gw.slo.duration), "observed: the series of tier \"\" exists")
	entries, err := h.st.ListIOLog(context.Background(), h.tenant.ID, 10)
	require.NoError(t, err)
	require.Len(t, entries, 2)
	byID := map[string]store.IOLogEntry{}
	for _, e := range entries {
		byID[e.RequestID] = e
	}
	require.Equal(t, body, string(byID["req-hook"].Request))
	require.Equal(t, "Hello there", string(byID["req-hook"].Response))
	require.Contains(t, string(byID["req-hook2"].Response), `"content":"Hello there"`)
}
