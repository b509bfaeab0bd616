package sim

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// vllmMetrics are the series a vLLM replica exposes on /metrics, with vLLM's names, types,
// help texts, labels and buckets (vllm/v1/metrics/loggers.py, PrometheusStatLogger). They live
// on the Server's own registry, so replicas never collide. Python's prometheus_client appends
// "_total" to counters; the Go client does not, so the counter names here carry it.
type vllmMetrics struct {
	running, waiting            prometheus.Gauge
	kvUsage, gpuCacheUsage      prometheus.Gauge
	prefixQueries, prefixHits   prometheus.Counter
	preemptions                 prometheus.Counter
	promptTokens, genTokens     prometheus.Counter
	success                     map[string]prometheus.Counter
	ttft, itl, tpot, e2e, queue prometheus.Observer
	iterationTokens             prometheus.Observer
	reqPromptTokens, reqGenToks prometheus.Observer
	loraInfo                    *prometheus.GaugeVec
	maxLora                     string
	loraRunning, loraWaiting    string
	loraSet                     bool
}

// Bucket boundaries, verbatim from vllm/v1/metrics/loggers.py.
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
		2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	itlBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
		5.0, 7.5, 10.0, 20.0, 40.0, 80.0}
	requestLatencyBuckets = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
		30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
	iterationTokenBuckets = []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}
)

// build125Buckets is vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to max.
func build125Buckets(maxValue int) []float64 {
	var out []float64
	for exp := 1; ; exp *= 10 {
		for _, m := range []int{1, 2, 5} {
			v := m * exp
			if v > maxValue {
				return out
			}
			out = append(out, float64(v))
		}
	}
}

func newVLLMMetrics(reg *prometheus.Registry, model string, maxModelLen int, cacheInfo prometheus.Labels, maxLoras int) *vllmMetrics {
	labels := []string{"model_name", "engine"}
	values := []string{model, "0"}
	gauge := func(name, help string) prometheus.Gauge {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		reg.MustRegister(v)
		return v.WithLabelValues(values...)
	}
	counter := func(name, help string) prometheus.Counter {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(v)
		return v.WithLabelValues(values...)
	}
	histogram := func(name, help string, buckets []float64) prometheus.Observer {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		reg.MustRegister(v)
		return v.WithLabelValues(values...)
	}
	m := &vllmMetrics{
		running: gauge("vllm:num_requests_running", "Number of requests in model execution batches."),
		waiting: gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
		kvUsage: gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
		gpuCacheUsage: gauge("vllm:gpu_cache_usage_perc",
			"GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead."),
		prefixQueries: counter("vllm:prefix_cache_queries_total",
			"Prefix cache queries, in terms of number of queried tokens."),
		prefixHits: counter("vllm:prefix_cache_hits_total",
			"Prefix cache hits, in terms of number of cached tokens."),
		preemptions:  counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine."),
		promptTokens: counter("vllm:prompt_tokens_total", "Number of prefill tokens processed."),
		genTokens:    counter("vllm:generation_tokens_total", "Number of generation tokens processed."),
		ttft: histogram("vllm:time_to_first_token_seconds",
			"Histogram of time to first token in seconds.", ttftBuckets),
		itl: histogram("vllm:inter_token_latency_seconds",
			"Histogram of inter-token latency in seconds.", itlBuckets),
		tpot: histogram("vllm:time_per_output_token_seconds",
			"Histogram of time per output token in seconds.", itlBuckets),
		e2e: histogram("vllm:e2e_request_latency_seconds",
			"Histogram of e2e request latency in seconds.", requestLatencyBuckets),
		queue: histogram("vllm:request_queue_time_seconds",
			"Histogram of time spent in WAITING phase for request.", requestLatencyBuckets),
		iterationTokens: histogram("vllm:iteration_tokens_total",
			"Histogram of number of tokens per engine_step.", iterationTokenBuckets),
		reqPromptTokens: histogram("vllm:request_prompt_tokens",
			"Number of prefill tokens processed.", build125Buckets(maxModelLen)),
		reqGenToks: histogram("vllm:request_generation_tokens",
			"Number of generation tokens processed.", build125Buckets(maxModelLen)),
	}
	success := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vllm:request_success_total",
		Help: "Count of successfully processed requests."}, append(labels, "finished_reason"))
	reg.MustRegister(success)
	m.success = map[string]prometheus.Counter{}
	for _, r := range []string{finishStop, finishLength, finishAbort} {
		m.success[r] = success.WithLabelValues(model, "0", r)
	}
	m.loraInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vllm:lora_requests_info",
		Help: "Running stats on lora requests."}, []string{"max_lora", "waiting_lora_adapters", "running_lora_adapters"})
	reg.MustRegister(m.loraInfo)
	m.maxLora = strconv.Itoa(maxLoras)
	names := make([]string, 0, len(cacheInfo))
	for k := range cacheInfo {
		names = append(names, k)
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vllm:cache_config_info",
		Help: "Information of the LLMEngine CacheConfig"}, names)
	reg.MustRegister(info)
	info.With(cacheInfo).Set(1)
	return m
}

// cacheConfigInfo is the label set of vllm:cache_config_info: CacheConfig.metrics_info(), every
// value a string as vLLM renders it, plus engine.
func cacheConfigInfo(blockSize, numGPUBlocks int, utilization float64) prometheus.Labels {
	return prometheus.Labels{
		"block_size":               strconv.Itoa(blockSize),
		"num_gpu_blocks":           strconv.Itoa(numGPUBlocks),
		"num_cpu_blocks":           "None",
		"cache_dtype":              "auto",
		"enable_prefix_caching":    "True",
		"prefix_caching_hash_algo": "sha256_cbor",
		"gpu_memory_utilization":   strconv.FormatFloat(utilization, 'g', -1, 64),
		"engine":                   "0",
	}
}

// setLoRAInfo sets vllm:lora_requests_info to the current adapters, its value the time they
// changed (vLLM: set_to_current_time). vLLM keeps stale label sets; the simulator keeps one.
func (m *vllmMetrics) setLoRAInfo(running, waiting string, now time.Time) {
	if m.loraSet && running == m.loraRunning && waiting == m.loraWaiting {
		return
	}
	m.loraInfo.Reset()
	m.loraInfo.WithLabelValues(m.maxLora, waiting, running).Set(float64(now.UnixNano()) / 1e9)
	m.loraRunning, m.loraWaiting, m.loraSet = running, waiting, true
}

// record adds a step's statistics and the scheduler's state after it.
func (m *vllmMetrics) record(st *stepStats, running, waiting int, usage float64) {
	m.running.Set(float64(running))
	m.waiting.Set(float64(waiting))
	m.kvUsage.Set(usage)
	m.gpuCacheUsage.Set(usage)
	m.prefixQueries.Add(float64(st.prefixQueries))
	m.prefixHits.Add(float64(st.prefixHits))
	m.preemptions.Add(float64(st.preemptions))
	m.promptTokens.Add(float64(st.promptTokens))
	m.genTokens.Add(float64(st.generationTokens))
	if st.stepTokens > 0 {
		m.iterationTokens.Observe(float64(st.stepTokens))
	}
	for _, v := range st.ttft {
		m.ttft.Observe(v)
	}
	for _, v := range st.itl {
		m.itl.Observe(v)
		m.tpot.Observe(v)
	}
	for _, v := range st.e2e {
		m.e2e.Observe(v)
	}
	for _, v := range st.queue {
		m.queue.Observe(v)
	}
	for _, f := range st.finished {
		if c, ok := m.success[f.reason]; ok {
			c.Inc()
		}
		m.reqPromptTokens.Observe(float64(f.promptTokens))
		m.reqGenToks.Observe(float64(f.outputTokens))
	}
}

// simMetrics are Strata's own metrics of a simulated replica, on the caller's registerer with a
// replica label: how the step loop keeps up with its clock.
type simMetrics struct {
	steps           prometheus.Counter
	stepTime        prometheus.Observer
	lag             prometheus.Observer
	kvPublishErrors prometheus.Counter
	// faults counts injected faults by kind: error, hang, reset, cold_start.
	faults *prometheus.CounterVec
}

func newSimMetrics(reg prometheus.Registerer, name string) (*simMetrics, error) {
	m := &simMetrics{}
	steps := prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_engine_sim_steps_total",
		Help: "Engine steps run by the simulated replica."})
	stepTime := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_engine_sim_step_seconds",
		Help:    "Modelled duration of one engine step, before time_scale.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_engine_sim_lag_seconds",
		Help:    "How late the step loop woke up after a step's scheduled end, on the injected clock.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)})
	kvErrs := prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_engine_sim_kv_event_publish_errors_total",
		Help: "KV-event batches the simulated replica failed to encode or send."})
	faults := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_engine_sim_faults_injected_total",
		Help: "Faults injected by the simulated replica (sim.faults), by kind: error, hang, reset, cold_start."}, []string{"fault"})
	m.steps, m.stepTime, m.lag, m.kvPublishErrors, m.faults = steps, stepTime, lag, kvErrs, faults
	if reg == nil {
		return m, nil
	}
	r := prometheus.WrapRegistererWith(prometheus.Labels{"replica": name}, reg)
	for _, c := range []prometheus.Collector{steps, stepTime, lag, kvErrs, faults} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// newStepLagHistogram is strata_sim_step_lag_seconds, on the replica's own registry (the one
// /metrics serves): how late each step of the real-time loop ends on the wall clock after its
// modelled end, measured once the step's tokens are handed to the streams. A replica that keeps
// up with its clock stays in the sub-millisecond buckets; a growing lag means the process
// cannot serve its load in real time (docs/simulator.md, "Real-time capacity").
func newStepLagHistogram(reg prometheus.Registerer) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_sim_step_lag_seconds",
		Help:    "How late each engine step ended on the wall clock after its modelled end.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18)}) // 50 µs .. 6.5 s
	reg.MustRegister(h)
	return h
}
