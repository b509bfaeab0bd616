package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// receiver is a webhook that answers 500 to the first failFirst deliveries of each event id and
// 204 afterwards (failFirst < 0: always 500). It keeps every delivery it saw.
type receiver struct {
	failFirst int

	mu       sync.Mutex
	attempts map[string]int
	ok       []map[string]any // the events it accepted, decoded
	ctypes   []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var ev map[string]any
	if err := json.Unmarshal(b, &ev); err != nil {
		w.WriteHeader(400)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	id, _ := ev["id"].(string)
	rc.attempts[id]++
	rc.ctypes = append(rc.ctypes, r.Header.Get("Content-Type"))
	if rc.failFirst < 0 || rc.attempts[id] <= rc.failFirst {
		w.WriteHeader(500)
		return
	}
	rc.ok = append(rc.ok, ev)
	w.WriteHeader(204)
}

func (rc *receiver) seen(id string) (attempts, accepted int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, e := range rc.ok {
		if e["id"] == id {
			accepted++
		}
	}
	return rc.attempts[id], accepted
}

func exportHarness(t *testing.T, e config.Export) *harness {
	cfg := config.Default().Gateway
	def := cfg.Export
	e.Source, e.InitialBackoff, e.MaxBackoff, e.PollInterval, e.Timeout, e.BatchSize = def.Source, config.Duration(time.Second),
		config.Duration(4*time.Second), config.Duration(time.Hour), def.Timeout, def.BatchSize
	cfg.Export = e
	h := newHarnessCfg(t, cfg, 0, 0)
	t.Cleanup(func() { require.NoError(t, h.gw.Close()) })
	return h
}

// TestExportWebhookRetries: each usage record is delivered as a CloudEvent; a webhook that fails
// the first two deliveries gets the event again after 1 s, then 2 s (the backoff on the gateway's
// clock), and accepts it on the third; the outbox is then empty.
func TestExportWebhookRetries(t *testing.T) {
	rc := &receiver{failFirst: 2, attempts: map[string]int{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	h := exportHarness(t, config.Export{Sink: config.ExportSinkWebhook, URL: srv.URL, MaxAttempts: 5})
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-ev").Code)

	ex := h.gw.exporter
	require.Eventually(t, func() bool { a, _ := rc.seen("req-ev"); return a == 1 }, 5*time.Second, time.Millisecond)
	for i, wait := range []time.Duration{time.Second, 2 * time.Second} {
		// Not due yet: waking the exporter delivers nothing.
		require.Eventually(t, func() bool { return testutil.ToFloat64(ex.failures) == float64(i+1) }, 5*time.Second, time.Millisecond)
		ex.notify()
		h.clk.Step(wait - time.Millisecond)
		ex.notify()
		a, _ := rc.seen("req-ev")
		require.Equal(t, i+1, a)
		h.clk.Step(time.Millisecond)
		ex.notify()
		require.Eventually(t, func() bool { a, _ := rc.seen("req-ev"); return a == i+2 }, 5*time.Second, time.Millisecond)
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(ex.delivered) == 1 }, 5*time.Second, time.Millisecond)
	_, accepted := rc.seen("req-ev")
	require.Equal(t, 1, accepted)
	require.Equal(t, 2.0, testutil.ToFloat64(ex.failures))
	require.Zero(t, testutil.ToFloat64(ex.deadLetters))
	n, err := h.st.PendingUsageEvents(context.Background())
	require.NoError(t, err)
	require.Zero(t, n)

	rc.mu.Lock()
	ev, ctypes := rc.ok[0], rc.ctypes
	rc.mu.Unlock()
	for _, ct := range ctypes {
		require.Equal(t, "application/cloudevents+json; charset=utf-8", ct)
	}
	rec := h.usage()[0]
	require.Equal(t, map[string]any{
		"specversion": "1.0", "id": "req-ev", "source": "/strata/gateway", "type": UsageEventType, "subject": h.tenant.ID,
		"time": rec.CreatedAt.Format("2006-01-02T15:04:05.000Z07:00"), "datacontenttype": "application/json",
		"data": map[string]any{
			"request_id": "req-ev", "tenant_id": h.tenant.ID, "key_id": h.keyRec.ID, "model": "m1", "adapter": "",
			"endpoint": "sim-1", "gpu": "H100-SXM", "prompt_tokens": 17.0, "cached_tokens": 16.0, "completion_tokens": 3.0,
			"ttft_ms": 7.0, "duration_ms": 12.0, "status": 200.0, "stream": false, "usage_source": "engine", "billed_reason": "complete",
		},
	}, ev)
	_, err = time.Parse(time.RFC3339, ev["time"].(string))
	require.NoError(t, err, "CloudEvents time is RFC 3339")
}

// TestExportDeadLetter: after max_attempts failed deliveries an event is dead-lettered, counted,
// and kept in the outbox (never due again).
func TestExportDeadLetter(t *testing.T) {
	rc := &receiver{failFirst: -1, attempts: map[string]int{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	h := exportHarness(t, config.Export{Sink: config.ExportSinkWebhook, URL: srv.URL, MaxAttempts: 2})
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-dead").Code)
	ex := h.gw.exporter
	require.Eventually(t, func() bool { return testutil.ToFloat64(ex.failures) == 1 }, 5*time.Second, time.Millisecond)
	h.clk.Step(time.Second)
	ex.notify()
	require.Eventually(t, func() bool { return testutil.ToFloat64(ex.deadLetters) == 1 }, 5*time.Second, time.Millisecond)
	h.clk.Step(time.Hour)
	ex.notify()
	dead, err := h.st.DeadUsageEvents(context.Background(), 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "req-dead", dead[0].ID)
	require.Equal(t, 2, dead[0].Attempts)
	require.Contains(t, dead[0].LastError, "500")
	a, _ := rc.seen("req-dead")
	require.Equal(t, 2, a, "never delivered again")
	require.Zero(t, testutil.ToFloat64(ex.delivered))
}

// TestExportFile: the file sink appends one CloudEvent per line, for every record including a
// re-keyed one, and empties the outbox.
func TestExportFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.ndjson")
	h := exportHarness(t, config.Export{Sink: config.ExportSinkFile, File: path, MaxAttempts: 3})
	for _, id := range []string{"a", "b", "c"} {
		require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, id).Code)
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(h.gw.exporter.delivered) == 3 }, 5*time.Second, time.Millisecond)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev struct {
			ID, Type, SpecVersion string
			Data                  struct {
				CompletionTokens int64 `json:"completion_tokens"`
			}
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &ev))
		require.Equal(t, UsageEventType, ev.Type)
		require.Equal(t, "1.0", ev.SpecVersion)
		require.Equal(t, int64(3), ev.Data.CompletionTokens)
		ids = append(ids, ev.ID)
	}
	require.ElementsMatch(t, []string{"a", "b", "c"}, ids)
	n, err := h.st.PendingUsageEvents(context.Background())
	require.NoError(t, err)
	require.Zero(t, n)
}

// TestExportOutboxIsTransactional: a record and its event are written together; a replay writes
// neither again.
func TestExportOutboxIsTransactional(t *testing.T) {
	st := openTestStore(t)
	ctx := context.Background()
	rec := testRecord("req-tx", 2)
	event := func(r *store.UsageRecord) ([]byte, error) { return usageCloudEvent("/s", r) }
	for range 2 {
		_, err := st.WriteUsageBatch(ctx, []*store.UsageRecord{rec}, event)
		require.NoError(t, err)
	}
	evs, err := st.DueUsageEvents(ctx, t0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, "req-tx", evs[0].ID)
	// A failing event builder rolls the record back too.
	_, err = st.WriteUsageBatch(ctx, []*store.UsageRecord{testRecord("req-rolled", 1)},
		func(*store.UsageRecord) ([]byte, error) { return nil, io.ErrUnexpectedEOF })
	require.Error(t, err)
	ok, err := st.UsageExists(ctx, "req-rolled")
	require.NoError(t, err)
	require.False(t, ok, "nothing half-written")
}
