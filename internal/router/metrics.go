package router

import (
	"github.com/prometheus/client_golang/prometheus"
)

// routerMetrics are the router's own Prometheus metrics. Labels are bounded: endpoint names come
// from the config, models from the endpoints' model lists (a model no endpoint serves is ""), and
// code is an HTTP status.
type routerMetrics struct {
	requests     *prometheus.CounterVec // strata_router_requests_total{model,endpoint,code}
	pickDuration prometheus.Histogram   // strata_router_pick_duration_seconds
	retries      prometheus.Counter     // strata_router_retries_total

	// decisions counts scheduling decisions by profile ("default", or the P/D profile names)
	// and reason (see the reason* constants).
	decisions *prometheus.CounterVec // strata_router_decisions_total{profile,reason}

	// Prefix-hit estimate against the engine's reported cached_tokens, counted only for answers
	// that report cached_tokens, so the three sums compare.
	prefixEstimated *prometheus.CounterVec // strata_router_prefix_estimated_tokens_total{endpoint}
	prefixCached    *prometheus.CounterVec // strata_router_prefix_cached_tokens_total{endpoint}
	prefixPrompt    *prometheus.CounterVec // strata_router_prefix_prompt_tokens_total{endpoint}
	prefixError     prometheus.Histogram   // strata_router_prefix_estimate_error_ratio

	flowQueueLength *prometheus.GaugeVec   // strata_router_flow_queue_length{priority}
	flowWait        prometheus.Histogram   // strata_router_flow_queue_wait_seconds
	flowRejected    *prometheus.CounterVec // strata_router_flow_rejected_total{reason}
}

// Reasons of strata_router_decisions_total.
const (
	reasonFirst         = "first"          // the request's first decision, without waiting
	reasonQueued        = "queued"         // dispatched from the flow-control queue
	reasonRetry         = "retry"          // another endpoint after a failure before the first byte
	reasonNoEndpoint    = "no_endpoint"    // the filters left no candidate (404 / 503)
	reasonSaturated     = "saturated"      // every candidate saturated (queued or shed)
	reasonDecodeOnly    = "decode_only"    // P/D: uncached prompt below the threshold
	reasonDisaggregated = "disaggregated"  // P/D: a prefill endpoint was picked too
	reasonPrefillFailed = "prefill_failed" // P/D: the prefill leg failed; decoded with a local prefill
)

func newRouterMetrics(reg prometheus.Registerer, r *Router) (*routerMetrics, error) {
	m := &routerMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_router_requests_total",
			Help: "Inference requests answered by the router, by model, endpoint that served them (\"\" if none) and HTTP status code.",
		}, []string{"model", "endpoint", "code"}),
		pickDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_router_pick_duration_seconds",
			Help:    "Time to pick an endpoint for one request (snapshot, filters, scorers, picker).",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10), // 1us .. 262ms
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "strata_router_retries_total",
			Help: "Requests sent again to another endpoint because the chosen one failed before the first response byte (connection refused or reset, 502/503).",
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_router_decisions_total",
			Help: "Scheduling decisions by profile and reason (first, queued, retry, no_endpoint, saturated, decode_only, disaggregated, prefill_failed).",
		}, []string{"profile", "reason"}),
		prefixEstimated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_router_prefix_estimated_tokens_total",
			Help: "Prompt tokens the router's prefix scorer expected cached on the chosen endpoint (estimated fraction x the engine's prompt_tokens), for answers reporting cached_tokens.",
		}, []string{"endpoint"}),
		prefixCached: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_router_prefix_cached_tokens_total",
			Help: "Prompt tokens the engine reported cached (usage.prompt_tokens_details.cached_tokens).",
		}, []string{"endpoint"}),
		prefixPrompt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_router_prefix_prompt_tokens_total",
			Help: "Prompt tokens (usage.prompt_tokens) of the answers reporting cached_tokens.",
		}, []string{"endpoint"}),
		prefixError: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_router_prefix_estimate_error_ratio",
			Help:    "(estimated - reported cached prompt tokens) / prompt tokens, per answer reporting cached_tokens: negative when the router underestimates the engine's prefix cache.",
			Buckets: prometheus.LinearBuckets(-0.875, 0.25, 8),
		}),
		flowQueueLength: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "strata_router_flow_queue_length",
			Help: "Requests waiting in the router's flow-control queue, by priority.",
		}, []string{"priority"}),
		flowWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "strata_router_flow_queue_wait_seconds",
			Help:    "Time dispatched requests waited in the flow-control queue.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1ms .. 262s
		}),
		flowRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_router_flow_rejected_total",
			Help: "Requests refused by flow control, by reason: sheddable_saturated and queue_full (429), ttl_expired (503).",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.pickDuration, m.retries, m.decisions, m.prefixEstimated,
		m.prefixCached, m.prefixPrompt, m.prefixError, m.flowQueueLength, m.flowWait, m.flowRejected, &endpointCollector{r: r}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var (
	descHealthy = prometheus.NewDesc("strata_router_endpoint_healthy",
		"1 if the endpoint's last health check passed, else 0.", []string{"endpoint"}, nil)
	descStale = prometheus.NewDesc("strata_router_endpoint_metrics_stale",
		"1 if the endpoint's scraped metrics are older than stale_after (it then counts as saturated), else 0.", []string{"endpoint"}, nil)
	descWaiting = prometheus.NewDesc("strata_router_endpoint_waiting_requests",
		"Requests waiting in the engine (vllm:num_requests_waiting, last scrape).", []string{"endpoint"}, nil)
	descRunning = prometheus.NewDesc("strata_router_endpoint_running_requests",
		"Requests running in the engine (vllm:num_requests_running, last scrape).", []string{"endpoint"}, nil)
	descKV = prometheus.NewDesc("strata_router_endpoint_kv_cache_usage_ratio",
		"Fraction of the engine's KV cache in use, 0 to 1 (vllm:kv_cache_usage_perc, last scrape).", []string{"endpoint"}, nil)
	descInFlight = prometheus.NewDesc("strata_router_endpoint_in_flight_requests",
		"Requests the router sent to the endpoint that have not finished.", []string{"endpoint"}, nil)
	descInFlightTokens = prometheus.NewDesc("strata_router_endpoint_in_flight_prompt_tokens",
		"Estimated prompt tokens of the requests the router sent to the endpoint that have not finished.", []string{"endpoint"}, nil)
)

// endpointCollector reports the per-endpoint gauges from the router's state at scrape time, so
// they are never out of date and cost nothing on the request path.
type endpointCollector struct{ r *Router }

var _ prometheus.Collector = (*endpointCollector)(nil)

func (c *endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHealthy, descStale, descWaiting, descRunning, descKV, descInFlight, descInFlightTokens} {
		ch <- d
	}
}

func (c *endpointCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.r.clk.Now()
	for _, ep := range c.r.endpoints {
		s := c.r.snapshotOne(ep, now)
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, ep.name)
		}
		g(descHealthy, b2f(s.Healthy))
		g(descStale, b2f(s.Stale))
		g(descWaiting, float64(s.Metrics.Waiting))
		g(descRunning, float64(s.Metrics.Running))
		g(descKV, s.Metrics.KVCacheUsage)
		g(descInFlight, float64(s.InFlight))
		g(descInFlightTokens, float64(s.InFlightTokens))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
