package router

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// flowConfig is testConfig with flow control on: an endpoint is saturated with one request
// waiting (or in flight but not yet scraped).
func flowConfig() config.Router {
	cfg := testConfig()
	cfg.FlowControl = config.FlowControl{Enabled: true, QueueCapacity: 10, TTL: config.Duration(10 * time.Second),
		Objectives: map[string]int{"premium": 10, "standard": 0, "batch": -1},
		Saturation: config.Saturation{QueueDepthThreshold: 1, KVCacheUtilThreshold: 0.8}}
	return cfg
}

// postAsync sends a chat request with the given objective and fairness id through ServeHTTP in
// a goroutine and returns the recorder, closed over when done is closed.
func (tr *testRouter) postAsync(ctx context.Context, objective, fairness, prompt string) (*httptest.ResponseRecorder, <-chan struct{}) {
	req := httptest.NewRequest(http.MethodPost, openai.PathChatCompletions, strings.NewReader(chatBody("m", prompt))).WithContext(ctx)
	if objective != "" {
		req.Header.Set(openai.HeaderObjective, objective)
	}
	if fairness != "" {
		req.Header.Set(openai.HeaderFairnessID, fairness)
	}
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); tr.ServeHTTP(w, req) }()
	return w, done
}

// gatedEngine is a fake engine whose answers wait for the test: each value sent on gate lets one
// request answer. It records the prompts in arrival order.
func gatedEngine(t *testing.T, name string) (*fakeEngine, chan struct{}, func() []string) {
	t.Helper()
	e := newFakeEngine(t, name, "m")
	gate := make(chan struct{})
	var mu sync.Mutex
	var order []string
	e.handler = func(w http.ResponseWriter, r *http.Request) {
		var req openai.InferenceRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		order = append(order, req.Messages[len(req.Messages)-1].ContentText())
		mu.Unlock()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(openai.ChatCompletion{ID: "x", Object: "chat.completion", Model: "m",
			Choices: []openai.ChatChoice{{Message: openai.Message{Role: "assistant", Content: openai.TextContent("ok")}, FinishReason: "stop"}}})
	}
	t.Cleanup(func() { close(gate) })
	return e, gate, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), order...)
	}
}

// While the endpoint is busy, requests queue; each finished request dispatches the next: the
// highest priority band first, round-robin across fairness ids within a band, FIFO within an id.
func TestFlowControlOrder(t *testing.T) {
	e, gate, order := gatedEngine(t, "a")
	tr := newTestRouter(t, flowConfig(), engineConfigs(e))
	tr.markUp("a", 0)

	ctx := context.Background()
	var dones []<-chan struct{}
	var recs []*httptest.ResponseRecorder
	send := func(objective, fairness, prompt string, queued int) {
		w, done := tr.postAsync(ctx, objective, fairness, prompt)
		recs, dones = append(recs, w), append(dones, done)
		require.Eventually(t, func() bool { return tr.flow.length() == queued }, 5*time.Second, time.Millisecond, prompt)
	}
	send("", "", "first", 0) // goes straight to the idle endpoint, which then counts as saturated
	require.Eventually(t, func() bool { return len(order()) == 1 }, 5*time.Second, time.Millisecond)
	send("standard", "x", "x1", 1)
	send("standard", "x", "x2", 2)
	send("", "y", "y1", 3) // no objective: default priority 0, the same band as standard
	send("premium", "z", "z1", 4)
	send("unknown-objective", "y", "y2", 5)
	require.Equal(t, 5.0, testutil.ToFloat64(tr.metrics.flowQueueLength.WithLabelValues("0"))+
		testutil.ToFloat64(tr.metrics.flowQueueLength.WithLabelValues("10")))

	for i := range 6 {
		gate <- struct{}{} // one answer; its completion dispatches the next queued request
		if i < 5 {
			require.Eventually(t, func() bool { return len(order()) == i+2 }, 5*time.Second, time.Millisecond)
		}
	}
	for _, d := range dones {
		<-d
	}
	require.Equal(t, []string{"first", "z1", "x1", "y1", "x2", "y2"}, order())
	for _, w := range recs {
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	}
	require.Zero(t, tr.flow.length())
	require.Equal(t, uint64(5), histogramCount(t, tr, "strata_router_flow_queue_wait_seconds"))
	require.Zero(t, testutil.ToFloat64(tr.metrics.flowQueueLength.WithLabelValues("0")))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("default", reasonFirst)))
	require.Equal(t, 5.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("default", reasonSaturated)))
	require.Equal(t, 5.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("default", reasonQueued)))
}

// histogramCount returns the sample count of the named histogram in tr's registry.
func histogramCount(t *testing.T, tr *testRouter, name string) uint64 {
	t.Helper()
	mfs, err := tr.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// Saturation answers: sheddable requests are refused with 429 (with or without the queue), a full
// queue refuses with 429, a request waiting past its TTL gets 503, and a client that goes away
// while queued leaves nothing behind.
func TestFlowControlRejections(t *testing.T) {
	t.Run("sheddable without queueing", func(t *testing.T) {
		a := newFakeEngine(t, "a", "m")
		cfg := flowConfig()
		cfg.FlowControl.Enabled = false
		tr := newTestRouter(t, cfg, engineConfigs(a))
		tr.markUp("a", 3) // waiting 3 >= threshold 1: saturated
		w := tr.postWith(map[string]string{openai.HeaderObjective: "batch"}, chatBody("m", "hi"))
		require.Equal(t, http.StatusTooManyRequests, w.Code)
		require.Equal(t, "1", w.Header().Get(openai.HeaderRetryAfter))
		e := errorOf(t, w.Body.Bytes())
		require.Equal(t, codePoolExhausted, e.Code)
		require.Equal(t, openai.TypeRateLimit, e.Type)
		require.Zero(t, a.received())
		require.Equal(t, http.StatusOK, tr.postWith(map[string]string{openai.HeaderObjective: "standard"}, chatBody("m", "hi")).Code,
			"without the queue, non-sheddable requests pass whatever the load")
		tr.markUp("a", 0)
		require.Equal(t, http.StatusOK, tr.postWith(map[string]string{openai.HeaderObjective: "batch"}, chatBody("m", "hi")).Code,
			"not saturated: sheddable requests pass")
		require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.flowRejected.WithLabelValues(rejectSheddable)))
	})
	t.Run("sheddable with queueing", func(t *testing.T) {
		a := newFakeEngine(t, "a", "m")
		tr := newTestRouter(t, flowConfig(), engineConfigs(a))
		tr.markUp("a", 3)
		require.Equal(t, http.StatusTooManyRequests, tr.postWith(map[string]string{openai.HeaderObjective: "batch"}, chatBody("m", "hi")).Code)
		require.Zero(t, tr.flow.length(), "sheddable requests never queue")
	})
	t.Run("queue full", func(t *testing.T) {
		a := newFakeEngine(t, "a", "m")
		cfg := flowConfig()
		cfg.FlowControl.QueueCapacity = 1
		tr := newTestRouter(t, cfg, engineConfigs(a))
		tr.markUp("a", 3)
		ctx, cancel := context.WithCancel(context.Background())
		_, done := tr.postAsync(ctx, "", "", "waits")
		require.Eventually(t, func() bool { return tr.flow.length() == 1 }, 5*time.Second, time.Millisecond)
		w := tr.post(openai.PathChatCompletions, chatBody("m", "overflow"))
		require.Equal(t, http.StatusTooManyRequests, w.Code)
		require.Equal(t, codePoolExhausted, errorOf(t, w.Body.Bytes()).Code)
		require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.flowRejected.WithLabelValues(rejectQueueFull)))
		cancel()
		<-done
	})
	t.Run("ttl", func(t *testing.T) {
		a := newFakeEngine(t, "a", "m")
		tr := newTestRouter(t, flowConfig(), engineConfigs(a))
		tr.markUp("a", 3)
		w, done := tr.postAsync(context.Background(), "premium", "t", "waits too long")
		require.Eventually(t, func() bool { return tr.flow.length() == 1 }, 5*time.Second, time.Millisecond)
		require.Eventually(t, func() bool { return tr.clk.HasWaiters() }, 5*time.Second, time.Millisecond)
		tr.clk.Step(10 * time.Second)
		<-done
		require.Equal(t, http.StatusServiceUnavailable, w.Code)
		require.Equal(t, codeQueueTimeout, errorOf(t, w.Body.Bytes()).Code)
		require.Zero(t, tr.flow.length())
		require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.flowRejected.WithLabelValues(rejectTTL)))
		require.Zero(t, testutil.ToFloat64(tr.metrics.flowQueueLength.WithLabelValues("10")))
		require.Zero(t, a.received())
	})
	t.Run("client cancels while queued", func(t *testing.T) {
		a := newFakeEngine(t, "a", "m")
		tr := newTestRouter(t, flowConfig(), engineConfigs(a))
		tr.markUp("a", 3)
		ctx, cancel := context.WithCancel(context.Background())
		_, done := tr.postAsync(ctx, "", "t", "gives up")
		require.Eventually(t, func() bool { return tr.flow.length() == 1 }, 5*time.Second, time.Millisecond)
		cancel()
		<-done
		require.Zero(t, tr.flow.length())
		require.Zero(t, testutil.ToFloat64(tr.metrics.flowQueueLength.WithLabelValues("0")))
		require.Zero(t, testutil.CollectAndCount(tr.metrics.flowRejected), "a gone client is not a rejection")
		tr.markUp("a", 0)
		tr.flow.dispatch()
		require.Zero(t, a.received(), "nothing of the cancelled request reaches the engine")
		require.Zero(t, tr.snapshotOne(tr.ep("a"), tr.clk.Now()).InFlight)
	})
	t.Run("scrape dispatches", func(t *testing.T) {
		a := newFakeEngine(t, "a", "m")
		a.waiting.Store(3)
		tr := newTestRouter(t, flowConfig(), engineConfigs(a))
		tr.run(t)
		tr.stepUntil(t, time.Second, func() bool {
			s := tr.snapshotOne(tr.ep("a"), tr.clk.Now())
			return s.Healthy && s.ModelsKnown && !s.Stale && s.Metrics.Waiting == 3
		}, "first scrape")
		w, done := tr.postAsync(context.Background(), "", "", "waits for a scrape")
		require.Eventually(t, func() bool { return tr.flow.length() == 1 }, 5*time.Second, time.Millisecond)
		a.waiting.Store(0)
		tr.stepUntil(t, time.Second, func() bool { return tr.flow.length() == 0 }, "the next scrape dispatches")
		<-done
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	})
}

// Stale metrics, a full KV cache, a waiting queue at the threshold and the concurrency cap each
// saturate an endpoint (GIE's utilization detector, plus its concurrency detector).
func TestSaturated(t *testing.T) {
	s := config.Saturation{QueueDepthThreshold: 5, KVCacheUtilThreshold: 0.8, MaxConcurrency: 10}
	for _, tc := range []struct {
		name string
		ep   scheduling.Endpoint
		want bool
	}{
		{"idle", scheduling.Endpoint{}, false},
		{"stale", scheduling.Endpoint{Stale: true}, true},
		{"queue at threshold", scheduling.Endpoint{Metrics: scheduling.Metrics{Waiting: 5}}, true},
		{"queue below threshold", scheduling.Endpoint{Metrics: scheduling.Metrics{Waiting: 4, Running: 5}, InFlight: 9}, false},
		{"unscraped in-flight requests count as waiting", scheduling.Endpoint{Metrics: scheduling.Metrics{Waiting: 2, Running: 1}, InFlight: 6}, true},
		{"kv cache", scheduling.Endpoint{Metrics: scheduling.Metrics{KVCacheUsage: 0.8}}, true},
		{"concurrency cap", scheduling.Endpoint{Metrics: scheduling.Metrics{Running: 10}, InFlight: 10}, true},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, saturated(&tc.ep, s)) })
	}
	eps := []*scheduling.Endpoint{
		{Name: "down", Models: []string{"m"}, Healthy: false},
		{Name: "other-model", Models: []string{"x"}, Healthy: true},
		{Name: "busy", Models: []string{"m"}, Healthy: true, Stale: true},
	}
	require.True(t, allSaturated(&scheduling.Request{Model: "m"}, eps, s))
	require.False(t, allSaturated(&scheduling.Request{Model: "unknown"}, eps, s), "no candidate: not saturated, the scheduler answers")
	require.False(t, allSaturated(&scheduling.Request{Model: "m", Exclude: []string{"busy"}}, eps, s))
}

// postWith sends body to the chat path with extra headers.
func (tr *testRouter) postWith(headers map[string]string, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, openai.PathChatCompletions, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	tr.ServeHTTP(w, req)
	return w
}

// Requests waiting for one saturated model do not hold back another model's requests, queued or
// arriving.
func TestFlowControlModelsDoNotBlockEachOther(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	b := newFakeEngine(t, "b", "other")
	tr := newTestRouter(t, flowConfig(), engineConfigs(a, b))
	tr.markUp("a", 3) // saturated
	tr.markUp("b", 0)
	tr.ep("b").setModels([]string{"other"}, []json.RawMessage{json.RawMessage(`{"id":"other"}`)}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, done := tr.postAsync(ctx, "", "t1", "waits for m")
	require.Eventually(t, func() bool { return tr.flow.length() == 1 }, 5*time.Second, time.Millisecond)

	w := tr.postWith(map[string]string{openai.HeaderObjective: "standard"}, chatBody("other", "free model"))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "b", w.Header().Get(openai.HeaderEndpointServed))
	w = tr.postWith(map[string]string{openai.HeaderObjective: "batch"}, chatBody("other", "sheddable, free model"))
	require.Equal(t, http.StatusOK, w.Code, "sheddable requests pass where there is room")
	require.Equal(t, 1, tr.flow.length(), "the request for m still waits")
	require.Zero(t, a.received())
	cancel()
	<-done
}

// Many concurrent requests of random objectives and fairness ids, a third of them abandoned by
// their clients, through a busy endpoint: every request ends (answered or cancelled), and the
// queue, its gauges and the in-flight count all return to zero.
func TestFlowControlChurn(t *testing.T) {
	e, gate, _ := gatedEngine(t, "a")
	cfg := flowConfig()
	cfg.FlowControl.QueueCapacity = 1000
	tr := newTestRouter(t, cfg, engineConfigs(e))
	tr.markUp("a", 0)
	objectives := []string{"", "premium", "standard", "unknown"}
	type req struct {
		w      *httptest.ResponseRecorder
		done   <-chan struct{}
		cancel context.CancelFunc
	}
	var reqs []req
	for i := range 60 {
		ctx, cancel := context.WithCancel(context.Background())
		w, done := tr.postAsync(ctx, objectives[i%len(objectives)], fmt.Sprint("tenant-", i%5), fmt.Sprint("prompt ", i))
		reqs = append(reqs, req{w, done, cancel})
	}
	for i, r := range reqs {
		if i%3 == 0 {
			r.cancel()
		}
	}
	stop, fed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(fed)
		for {
			select {
			case gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-fed }()
	for _, r := range reqs {
		<-r.done
		r.cancel()
		require.Contains(t, []int{http.StatusOK, 499}, r.w.Code, r.w.Body.String())
	}
	require.Zero(t, tr.flow.length())
	for _, p := range []string{"0", "10"} {
		require.Zero(t, testutil.ToFloat64(tr.metrics.flowQueueLength.WithLabelValues(p)), p)
	}
	require.Zero(t, tr.snapshotOne(tr.ep("a"), tr.clk.Now()).InFlight)
}
