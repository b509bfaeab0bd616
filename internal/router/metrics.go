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
}

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
			Help: "Requests sent again to another endpoint because the chosen one refused the connection.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.pickDuration, m.retries, &endpointCollector{r: r}} {
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
