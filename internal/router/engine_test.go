package router

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	testclock "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

// fakeEngine is a hand-written stand-in for one vLLM replica (the layer below the router):
// /health, /v1/models, /metrics in vLLM's format, and chat / completions answers that name the
// replica. The real simulator is another layer package, so the router's tests cannot import it.
type fakeEngine struct {
	name   string
	models []string
	srv    *httptest.Server

	health      atomic.Int32 // status of /health; 0 means 200
	metricsCode atomic.Int32 // status of /metrics; 0 means 200
	waiting     atomic.Int32
	kvMilli     atomic.Int32 // KV usage in thousandths

	mu     sync.Mutex
	bodies [][]byte // request bodies received on inference paths
	paths  []string
	// handler, when set, answers inference paths instead of the default answer.
	handler http.HandlerFunc
}

func newFakeEngine(t *testing.T, name string, models ...string) *fakeEngine {
	t.Helper()
	e := &fakeEngine{name: name, models: models}
	e.srv = httptest.NewServer(e)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *fakeEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/prefix") { // TestProxy's engine has a base path
	case "/health":
		if c := e.health.Load(); c != 0 {
			w.WriteHeader(int(c))
			return
		}
		w.WriteHeader(http.StatusOK)
	case "/v1/models":
		var data []map[string]any
		e.mu.Lock()
		models := e.models
		e.mu.Unlock()
		for _, m := range models {
			data = append(data, map[string]any{"id": m, "object": "model", "created": 1, "owned_by": "vllm", "root": m, "max_model_len": 8192})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
	case "/metrics":
		if c := e.metricsCode.Load(); c != 0 {
			w.WriteHeader(int(c))
			return
		}
		fmt.Fprintf(w, vllmMetricsTemplate, e.waiting.Load(), float64(e.kvMilli.Load())/1000)
	default:
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.bodies = append(e.bodies, body)
		e.paths = append(e.paths, r.URL.RequestURI())
		h := e.handler
		e.mu.Unlock()
		if h != nil {
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			h(w, r)
			return
		}
		var req openai.InferenceRequest
		_ = json.Unmarshal(body, &req)
		answer := fmt.Sprintf("%s answers: %s", e.name, strings.Repeat("a thoughtful sentence. ", 12))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(openai.ChatCompletion{ID: "chatcmpl-1", Object: "chat.completion", Model: req.Model,
			Choices: []openai.ChatChoice{{Message: openai.Message{Role: "assistant", Content: openai.TextContent(answer)}, FinishReason: "stop"}}})
	}
}

func (e *fakeEngine) received() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.bodies)
}

const vllmMetricsTemplate = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m",engine="0"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m",engine="0"} %d.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m",engine="0"} %g
`

// testRouter is a router over fake engines with a fake clock and its own registry.
type testRouter struct {
	*Router
	clk *testclock.FakeClock
	reg *prometheus.Registry
	srv *httptest.Server // the router served over HTTP, for streaming tests
}

func testConfig() config.Router {
	return config.Router{
		HealthInterval: config.Duration(time.Second), ScrapeInterval: config.Duration(time.Second),
		ScrapeTimeout: config.Duration(5 * time.Second), StaleAfter: config.Duration(2 * time.Second),
		PrefixBlockChars: 64, PrefixLRUBlocks: 4096, MaxAttempts: 3,
	}
}

func engineConfigs(engines ...*fakeEngine) []config.Engine {
	out := make([]config.Engine, len(engines))
	for i, e := range engines {
		out[i] = config.Engine{Name: e.name, URL: e.srv.URL}
	}
	return out
}

func newTestRouter(t *testing.T, cfg config.Router, engines []config.Engine) *testRouter {
	t.Helper()
	clk := testclock.NewFakeClock(time.Unix(1_700_000_000, 0))
	reg := prometheus.NewRegistry()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	r, err := newRouter(cfg, engines, tr, clk, reg, nil, rand.NewPCG(1, 2))
	require.NoError(t, err)
	ts := &testRouter{Router: r, clk: clk, reg: reg, srv: httptest.NewServer(r)}
	t.Cleanup(ts.srv.Close)
	return ts
}

// run starts Run until the test ends and waits for the first health round of every endpoint.
func (tr *testRouter) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tr.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// step advances the fake clock by d until cond holds (each probe round re-arms its timer after it
// fires, so one step may land before a probe waits again).
func (tr *testRouter) stepUntil(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, func() bool {
		if cond() {
			return true
		}
		tr.clk.Step(d)
		return false
	}, 10*time.Second, 5*time.Millisecond, msg)
}

func (tr *testRouter) ep(name string) *endpoint {
	for _, e := range tr.endpoints {
		if e.name == name {
			return e
		}
	}
	panic("no endpoint " + name)
}

// post sends body to path through ServeHTTP and returns the recorded answer.
func (tr *testRouter) post(path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	w := httptest.NewRecorder()
	tr.ServeHTTP(w, req)
	return w
}

func chatBody(model string, msgs ...string) string {
	var m []openai.Message
	for i, s := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		m = append(m, openai.Message{Role: role, Content: openai.TextContent(s)})
	}
	b, _ := json.Marshal(map[string]any{"model": model, "messages": m})
	return string(b)
}

func answerOf(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var c openai.ChatCompletion
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &c), w.Body.String())
	require.NotEmpty(t, c.Choices)
	return c.Choices[0].Message.ContentText()
}

// errorOf decodes an OpenAI error envelope.
func errorOf(t *testing.T, body []byte) *openai.Error {
	t.Helper()
	e := openai.ParseError(0, body)
	require.NotNil(t, e, "not an OpenAI error envelope: %s", body)
	return e
}
