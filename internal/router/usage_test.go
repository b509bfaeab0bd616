package router

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Answers as vLLM sends them (vllm/entrypoints/openai/protocol.py, UsageInfo).
const (
	usageJSON = `{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant",` +
		`"content":"he said \"prompt_tokens\": 999"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1234,"total_tokens":1300,` +
		`"completion_tokens":66,"prompt_tokens_details":{"cached_tokens":1024}}}`
	usageSSE = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":70,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\": 70,\"total_tokens\":75,\"completion_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\": 64}}}\n\n" +
		"data: [DONE]\n\n"
	noCacheJSON = `{"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":null}}`
)

// The scanner finds the last usage of an answer however the answer is cut into reads, and
// passes every byte through unchanged.
func TestUsageScanner(t *testing.T) {
	for _, tc := range []struct {
		name           string
		body           string
		prompt, cached int
		ok             bool
	}{
		{"json", usageJSON, 1234, 1024, true},
		{"sse with continuous usage", usageSSE, 70, 64, true},
		{"prefix caching off", noCacheJSON, 12, -1, false},
		{"no usage", `{"choices":[]}`, -1, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{1, 2, 3, 7, 16, 47, 48, 49, 1 << 20} {
				s := newUsageScanner(io.NopCloser(iotest.OneByteReader(strings.NewReader(tc.body))))
				if chunk > 1 {
					s = newUsageScanner(io.NopCloser(&chunkReader{s: tc.body, n: chunk}))
				}
				got, err := io.ReadAll(s)
				require.NoError(t, err)
				require.Equal(t, tc.body, string(got))
				prompt, cached, ok := s.result()
				require.Equal(t, tc.ok, ok, "chunk %d", chunk)
				if ok {
					require.Equal(t, tc.prompt, prompt, "chunk %d", chunk)
					require.Equal(t, tc.cached, cached, "chunk %d", chunk)
				}
			}
		})
	}
}

// chunkReader returns s n bytes per Read.
type chunkReader struct {
	s string
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.s)
	c.s = c.s[k:]
	return k, nil
}

func FuzzUsageScanner(f *testing.F) {
	for _, s := range []string{usageJSON, usageSSE, noCacheJSON, `"cached_tokens":`, `"prompt_tokens":99999999999999999999999`} {
		f.Add(s, 5)
	}
	f.Fuzz(func(t *testing.T, body string, chunk int) {
		chunk = max(1, chunk%4096)
		s := newUsageScanner(io.NopCloser(&chunkReader{s: body, n: chunk}))
		got, err := io.ReadAll(s)
		require.NoError(t, err)
		require.Equal(t, body, string(got))
		prompt, cached, ok := s.result()
		if ok {
			require.GreaterOrEqual(t, prompt, 0)
			require.GreaterOrEqual(t, cached, 0)
		}
	})
}

// The router's decision and prefix metrics, golden: a first request finds nothing cached where
// the engine reports 0 of 1234 prompt tokens cached, the same prompt again is estimated fully
// cached where the engine reports 1024.
func TestDecisionAndPrefixMetrics(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	n := 0
	a.handler = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		n++
		if n == 1 {
			_, _ = io.WriteString(w, strings.Replace(usageJSON, `"cached_tokens":1024`, `"cached_tokens":0`, 1))
			return
		}
		_, _ = io.WriteString(w, usageJSON)
	}
	b := newFakeEngine(t, "b", "m")
	tr := newTestRouter(t, testConfig(), []config.Engine{
		{Name: "a", URL: a.srv.URL, Models: []string{"m"}},
		{Name: "b", URL: b.srv.URL, Models: []string{"m"}, Role: "prefill"}, // never takes a whole request
	})
	tr.markUp("a", 0)
	tr.markUp("b", 0)
	prompt := strings.Repeat("The same long prompt. ", 40)
	for range 2 {
		require.Equal(t, http.StatusOK, tr.post(openai.PathChatCompletions, chatBody("m", prompt)).Code)
	}
	tr.markUp("a", 0)
	require.Equal(t, http.StatusNotFound, tr.post(openai.PathChatCompletions, chatBody("other", "hi")).Code)

	require.NoError(t, testutil.GatherAndCompare(tr.reg, strings.NewReader(`
# HELP strata_router_decisions_total Scheduling decisions by profile and reason (first, queued, retry, no_endpoint, saturated, decode_only, disaggregated, prefill_failed).
# TYPE strata_router_decisions_total counter
strata_router_decisions_total{profile="default",reason="first"} 2
strata_router_decisions_total{profile="default",reason="no_endpoint"} 1
# HELP strata_router_prefix_cached_tokens_total Prompt tokens the engine reported cached (usage.prompt_tokens_details.cached_tokens).
# TYPE strata_router_prefix_cached_tokens_total counter
strata_router_prefix_cached_tokens_total{endpoint="a"} 1024
# HELP strata_router_prefix_estimated_tokens_total Prompt tokens the router's prefix scorer expected cached on the chosen endpoint (estimated fraction x the engine's prompt_tokens), for answers reporting cached_tokens.
# TYPE strata_router_prefix_estimated_tokens_total counter
strata_router_prefix_estimated_tokens_total{endpoint="a"} 1234
# HELP strata_router_prefix_prompt_tokens_total Prompt tokens (usage.prompt_tokens) of the answers reporting cached_tokens.
# TYPE strata_router_prefix_prompt_tokens_total counter
strata_router_prefix_prompt_tokens_total{endpoint="a"} 2468
# HELP strata_router_endpoint_in_flight_requests Requests the router sent to the endpoint that have not finished.
# TYPE strata_router_endpoint_in_flight_requests gauge
strata_router_endpoint_in_flight_requests{endpoint="a"} 0
strata_router_endpoint_in_flight_requests{endpoint="b"} 0
`), "strata_router_decisions_total", "strata_router_prefix_cached_tokens_total", "strata_router_prefix_estimated_tokens_total",
		"strata_router_prefix_prompt_tokens_total", "strata_router_endpoint_in_flight_requests"))
	require.Equal(t, uint64(2), histogramCount(t, tr, "strata_router_prefix_estimate_error_ratio"))
	require.Equal(t, uint64(2), histogramCount(t, tr, "strata_router_pick_duration_seconds"))
	problems, err := testutil.GatherAndLint(tr.reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// The scheduler sees the request's messages or prompt, its objective and fairness id, and the
// adapter it names.
func TestSchedRequest(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	tr := newTestRouter(t, testConfig(), engineConfigs(a))
	tr.ep("a").setModels([]string{"m", "sql-lora"}, nil, []string{"sql-lora"})
	h := http.Header{}
	h.Set(openai.HeaderObjective, "premium")
	h.Set(openai.HeaderFairnessID, "tenant-7f3a")
	h.Set(openai.HeaderSession, "conv-1")

	ir, err := openai.ParseInferenceRequest(openai.PathChatCompletions, []byte(chatBody("sql-lora", "hi")))
	require.NoError(t, err)
	sreq, label := tr.schedRequest(ir, h)
	require.Equal(t, "sql-lora", label)
	require.Equal(t, &scheduling.Request{Model: "sql-lora", LoRA: "sql-lora", Messages: ir.Messages, PromptParts: []string{"user: hi\n"},
		PromptTokens: 3, Session: "conv-1", Objective: "premium", FairnessID: "tenant-7f3a"}, sreq)

	ir, err = openai.ParseInferenceRequest(openai.PathCompletions, []byte(`{"model":"m","prompt":"Once upon"}`))
	require.NoError(t, err)
	sreq, _ = tr.schedRequest(ir, http.Header{})
	require.Equal(t, &scheduling.Request{Model: "m", Prompt: "Once upon", PromptParts: []string{"Once upon"}, PromptTokens: 3}, sreq)
}

// vllm:lora_requests_info as vLLM exports it: one series per label set seen, valued with the time
// it was last set; the newest one is current (vllm/v1/metrics/loggers.py).
func TestParseLoRAInfo(t *testing.T) {
	text := `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""} 1.7315e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora,chat-lora",waiting_lora_adapters="math-lora"} 1.7316e+09
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora",waiting_lora_adapters=""} 1.7314e+09
`
	m, err := parseMetrics(strings.NewReader(text))
	require.NoError(t, err)
	require.Equal(t, scheduling.Metrics{Running: 2, RunningLoRAs: []string{"sql-lora", "chat-lora"}, WaitingLoRAs: []string{"math-lora"}, MaxLoRA: 2}, m)
}

// Adapters are the /v1/models entries with a parent (vLLM lists loaded LoRA adapters so); the list
// is polled on every health round, so adapters loaded later appear.
func TestAdapterDiscovery(t *testing.T) {
	models := `{"object":"list","data":[{"id":"m","object":"model","parent":null,"root":"m"}]}`
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			mu.Lock()
			defer mu.Unlock()
			_, _ = io.WriteString(w, models)
		}
	}))
	t.Cleanup(srv.Close)
	tr := newTestRouter(t, testConfig(), []config.Engine{{Name: "a", URL: srv.URL}})
	tr.run(t)
	ep := tr.ep("a")
	require.Eventually(t, ep.modelsKnown, 5*time.Second, time.Millisecond)
	require.Empty(t, tr.snapshotOne(ep, tr.clk.Now()).Adapters)
	mu.Lock()
	models = `{"object":"list","data":[{"id":"m","object":"model","parent":null},{"id":"sql-lora","object":"model","parent":"m","root":"/adapters/sql"}]}`
	mu.Unlock()
	tr.stepUntil(t, time.Second, func() bool { return len(tr.snapshotOne(ep, tr.clk.Now()).Adapters) == 1 }, "adapter discovered")
	s := tr.snapshotOne(ep, tr.clk.Now())
	require.Equal(t, []string{"sql-lora"}, s.Adapters)
	require.Equal(t, []string{"m", "sql-lora"}, s.Models)
	_, lora := tr.modelInfo("sql-lora")
	require.True(t, lora)
}

// kvRecorder is a picker that records the KV events it is given.
type kvRecorder struct {
	mu     sync.Mutex
	events map[string]int
}

func (k *kvRecorder) Name() string { return "kv-recorder" }
func (k *kvRecorder) Pick(eps []*scheduling.Endpoint, _ []float64) *scheduling.Endpoint {
	return eps[0]
}
func (k *kvRecorder) HandleKVEvents(endpoint string, events []scheduling.KVEvent) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.events[endpoint] += len(events)
}

// HandleKVEvents reaches every profile's scheduler.
func TestHandleKVEvents(t *testing.T) {
	tr := newTestRouter(t, testConfig(), []config.Engine{{Name: "a", URL: "http://a:1"}})
	dec, pre := &kvRecorder{events: map[string]int{}}, &kvRecorder{events: map[string]int{}}
	tr.profiles = &profileSet{main: profile{name: "decode", sched: scheduling.NewScheduler(nil, nil, dec)},
		prefill: &profile{name: "prefill", sched: scheduling.NewScheduler(nil, nil, pre)}}
	tr.HandleKVEvents("a", []scheduling.KVEvent{{Kind: scheduling.BlockStored, BlockHashes: []uint64{1}}, {Kind: scheduling.AllBlocksCleared}})
	require.Equal(t, map[string]int{"a": 2}, dec.events)
	require.Equal(t, map[string]int{"a": 2}, pre.events)
}

func FuzzParseModelList(f *testing.F) {
	f.Add([]byte(`{"object":"list","data":[{"id":"m","object":"model","parent":null},{"id":"sql-lora","parent":"m"}]}`))
	f.Add([]byte(`{"data":[{"id":""},{"id":"a","parent":""},{"id":"a"},{"nope":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ml, err := parseModelList(b)
		if err != nil {
			return
		}
		require.Len(t, ml.objs, len(ml.ids))
		require.LessOrEqual(t, len(ml.adapters), len(ml.ids))
		for _, a := range ml.adapters {
			require.Contains(t, ml.ids, a)
		}
	})
}

// The usage of a streamed answer is read from its final usage chunk while the stream is relayed.
func TestStreamUsageMetrics(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	a.handler = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range strings.SplitAfter(usageSSE, "\n\n") {
			_, _ = io.WriteString(w, ev)
			http.NewResponseController(w).Flush()
		}
	}
	tr := newTestRouter(t, testConfig(), engineConfigs(a))
	tr.markUp("a", 0)
	resp, err := tr.srv.Client().Post(tr.srv.URL+openai.PathChatCompletions, "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`))
	require.NoError(t, err)
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, usageSSE, string(got))
	require.Eventually(t, func() bool { return testutil.ToFloat64(tr.metrics.prefixPrompt.WithLabelValues("a")) == 70 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 64.0, testutil.ToFloat64(tr.metrics.prefixCached.WithLabelValues("a")))
}
