package router

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNew(t *testing.T) {
	neg := config.Duration(-time.Second)
	negW := -1.0
	tests := []struct {
		name    string
		cfg     config.Router
		engines []config.Engine
		wantErr string
	}{
		{"zero config takes defaults", config.Router{}, []config.Engine{{URL: "http://a:1"}}, ""},
		{"no engines", config.Router{}, nil, "no engines"},
		{"bad url", config.Router{}, []config.Engine{{Name: "a", URL: "a:1"}}, `engine "a": url "a:1" is not an http(s) URL`},
		{"name twice", config.Router{}, []config.Engine{{Name: "a", URL: "http://a:1"}, {Name: "a", URL: "http://b:1"}}, `engine name "a" used twice`},
		{"default names collide", config.Router{}, []config.Engine{{URL: "http://a:1"}, {URL: "http://a:1/x"}}, `engine name "a:1" used twice`},
		{"negative duration", config.Router{StaleAfter: neg}, []config.Engine{{URL: "http://a:1"}}, "stale_after: must be positive"},
		{"negative weight", config.Router{Weights: config.ScorerWeights{Queue: &negW}}, []config.Engine{{URL: "http://a:1"}}, "weights.queue: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.cfg, tt.engines, nil, nil, prometheus.NewRegistry(), nil)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, config.Default().Router.ScrapeInterval, r.cfg.ScrapeInterval)
			require.False(t, r.Ready(), "endpoints start unhealthy until the first health round")
		})
	}
	// Two routers on one registry collide instead of silently sharing metrics.
	reg := prometheus.NewRegistry()
	_, err := New(config.Router{}, []config.Engine{{URL: "http://a:1"}}, nil, nil, reg, nil)
	require.NoError(t, err)
	_, err = New(config.Router{}, []config.Engine{{URL: "http://a:1"}}, nil, nil, reg, nil)
	require.ErrorContains(t, err, "register metrics")
}

func TestHealthTransitions(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	tr := newTestRouter(t, testConfig(), engineConfigs(a))
	tr.run(t)
	ep := tr.ep("a")
	require.Eventually(t, ep.isHealthy, 5*time.Second, time.Millisecond, "healthy after the first round")
	require.True(t, tr.Ready())

	a.health.Store(http.StatusServiceUnavailable)
	tr.stepUntil(t, time.Second, func() bool { return !ep.isHealthy() }, "unhealthy after one failed check")
	require.False(t, tr.Ready())
	w := tr.post(openai.PathChatCompletions, chatBody("m", "hi"))
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, openai.CodeNoCapacity, errorOf(t, w.Body.Bytes()).Code)

	a.health.Store(0)
	tr.stepUntil(t, time.Second, ep.isHealthy, "healthy again after one good check")
	require.Equal(t, http.StatusOK, tr.post(openai.PathChatCompletions, chatBody("m", "hi")).Code)
}

func TestModelDiscovery(t *testing.T) {
	a := newFakeEngine(t, "a") // no models yet: /v1/models answers an empty list
	tr := newTestRouter(t, testConfig(), engineConfigs(a))
	tr.run(t)
	ep := tr.ep("a")
	require.Eventually(t, ep.isHealthy, 5*time.Second, time.Millisecond)
	require.False(t, ep.modelsKnown())
	require.False(t, tr.Ready(), "healthy but serving nothing yet")
	w := tr.post(openai.PathChatCompletions, chatBody("m", "hi"))
	require.Equal(t, http.StatusServiceUnavailable, w.Code, "the model may appear once discovered: 503, not 404")

	a.mu.Lock()
	a.models = []string{"m"}
	a.mu.Unlock()
	tr.stepUntil(t, time.Second, ep.modelsKnown, "discovery retried on the next health round")
	require.True(t, tr.Ready())
	require.Equal(t, http.StatusOK, tr.post(openai.PathChatCompletions, chatBody("m", "hi")).Code)
	require.Equal(t, http.StatusNotFound, tr.post(openai.PathChatCompletions, chatBody("other", "hi")).Code)
}

// Metrics older than stale_after make an endpoint count as saturated, even if its last scrape
// said it was idle; but stale metrics never filter every endpoint away.
func TestStaleMetrics(t *testing.T) {
	a, b := newFakeEngine(t, "a", "m"), newFakeEngine(t, "b", "m")
	b.waiting.Store(3)
	b.kvMilli.Store(500)
	tr := newTestRouter(t, testConfig(), engineConfigs(a, b))
	tr.run(t)
	snap := func(name string) scheduling.Endpoint { return tr.snapshotOne(tr.ep(name), tr.clk.Now()) }
	require.Eventually(t, func() bool {
		sa, sb := snap("a"), snap("b")
		return sa.Healthy && sb.Healthy && !sa.Stale && !sb.Stale
	}, 5*time.Second, time.Millisecond)
	// Fresh and idle, a wins over the loaded b.
	w := tr.post(openai.PathChatCompletions, chatBody("m", "first"))
	require.Equal(t, "a", w.Header().Get(openai.HeaderEndpointServed))

	a.metricsCode.Store(http.StatusInternalServerError)
	tr.clk.Step(3 * time.Second)
	require.Eventually(t, func() bool {
		sa, sb := snap("a"), snap("b")
		return sa.Stale && !sb.Stale
	}, 5*time.Second, time.Millisecond, "a's scrapes fail and its last metrics age out; b stays fresh")
	require.Zero(t, snap("a").Metrics.Waiting, "a's last metrics still say idle")
	w = tr.post(openai.PathChatCompletions, chatBody("m", "second"))
	require.Equal(t, "b", w.Header().Get(openai.HeaderEndpointServed), "stale a counts as saturated")

	b.metricsCode.Store(http.StatusInternalServerError)
	tr.clk.Step(3 * time.Second)
	require.Eventually(t, func() bool { return snap("b").Stale }, 5*time.Second, time.Millisecond)
	w = tr.post(openai.PathChatCompletions, chatBody("m", "third"))
	require.Equal(t, http.StatusOK, w.Code, "all stale still serves")
}

func TestParseMetricsGolden(t *testing.T) {
	f, err := os.Open("testdata/vllm_metrics.txt")
	require.NoError(t, err)
	defer f.Close()
	m, err := parseMetrics(f)
	require.NoError(t, err)
	require.Equal(t, scheduling.Metrics{Running: 3, Waiting: 2, KVCacheUsage: 0.42137190082644626, BlockSize: 16, NumGPUBlocks: 27913}, m)
}

func TestParseMetrics(t *testing.T) {
	series := func(name string, vals ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "# TYPE %s gauge\n", name)
		for i, v := range vals {
			fmt.Fprintf(&b, "%s{model_name=\"m\",engine=\"%d\"} %s\n", name, i, v)
		}
		return b.String()
	}
	tests := []struct {
		name    string
		text    string
		want    scheduling.Metrics
		wantErr bool
	}{
		{"older vLLM: gpu_cache_usage_perc only",
			series(metricRunning, "1") + series(metricWaiting, "0") + series(metricGPUUsage, "0.25"),
			scheduling.Metrics{Running: 1, KVCacheUsage: 0.25}, false},
		{"new name wins over the deprecated one",
			series(metricRunning, "1") + series(metricGPUUsage, "0.9") + series(metricKVUsage, "0.1"),
			scheduling.Metrics{Running: 1, KVCacheUsage: 0.1}, false},
		{"data parallel: requests summed, KV usage averaged",
			series(metricRunning, "2", "3") + series(metricWaiting, "1", "4") + series(metricKVUsage, "0.2", "0.6"),
			scheduling.Metrics{Running: 5, Waiting: 5, KVCacheUsage: 0.4}, false},
		{"untyped samples without HELP or TYPE",
			"vllm:num_requests_waiting 7\nvllm:kv_cache_usage_perc 0.5\n",
			scheduling.Metrics{Waiting: 7, KVCacheUsage: 0.5}, false},
		{"hostile values are clamped",
			series(metricRunning, "-4") + series(metricWaiting, "NaN") + series(metricKVUsage, "+Inf"),
			scheduling.Metrics{KVCacheUsage: 0}, false},
		{"usage above 1 is clipped",
			series(metricWaiting, "1e300") + series(metricKVUsage, "7"),
			scheduling.Metrics{Waiting: 1<<31 - 1, KVCacheUsage: 1}, false},
		{"cache_config_info with None",
			series(metricWaiting, "0") + "vllm:cache_config_info{block_size=\"32\",num_gpu_blocks=\"None\"} 1.0\n",
			scheduling.Metrics{BlockSize: 32}, false},
		{"not vLLM", "# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs 3\n", scheduling.Metrics{}, true},
		{"empty", "", scheduling.Metrics{}, true},
		{"malformed", "vllm:num_requests_waiting{ 1\n", scheduling.Metrics{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseMetrics(strings.NewReader(tt.text))
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.InDelta(t, tt.want.KVCacheUsage, m.KVCacheUsage, 1e-12)
			m.KVCacheUsage = tt.want.KVCacheUsage
			require.Equal(t, tt.want, m)
		})
	}
}

// The metrics parser takes outside input: it must never panic and always return sane values.
func FuzzParseMetrics(f *testing.F) {
	golden, err := os.ReadFile("testdata/vllm_metrics.txt")
	require.NoError(f, err)
	f.Add(golden)
	f.Add([]byte("vllm:num_requests_waiting 1\n"))
	f.Add([]byte("vllm:num_requests_running{engine=\"0\"} NaN\nvllm:kv_cache_usage_perc -1\n"))
	f.Add([]byte("# TYPE vllm:num_requests_running histogram\nvllm:num_requests_running_bucket{le=\"+Inf\"} 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMetrics(bytes.NewReader(b))
		if err != nil {
			require.Equal(t, scheduling.Metrics{}, m)
			return
		}
		require.GreaterOrEqual(t, m.Running, 0)
		require.GreaterOrEqual(t, m.Waiting, 0)
		require.GreaterOrEqual(t, m.BlockSize, 0)
		require.GreaterOrEqual(t, m.NumGPUBlocks, 0)
		require.True(t, m.KVCacheUsage >= 0 && m.KVCacheUsage <= 1, "kv usage %v", m.KVCacheUsage)
	})
}

func TestProxy(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	engines := engineConfigs(a)
	engines[0].GPU = "H100-SXM"
	engines[0].URL += "/prefix/" // a base path is kept, a trailing slash is not doubled
	tr := newTestRouter(t, testConfig(), engines)
	tr.run(t)
	require.Eventually(t, tr.Ready, 5*time.Second, time.Millisecond)

	body := `{"model":"m", "messages":[{"role":"user","content":"hi"}], "vendor_extension": {"keep": [1, 2]}}`
	req := httptest.NewRequest(http.MethodPost, openai.PathChatCompletions+"?trace=1", strings.NewReader(body))
	req.Header.Set(openai.HeaderRequestID, "req-1")
	w := httptest.NewRecorder()
	tr.ServeHTTP(w, req)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "a;gpu=H100-SXM", w.Header().Get(openai.HeaderEndpointServed))
	require.Contains(t, answerOf(t, w), "a answers")
	a.mu.Lock()
	defer a.mu.Unlock()
	require.Equal(t, body, string(a.bodies[0]), "body bytes forwarded unchanged")
	require.Equal(t, "/prefix/v1/chat/completions?trace=1", a.paths[0])
}

func TestErrors(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	down := newFakeEngine(t, "down", "only-down")
	down.health.Store(http.StatusServiceUnavailable)
	engines := engineConfigs(a, down)
	engines[1].Models = down.models
	tr := newTestRouter(t, testConfig(), engines)
	tr.run(t)
	require.Eventually(t, tr.ep("a").isHealthy, 5*time.Second, time.Millisecond)

	tests := []struct {
		name   string
		method string
		path   string
		body   io.Reader
		status int
		code   string
		param  string
	}{
		{"unknown model", http.MethodPost, openai.PathChatCompletions, strings.NewReader(chatBody("nope", "hi")), 404, openai.CodeModelNotFound, "model"},
		{"model served only by an unhealthy endpoint", http.MethodPost, openai.PathChatCompletions, strings.NewReader(chatBody("only-down", "hi")), 503, openai.CodeNoCapacity, ""},
		{"malformed JSON", http.MethodPost, openai.PathChatCompletions, strings.NewReader(`{"model":`), 400, openai.CodeInvalidJSON, ""},
		{"missing messages", http.MethodPost, openai.PathChatCompletions, strings.NewReader(`{"model":"m"}`), 400, openai.CodeMissingParam, "messages"},
		{"missing prompt", http.MethodPost, openai.PathCompletions, strings.NewReader(`{"model":"m"}`), 400, openai.CodeMissingParam, "prompt"},
		{"missing model", http.MethodPost, openai.PathEmbeddings, strings.NewReader(`{"input":"x"}`), 400, openai.CodeMissingParam, "model"},
		{"body over the limit", http.MethodPost, openai.PathChatCompletions, nil, 413, openai.CodeBodyTooLarge, ""},
		{"unknown path", http.MethodPost, "/v1/nope", strings.NewReader(`{}`), 404, openai.CodeNotFound, ""},
		{"wrong method", http.MethodGet, openai.PathChatCompletions, nil, 405, "method_not_allowed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, tt.body)
			w := httptest.NewRecorder()
			if tt.status == http.StatusRequestEntityTooLarge {
				req.Body = http.MaxBytesReader(w, io.NopCloser(strings.NewReader(chatBody("m", strings.Repeat("x", 100)))), 50)
			}
			tr.ServeHTTP(w, req)
			require.Equal(t, tt.status, w.Code, w.Body.String())
			e := errorOf(t, w.Body.Bytes())
			require.Equal(t, tt.code, e.Code)
			require.Equal(t, tt.param, e.Param)
		})
	}
	require.Zero(t, a.received(), "no rejected request reached an engine")
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.requests.WithLabelValues("", "", "404")), "unknown model names do not become labels")
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.requests.WithLabelValues("only-down", "", "503")))
}

// An engine's own error answer (vLLM's 400 for a too-long prompt) reaches the client as it is.
func TestEngineErrorRelayed(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	vllmErr := `{"object":"error","message":"This model's maximum context length is 8192 tokens.","type":"BadRequestError","param":null,"code":400}`
	a.handler = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, vllmErr)
	}
	tr := newTestRouter(t, testConfig(), engineConfigs(a))
	tr.run(t)
	require.Eventually(t, tr.Ready, 5*time.Second, time.Millisecond)
	w := tr.post(openai.PathCompletions, `{"model":"m","prompt":"long"}`)
	require.Equal(t, http.StatusBadRequest, w.Code)
	require.Equal(t, vllmErr, w.Body.String())
	require.Equal(t, "a", w.Header().Get(openai.HeaderEndpointServed))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.requests.WithLabelValues("m", "a", "400")))
}

// closedAddr returns a loopback URL where nothing listens: connecting is refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

// markUp sets an endpoint healthy with fresh metrics without running probes, so a test controls
// which endpoint the scheduler prefers.
func (tr *testRouter) markUp(name string, waiting int) {
	ep := tr.ep(name)
	if !ep.modelsKnown() {
		ep.setModels([]string{"m"}, []json.RawMessage{json.RawMessage(`{"id":"m"}`)}, nil)
	}
	ep.setHealthy(true)
	ep.setMetrics(scheduling.Metrics{Waiting: waiting}, tr.clk.Now())
}

func TestConnectionRefusedRetry(t *testing.T) {
	live := newFakeEngine(t, "live", "m")
	engines := []config.Engine{{Name: "dead", URL: closedAddr(t), Models: []string{"m"}}, {Name: "live", URL: live.srv.URL, Models: []string{"m"}}}
	tr := newTestRouter(t, testConfig(), engines)
	tr.markUp("dead", 0)
	tr.markUp("live", 5) // the scheduler prefers the idle-looking dead endpoint

	w := tr.post(openai.PathChatCompletions, chatBody("m", "hello"))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "live", w.Header().Get(openai.HeaderEndpointServed))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.retries))
	require.False(t, tr.ep("dead").isHealthy(), "a refused connection marks the endpoint unhealthy at once")
	require.Zero(t, tr.snapshotOne(tr.ep("dead"), tr.clk.Now()).InFlight, "the failed attempt is no longer in flight")
	require.Zero(t, tr.snapshotOne(tr.ep("live"), tr.clk.Now()).InFlight)

	// The next request goes straight to the live endpoint.
	require.Equal(t, "live", tr.post(openai.PathChatCompletions, chatBody("m", "again")).Header().Get(openai.HeaderEndpointServed))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.retries))
}

func TestConnectionRefusedEverywhere(t *testing.T) {
	for _, attempts := range []int{1, 3} {
		t.Run(fmt.Sprint("max_attempts=", attempts), func(t *testing.T) {
			live := newFakeEngine(t, "live", "m")
			cfg := testConfig()
			cfg.MaxAttempts = attempts
			engines := []config.Engine{
				{Name: "dead1", URL: closedAddr(t), Models: []string{"m"}},
				{Name: "dead2", URL: closedAddr(t), Models: []string{"m"}},
				{Name: "live", URL: live.srv.URL, Models: []string{"m"}},
			}
			tr := newTestRouter(t, cfg, engines)
			tr.markUp("dead1", 0)
			tr.markUp("dead2", 1)
			tr.markUp("live", 9)
			w := tr.post(openai.PathChatCompletions, chatBody("m", "hello"))
			if attempts == 1 {
				require.Equal(t, http.StatusServiceUnavailable, w.Code, "no retry allowed")
				require.Zero(t, testutil.ToFloat64(tr.metrics.retries))
				return
			}
			require.Equal(t, http.StatusOK, w.Code, "third attempt reaches the live endpoint")
			require.Equal(t, 2.0, testutil.ToFloat64(tr.metrics.retries))
		})
	}
}

// A connection reset before the first response byte is retried on another endpoint; when every
// endpoint resets, the client gets a detail-free 502 and no endpoint is marked down.
func TestUpstreamFailure(t *testing.T) {
	reset := func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
	a := newFakeEngine(t, "a", "m")
	b := newFakeEngine(t, "b", "m")
	a.handler = reset
	tr := newTestRouter(t, testConfig(), engineConfigs(a, b))
	tr.markUp("a", 0)
	tr.markUp("b", 5)
	w := tr.post(openai.PathChatCompletions, chatBody("m", "hello"))
	require.Equal(t, http.StatusOK, w.Code, "retried on b")
	require.Equal(t, "b", w.Header().Get(openai.HeaderEndpointServed))
	require.Equal(t, 1, b.received())
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.retries))
	require.True(t, tr.ep("a").isHealthy(), "only dial failures mark an endpoint down")

	b.handler = reset
	w = tr.post(openai.PathChatCompletions, chatBody("m", "hello again"))
	require.Equal(t, http.StatusBadGateway, w.Code)
	e := errorOf(t, w.Body.Bytes())
	require.Equal(t, openai.ErrUpstream.Message, e.Message, "no internal detail")
	require.NotContains(t, w.Body.String(), "127.0.0.1")
	for _, name := range []string{"a", "b"} {
		require.Zero(t, tr.snapshotOne(tr.ep(name), tr.clk.Now()).InFlight, name)
	}
}

func TestModelsUnion(t *testing.T) {
	a := newFakeEngine(t, "a", "shared", "only-a")
	b := newFakeEngine(t, "b", "shared", "only-b")
	c := newFakeEngine(t, "c", "only-c")
	c.health.Store(http.StatusServiceUnavailable)
	engines := engineConfigs(a, b, c)
	engines[1].Models = []string{"only-b", "shared"} // configured: our own objects
	tr := newTestRouter(t, testConfig(), engines)
	tr.run(t)
	require.Eventually(t, func() bool { return tr.ep("a").isHealthy() && tr.ep("a").modelsKnown() && tr.ep("b").isHealthy() }, 5*time.Second, time.Millisecond)

	req := httptest.NewRequest(http.MethodGet, openai.PathModels, nil)
	w := httptest.NewRecorder()
	tr.ServeHTTP(w, req)
	require.Equal(t, http.StatusOK, w.Code)
	var list struct {
		Object string           `json:"object"`
		Data   []map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &list))
	require.Equal(t, "list", list.Object)
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m["id"].(string))
	}
	require.Equal(t, []string{"shared", "only-a", "only-b"}, ids, "deduplicated, config order, healthy endpoints only")
	require.Equal(t, "vllm", list.Data[0]["owned_by"], "a discovered model keeps the engine's object")
	require.EqualValues(t, 8192, list.Data[0]["max_model_len"])
	require.Equal(t, "strata", list.Data[2]["owned_by"], "a configured model gets our object")
	require.Equal(t, "model", list.Data[2]["object"])
}

// A streamed answer reaches the client chunk by chunk: the engine holds its second chunk until
// the client has read the first, which it could not if the router buffered.
func TestStreamingFlushesChunks(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	release := make(chan struct{})
	var stalled atomic.Bool
	a.handler = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"chunk\":1}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(10 * time.Second):
			stalled.Store(true)
		}
		_, _ = io.WriteString(w, "data: {\"chunk\":2}\n\ndata: [DONE]\n\n")
	}
	tr := newTestRouter(t, testConfig(), engineConfigs(a))
	tr.markUp("a", 0)

	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	resp, err := http.Post(tr.srv.URL+openai.PathChatCompletions, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "a", resp.Header.Get(openai.HeaderEndpointServed))
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "data: {\"chunk\":1}\n", line)
	require.Equal(t, 1, tr.snapshotOne(tr.ep("a"), tr.clk.Now()).InFlight, "in flight while streaming")
	close(release)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, "\ndata: {\"chunk\":2}\n\ndata: [DONE]\n\n", string(rest))
	require.False(t, stalled.Load(), "the first chunk reached the client before the second was written")
	require.Eventually(t, func() bool { return tr.snapshotOne(tr.ep("a"), tr.clk.Now()).InFlight == 0 }, 5*time.Second, time.Millisecond)
}

// The router's own in-flight count is fresh at decision time: while a request is running on a,
// the next one goes to b even though the (lagging) scraped metrics say both are idle.
func TestInFlightSteersLoad(t *testing.T) {
	a, b := newFakeEngine(t, "a", "m"), newFakeEngine(t, "b", "m")
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	block := func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		_, _ = io.WriteString(w, `{"choices":[]}`)
	}
	a.handler, b.handler = block, block
	tr := newTestRouter(t, testConfig(), engineConfigs(a, b))
	tr.markUp("a", 0)
	tr.markUp("b", 0)
	served := make(chan string, 2)
	for i := range 2 {
		go func() {
			w := tr.post(openai.PathCompletions, fmt.Sprintf(`{"model":"m","prompt":"p%d"}`, i))
			if w.Code != http.StatusOK {
				started <- struct{}{} // fail below instead of waiting forever
			}
			served <- w.Header().Get(openai.HeaderEndpointServed)
		}()
		<-started
	}
	close(release)
	got := map[string]bool{<-served: true, <-served: true}
	require.Equal(t, map[string]bool{"a": true, "b": true}, got)
}

func TestPromptPartsMatchPromptText(t *testing.T) {
	for _, body := range []string{
		chatBody("m", "one", "two", "three"),
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}]}`,
		`{"model":"m","prompt":"plain"}`,
		`{"model":"m","prompt":["a","b"]}`,
		`{"model":"m","input":"embed me"}`,
	} {
		ir := &openai.InferenceRequest{}
		require.NoError(t, json.Unmarshal([]byte(body), ir))
		require.Equal(t, ir.PromptText(), strings.Join(promptParts(ir), ""), body)
	}
}

type conversation struct{ turn1, turn2 string }

// loadConversations returns built-in conversations (one shorter than a prefix block) plus the
// MT-Bench questions when the shared data set is present.
func loadConversations(t *testing.T) []conversation {
	convs := []conversation{
		{"Hi!", "Tell me more."},
		{"Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences and must-see attractions.", "Rewrite your previous response. Start every sentence with the letter A."},
		{strings.Repeat("Summarise the following report. ", 30), "Now in one sentence."},
	}
	f, err := os.Open("../../../shared/data/prompts/mtbench_question.jsonl")
	if err != nil {
		t.Logf("MT-Bench data not found (%v); built-in conversations only", err)
		return convs
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var q struct {
			Turns []string `json:"turns"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &q))
		if len(q.Turns) >= 2 {
			convs = append(convs, conversation{q.Turns[0], q.Turns[1]})
		}
	}
	require.NoError(t, sc.Err())
	return convs
}

// Turn 2 of a multi-turn chat (turn 1 + the assistant's answer + a new user message) lands on the
// replica that served turn 1 when the replicas are otherwise idle; new conversations spread.
func TestMultiTurnAffinity(t *testing.T) {
	engines := []*fakeEngine{newFakeEngine(t, "r0", "m"), newFakeEngine(t, "r1", "m"), newFakeEngine(t, "r2", "m")}
	tr := newTestRouter(t, testConfig(), engineConfigs(engines...))
	tr.run(t)
	require.Eventually(t, func() bool {
		for _, e := range tr.endpoints {
			if !e.isHealthy() || tr.snapshotOne(e, tr.clk.Now()).Stale {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)

	convs := loadConversations(t)
	spread := map[string]int{}
	for i, c := range convs {
		w1 := tr.post(openai.PathChatCompletions, chatBody("m", c.turn1))
		require.Equal(t, http.StatusOK, w1.Code)
		first := w1.Header().Get(openai.HeaderEndpointServed)
		spread[first]++
		w2 := tr.post(openai.PathChatCompletions, chatBody("m", c.turn1, answerOf(t, w1), c.turn2))
		require.Equal(t, http.StatusOK, w2.Code)
		require.Equal(t, first, w2.Header().Get(openai.HeaderEndpointServed), "conversation %d: turn 2 must follow turn 1", i)
	}
	t.Logf("%d conversations; turn 1 spread %v", len(convs), spread)
	require.Len(t, spread, 3, "new conversations spread over the idle replicas")
}

func TestMetricsExposition(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	a.waiting.Store(4)
	a.kvMilli.Store(250)
	tr := newTestRouter(t, testConfig(), append(engineConfigs(a), config.Engine{Name: "b", URL: closedAddr(t), Models: []string{"m"}}))
	tr.run(t)
	require.Eventually(t, func() bool {
		s := tr.snapshotOne(tr.ep("a"), tr.clk.Now())
		return s.Healthy && !s.Stale
	}, 5*time.Second, time.Millisecond)
	require.Equal(t, http.StatusOK, tr.post(openai.PathChatCompletions, chatBody("m", "hi")).Code)

	require.NoError(t, testutil.GatherAndCompare(tr.reg, strings.NewReader(`
# HELP strata_router_endpoint_healthy 1 if the endpoint's last health check passed, else 0.
# TYPE strata_router_endpoint_healthy gauge
strata_router_endpoint_healthy{endpoint="a"} 1
strata_router_endpoint_healthy{endpoint="b"} 0
# HELP strata_router_endpoint_waiting_requests Requests waiting in the engine (vllm:num_requests_waiting, last scrape).
# TYPE strata_router_endpoint_waiting_requests gauge
strata_router_endpoint_waiting_requests{endpoint="a"} 4
strata_router_endpoint_waiting_requests{endpoint="b"} 0
# HELP strata_router_endpoint_kv_cache_usage_ratio Fraction of the engine's KV cache in use, 0 to 1 (vllm:kv_cache_usage_perc, last scrape).
# TYPE strata_router_endpoint_kv_cache_usage_ratio gauge
strata_router_endpoint_kv_cache_usage_ratio{endpoint="a"} 0.25
strata_router_endpoint_kv_cache_usage_ratio{endpoint="b"} 0
# HELP strata_router_endpoint_in_flight_requests Requests the router sent to the endpoint that have not finished.
# TYPE strata_router_endpoint_in_flight_requests gauge
strata_router_endpoint_in_flight_requests{endpoint="a"} 0
strata_router_endpoint_in_flight_requests{endpoint="b"} 0
# HELP strata_router_requests_total Inference requests answered by the router, by model, endpoint that served them ("" if none) and HTTP status code.
# TYPE strata_router_requests_total counter
strata_router_requests_total{code="200",endpoint="a",model="m"} 1
`), "strata_router_endpoint_healthy", "strata_router_endpoint_waiting_requests", "strata_router_endpoint_kv_cache_usage_ratio",
		"strata_router_endpoint_in_flight_requests", "strata_router_requests_total"))
	require.Equal(t, 1, testutil.CollectAndCount(tr.metrics.pickDuration))
	problems, err := testutil.GatherAndLint(tr.reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// A layer package never imports another layer (ARCHITECTURE.md), not even in tests.
func TestNoLayerImports(t *testing.T) {
	forbidden := []string{"platform", "gateway", "engine", "fleet", "stack", "cli"}
	out, err := exec(t, "go", "list", "-deps", "-test", "./...")
	require.NoError(t, err, out)
	for _, pkg := range strings.Fields(out) {
		for _, f := range forbidden {
			p := "github.com/strata-inference/strata/internal/" + f
			require.False(t, pkg == p || strings.HasPrefix(pkg, p+"/"), "router depends on layer package %s", pkg)
		}
	}
}

// benchRouter is a router over 16 healthy endpoints with fresh metrics and 64 parsed 4 KB chat
// requests sharing a 2 KB system prompt.
func benchRouter(b *testing.B) (*Router, []*openai.InferenceRequest) {
	var engines []config.Engine
	for i := range 16 {
		engines = append(engines, config.Engine{Name: fmt.Sprintf("ep-%02d", i), URL: fmt.Sprintf("http://10.0.0.%d:8000", i), Models: []string{"m"}})
	}
	r, err := New(config.Router{}, engines, nil, nil, nil, nil)
	require.NoError(b, err)
	for i, ep := range r.endpoints {
		ep.setHealthy(true)
		ep.setMetrics(scheduling.Metrics{Waiting: i % 3, Running: 4, KVCacheUsage: float64(i) / 16}, r.clk.Now())
	}
	system := strings.Repeat("You are a careful assistant. ", 80)[:2048]
	reqs := make([]*openai.InferenceRequest, 64)
	for i := range reqs {
		user := strings.Repeat(fmt.Sprintf("question %d about topic %d. ", i, i*7), 120)[:2048]
		body := chatBodyRoles("m", "system", system, "user", user)
		reqs[i], err = openai.ParseInferenceRequest(openai.PathChatCompletions, []byte(body))
		require.NoError(b, err)
	}
	return r, reqs
}

// One routing decision as the router makes it (what strata_router_pick_duration_seconds
// measures): snapshot of 16 endpoints, filters, queue + KV + prefix scorers on a 4 KB prompt
// (hashing included), the picker, and the in-flight bookkeeping.
func BenchmarkPick(b *testing.B) {
	r, reqs := benchRouter(b)
	sreqs := make([]scheduling.Request, len(reqs))
	for i, ir := range reqs {
		parts := promptParts(ir)
		sreqs[i] = scheduling.Request{Model: ir.Model, PromptParts: parts, PromptTokens: estimateTokens(parts)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		sreq := sreqs[i%len(sreqs)] // a fresh copy: no cached block hashes
		d, err := r.decide(&call{sreq: &sreq}, false, reasonFirst)
		if err != nil {
			b.Fatal(err)
		}
		r.release(d)
	}
}

// Rendering a parsed 4 KB chat request's prompt into parts, done once per request before the
// pick (dominated by encoding/json unquoting the message contents).
func BenchmarkPromptParts(b *testing.B) {
	_, reqs := benchRouter(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		_ = promptParts(reqs[i%len(reqs)])
	}
}

func chatBodyRoles(model string, roleContent ...string) string {
	var m []openai.Message
	for i := 0; i+1 < len(roleContent); i += 2 {
		m = append(m, openai.Message{Role: roleContent[i], Content: openai.TextContent(roleContent[i+1])})
	}
	b, _ := json.Marshal(map[string]any{"model": model, "messages": m})
	return string(b)
}

func exec(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}
