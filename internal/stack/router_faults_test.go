package stack

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/router"
)

// faultSims starts one simulated replica per fault set (time_scale 0: answers at once) and a
// router over them, served over HTTP. It returns the router's URL and registry.
func faultSims(t testing.TB, faults ...config.SimFaults) (string, *prometheus.Registry) {
	t.Helper()
	var engines []config.Engine
	for i, f := range faults {
		cfg := config.Default().Sim
		cfg.TimeScale = new(float64)
		cfg.Faults = f
		cfg.Seed = 7
		name := fmt.Sprintf("sim-%d", i)
		srv, err := sim.New(cfg, name, clock.RealClock{}, prometheus.NewRegistry())
		require.NoError(t, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		hs := &http.Server{Handler: srv}
		go func() { _ = hs.Serve(ln) }()
		t.Cleanup(func() { _ = hs.Close(); srv.Close() })
		engines = append(engines, config.Engine{Name: name, URL: "http://" + ln.Addr().String(), Models: []string{cfg.Model}})
	}
	rc := config.Default().Router
	reg := prometheus.NewRegistry()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	r, err := router.New(rc, engines, tr, nil, reg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return gatherGaugeSum(t, reg, "strata_router_endpoint_healthy") == float64(len(faults)) },
		10*time.Second, 5*time.Millisecond)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{Handler: r}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "http://" + ln.Addr().String(), reg
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// The simulator's injected 503s (vLLM's ServiceUnavailableError) are retried on the healthy
// replica; its injected 500s (EngineDeadError) reach the client as they are.
func TestRouterRetriesSimUnavailable(t *testing.T) {
	url, reg := faultSims(t, config.SimFaults{ErrorRate: 1}, config.SimFaults{})
	model := config.Default().Sim.Model
	codes := map[int]int{}
	for i := range 40 {
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"question %d"}],"max_tokens":4}`, model, i)
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusOK {
			require.Equal(t, "sim-1", resp.Header.Get("x-gateway-destination-endpoint-served"), string(b))
		}
	}
	require.Zero(t, codes[http.StatusServiceUnavailable], "every 503 was retried on the healthy replica: %v", codes)
	require.Equal(t, 40, codes[http.StatusOK]+codes[http.StatusInternalServerError], "%v", codes)
	require.Positive(t, counterValue(t, reg, "strata_router_retries_total"), "%v", codes)
}

// A stream the simulator cuts after two events is never retried: the client keeps the two
// events and gets no [DONE]; the other replica never sees the request.
func TestRouterDoesNotRetryMidStreamReset(t *testing.T) {
	url, reg := faultSims(t, config.SimFaults{ResetRate: 1, ResetAfter: 2}, config.SimFaults{ResetRate: 1, ResetAfter: 2})
	model := config.Default().Sim.Model
	for i := range 10 {
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"story %d"}],"max_tokens":20,"ignore_eos":true,"stream":true}`, model, i)
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		events := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				require.NotEqual(t, "data: [DONE]", sc.Text())
				events++
			}
		}
		_ = resp.Body.Close()
		require.Equal(t, 2, events)
	}
	require.Zero(t, counterValue(t, reg, "strata_router_retries_total"))
	require.Equal(t, 10.0, testutil.ToFloat64(requestsCounter(t, reg)))
}

// requestsCounter sums strata_router_requests_total as a collector for testutil.
func requestsCounter(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "strata_router_requests_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sum"})
	c.Add(sum)
	return c
}

// A replica that hangs holds a request only until its client gives up (the router has no
// first-byte timeout): every client is released by its own deadline, and once they are gone the
// router's in-flight accounting is back to zero, nothing leaks.
func TestRouterHangingReplica(t *testing.T) {
	url, reg := faultSims(t, config.SimFaults{HangRate: 1}, config.SimFaults{})
	model := config.Default().Sim.Model
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, timedOut := 0, 0
	for i := range 8 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"q %d"}],"max_tokens":2}`, model, i)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				timedOut++
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ok++
			}
		})
	}
	wg.Wait()
	require.Equal(t, 8, ok+timedOut, "every client is answered or released by its deadline")
	require.Eventually(t, func() bool { return gatherGaugeSum(t, reg, "strata_router_endpoint_in_flight_requests") == 0 },
		10*time.Second, 5*time.Millisecond, "requests of clients that gave up are no longer in flight")
}

// BenchmarkFlowControlPriority measures what flow control buys a high-priority objective under
// a burst: 2 simulated replicas (max_num_seqs 2, real time scaled by 0.25), 40 "batch" requests
// at once, then 10 "premium" ones 100 ms later; reported: premium and batch end-to-end latency
// (p50, max) with router queueing off (engines queue FCFS) and on (the router holds the burst and
// serves premium first). Run: go test -run XXX -bench FlowControlPriority -benchtime 1x ./internal/stack/
func BenchmarkFlowControlPriority(b *testing.B) {
	for _, enabled := range []bool{false, true} {
		b.Run(fmt.Sprintf("queueing=%v", enabled), func(b *testing.B) {
			for range b.N {
				premium, batch := flowBurst(b, enabled)
				b.ReportMetric(pct(premium, 50), "premium-p50-ms")
				b.ReportMetric(pct(premium, 100), "premium-max-ms")
				b.ReportMetric(pct(batch, 50), "batch-p50-ms")
				b.ReportMetric(pct(batch, 100), "batch-max-ms")
			}
		})
	}
}

func pct(ms []float64, p int) float64 {
	s := slices.Clone(ms)
	slices.Sort(s)
	i := min(len(s)-1, len(s)*p/100)
	return s[i]
}

func flowBurst(b *testing.B, enabled bool) (premium, batch []float64) {
	var engines []config.Engine
	for i := range 2 {
		cfg := config.Default().Sim
		scale := 0.25
		cfg.TimeScale = &scale
		cfg.MaxNumSeqs = 2
		name := fmt.Sprintf("sim-%d", i)
		srv, err := sim.New(cfg, name, clock.RealClock{}, prometheus.NewRegistry())
		require.NoError(b, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		hs := &http.Server{Handler: srv}
		go func() { _ = hs.Serve(ln) }()
		defer func() { _ = hs.Close(); srv.Close() }()
		engines = append(engines, config.Engine{Name: name, URL: "http://" + ln.Addr().String(), Models: []string{cfg.Model}})
	}
	rc := config.Default().Router
	rc.FlowControl.Enabled = enabled
	rc.FlowControl.Objectives = map[string]int{"premium": 10, "batch": 0}
	rc.FlowControl.Saturation.QueueDepthThreshold = 1
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	defer tr.CloseIdleConnections()
	r, err := router.New(rc, engines, tr, nil, prometheus.NewRegistry(), nil)
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	require.Eventually(b, r.Ready, 10*time.Second, 5*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // first scrapes
	model := config.Default().Sim.Model
	var mu sync.Mutex
	var wg sync.WaitGroup
	send := func(objective string, i int, out *[]float64) {
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"%s request %d"}],"max_tokens":32,"ignore_eos":true}`, model, objective, i)
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("x-gateway-inference-objective", objective)
		w := httptest.NewRecorder()
		start := time.Now()
		r.ServeHTTP(w, req)
		require.Equal(b, http.StatusOK, w.Code, w.Body.String())
		mu.Lock()
		*out = append(*out, float64(time.Since(start).Microseconds())/1000)
		mu.Unlock()
	}
	for i := range 40 {
		wg.Go(func() { send("batch", i, &batch) })
	}
	time.Sleep(100 * time.Millisecond)
	for i := range 10 {
		wg.Go(func() { send("premium", i, &premium) })
	}
	wg.Wait()
	return premium, batch
}

// Prefill/decode disaggregation end to end on two simulated replicas (the simulator implements
// vLLM's NixlConnector protocol): the router sends the prefill leg to the prefill replica, which
// generates one token and returns kv_transfer_params, then the request with them to the decode
// replica, which generates the answer without computing the prompt.
func TestRouterDisaggregatesOnSims(t *testing.T) {
	var engines []config.Engine
	var sims []*sim.Server
	for _, role := range []string{"prefill", "decode"} {
		cfg := config.Default().Sim
		cfg.TimeScale = new(float64)
		name := fmt.Sprintf("sim-%s", role)
		srv, err := sim.New(cfg, name, clock.RealClock{}, prometheus.NewRegistry())
		require.NoError(t, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		hs := &http.Server{Handler: srv}
		go func() { _ = hs.Serve(ln) }()
		t.Cleanup(func() { _ = hs.Close(); srv.Close() })
		sims = append(sims, srv)
		engines = append(engines, config.Engine{Name: name, URL: "http://" + ln.Addr().String(), Models: []string{cfg.Model}, Role: role})
	}
	rc := config.Default().Router
	rc.Scheduler = &config.EndpointPickerConfig{
		Plugins: []config.PluginSpec{{Type: "prefill-filter"}, {Type: "decode-filter"}, {Type: "queue-scorer"},
			{Type: "max-score-picker"}, {Type: "pd-profile-handler", Parameters: []byte(`{"threshold":0}`)}},
		SchedulingProfiles: []config.SchedulingProfile{
			{Name: "prefill", Plugins: []config.ProfilePlugin{{PluginRef: "prefill-filter"}, {PluginRef: "queue-scorer"}, {PluginRef: "max-score-picker"}}},
			{Name: "decode", Plugins: []config.ProfilePlugin{{PluginRef: "decode-filter"}, {PluginRef: "queue-scorer"}, {PluginRef: "max-score-picker"}}},
		},
	}
	reg := prometheus.NewRegistry()
	r, err := router.New(rc, engines, &http.Transport{}, nil, reg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return gatherGaugeSum(t, reg, "strata_router_endpoint_healthy") == 2 }, 10*time.Second, 5*time.Millisecond)

	model := config.Default().Sim.Model
	prompt := strings.Repeat("Summarise the following report carefully. ", 60)
	for _, stream := range []bool{false, true} {
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}],"max_tokens":16,"ignore_eos":true,"stream":%v}`, model, prompt+fmt.Sprint(stream), stream)
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		require.Equal(t, "sim-decode", w.Header().Get("x-gateway-destination-endpoint-served"))
		require.NotContains(t, w.Body.String(), `"do_remote_decode":true`, "the prefill answer never reaches the client")
		if stream {
			require.Contains(t, w.Body.String(), "data: [DONE]")
		}
	}
	gen := func(s *sim.Server) float64 { return gatherSum(t, s.Registry(), "vllm:generation_tokens_total") }
	prom := func(s *sim.Server) float64 { return gatherSum(t, s.Registry(), "vllm:prompt_tokens_total") }
	require.Equal(t, 2.0, gen(sims[0]), "the prefill replica generates one token per request")
	require.Equal(t, 32.0, gen(sims[1]), "the decode replica generates the answers")
	require.Positive(t, prom(sims[0]))
	require.Equal(t, 4.0, gatherSum(t, reg, "strata_router_decisions_total"), "one disaggregated decision per request on each of the two profiles")
}

// gatherGaugeSum sums every series of the named gauge family in reg.
func gatherGaugeSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// gatherSum sums every series of the named counter family in reg.
func gatherSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// BenchmarkDisaggregation compares two simulated replicas serving long prompts end to end
// ("colocated": both role both) with one prefill and one decode replica behind the router's P/D
// profiles ("pd", threshold 0): 24 streamed requests with distinct ~4k-token prompts and 64
// output tokens, one every 40 ms, time_scale 0.25. Reported: mean TTFT and mean time per output
// token after the first (TPOT) as the client sees them.
// Run: go test -run XXX -bench Disaggregation -benchtime 1x ./internal/stack/
func BenchmarkDisaggregation(b *testing.B) {
	for _, pd := range []bool{false, true} {
		b.Run(map[bool]string{false: "colocated", true: "pd"}[pd], func(b *testing.B) {
			for range b.N {
				ttft, tpot := pdRun(b, pd)
				b.ReportMetric(mean(ttft), "ttft-ms")
				b.ReportMetric(pct(ttft, 100), "ttft-max-ms")
				b.ReportMetric(mean(tpot), "tpot-ms")
				b.ReportMetric(pct(tpot, 100), "tpot-max-ms")
			}
		})
	}
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func pdRun(b *testing.B, pd bool) (ttft, tpot []float64) {
	var engines []config.Engine
	for _, role := range []string{"prefill", "decode"} {
		cfg := config.Default().Sim
		scale := 0.25
		cfg.TimeScale = &scale
		cfg.MaxModelLen = 8192
		srv, err := sim.New(cfg, "sim-"+role, clock.RealClock{}, prometheus.NewRegistry())
		require.NoError(b, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		hs := &http.Server{Handler: srv}
		go func() { _ = hs.Serve(ln) }()
		defer func() { _ = hs.Close(); srv.Close() }()
		e := config.Engine{Name: "sim-" + role, URL: "http://" + ln.Addr().String(), Models: []string{cfg.Model}}
		if pd {
			e.Role = role
		}
		engines = append(engines, e)
	}
	rc := config.Default().Router
	if pd {
		rc.Scheduler = &config.EndpointPickerConfig{
			Plugins: []config.PluginSpec{{Type: "prefill-filter"}, {Type: "decode-filter"}, {Type: "queue-scorer"},
				{Type: "max-score-picker"}, {Type: "pd-profile-handler", Parameters: []byte(`{"threshold":0}`)}},
			SchedulingProfiles: []config.SchedulingProfile{
				{Name: "prefill", Plugins: []config.ProfilePlugin{{PluginRef: "prefill-filter"}, {PluginRef: "queue-scorer"}, {PluginRef: "max-score-picker"}}},
				{Name: "decode", Plugins: []config.ProfilePlugin{{PluginRef: "decode-filter"}, {PluginRef: "queue-scorer"}, {PluginRef: "max-score-picker"}}},
			},
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	defer tr.CloseIdleConnections()
	r, err := router.New(rc, engines, tr, nil, prometheus.NewRegistry(), nil)
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	require.Eventually(b, r.Ready, 10*time.Second, 5*time.Millisecond)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	hs := &http.Server{Handler: r}
	go func() { _ = hs.Serve(ln) }()
	defer func() { _ = hs.Close() }()
	url := "http://" + ln.Addr().String() + "/v1/chat/completions"
	model := config.Default().Sim.Model
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			prompt := fmt.Sprintf("Document %d. ", i) + strings.Repeat(fmt.Sprintf("Paragraph about topic %d with details. ", i*31), 440)
			body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}],"max_tokens":64,"ignore_eos":true,"stream":true}`, model, prompt)
			start := time.Now()
			resp, err := http.Post(url, "application/json", strings.NewReader(body))
			require.NoError(b, err)
			defer resp.Body.Close()
			require.Equal(b, http.StatusOK, resp.StatusCode)
			var first, last time.Time
			n := 0
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if line := sc.Text(); strings.HasPrefix(line, "data: {") && strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
					if first.IsZero() {
						first = time.Now()
					}
					last = time.Now()
					n++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			ttft = append(ttft, float64(first.Sub(start).Microseconds())/1000)
			if n > 1 {
				tpot = append(tpot, float64(last.Sub(first).Microseconds())/1000/float64(n-1))
			}
		})
		time.Sleep(40 * time.Millisecond)
	}
	wg.Wait()
	return ttft, tpot
}

// BenchmarkPrefixEstimate replays the 80 two-turn MT-Bench conversations (turn 2 = turn 1 + the
// answer + the second question) through the router's default profile onto 3 simulated replicas
// (time_scale 0) and reports the router's prefix-hit estimate against the cached_tokens the
// engines report: both as a share of all prompt tokens, and the mean |error| per answer.
// Run: go test -run XXX -bench PrefixEstimate -benchtime 1x ./internal/stack/
func BenchmarkPrefixEstimate(b *testing.B) {
	f, err := os.Open("../../../shared/data/prompts/mtbench_question.jsonl")
	if err != nil {
		b.Skip("MT-Bench data not found:", err)
	}
	defer f.Close()
	var convs [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var q struct {
			Turns []string `json:"turns"`
		}
		require.NoError(b, json.Unmarshal(sc.Bytes(), &q))
		convs = append(convs, q.Turns)
	}
	for range b.N {
		url, reg := faultSims(b, config.SimFaults{}, config.SimFaults{}, config.SimFaults{})
		model := config.Default().Sim.Model
		for _, turns := range convs {
			var msgs []map[string]string
			for _, q := range turns {
				msgs = append(msgs, map[string]string{"role": "user", "content": q})
				body, _ := json.Marshal(map[string]any{"model": model, "messages": msgs, "max_tokens": 128})
				resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
				require.NoError(b, err)
				var out struct {
					Choices []struct {
						Message struct {
							Content string `json:"content"`
						} `json:"message"`
					} `json:"choices"`
				}
				require.NoError(b, json.NewDecoder(resp.Body).Decode(&out))
				_ = resp.Body.Close()
				msgs = append(msgs, map[string]string{"role": "assistant", "content": out.Choices[0].Message.Content})
			}
		}
		prompt := gatherSum(b, reg, "strata_router_prefix_prompt_tokens_total")
		b.ReportMetric(100*gatherSum(b, reg, "strata_router_prefix_estimated_tokens_total")/prompt, "estimated-%")
		b.ReportMetric(100*gatherSum(b, reg, "strata_router_prefix_cached_tokens_total")/prompt, "cached-%")
		b.ReportMetric(prompt, "prompt-tokens")
	}
}
