package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-inference/strata/internal/config"
)

// SLO label values of strata_gateway_slo_violations_total.
const (
	sloTTFT = "ttft"
	sloE2E  = "e2e"
)

// sloBuckets are the latency histogram buckets in seconds: 25 ms to 5 min, roughly doubling,
// dense where interactive TTFT targets sit (0.1 s to 2 s).
var sloBuckets = []float64{0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300}

// sloMetrics observes per-tier latency against the configured SLO targets (config.SLO):
//
//	strata_gateway_ttft_seconds{tier}               histogram, time to first token
//	strata_gateway_request_duration_seconds{tier}   histogram, end to end
//	strata_gateway_slo_violations_total{tier,slo}   counter, slo = "ttft" or "e2e"
//
// TTFT is the time from the gateway receiving the request to the first body byte of a stream,
// or to the response headers of a non-streaming answer (the same measure as usage.ttft_ms). The
// tier label is the tier name of the effective policy ("" for tenants without one), a bounded
// set from the config. A nil *sloMetrics observes nothing.
type sloMetrics struct {
	cfg        config.SLO
	ttft       *prometheus.HistogramVec
	duration   *prometheus.HistogramVec
	violations *prometheus.CounterVec
}

// newSLOMetrics registers the SLO metrics on reg and pre-creates the series of every configured
// tier (so a dashboard shows 0 rather than nothing).
func newSLOMetrics(reg prometheus.Registerer, cfg config.SLO, tiers []string) (*sloMetrics, error) {
	s := &sloMetrics{
		cfg: cfg,
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strata_gateway_ttft_seconds",
			Help:    "Time to first token (streams) or to the response headers (non-streaming), by tier.",
			Buckets: sloBuckets,
		}, []string{"tier"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strata_gateway_request_duration_seconds",
			Help:    "End-to-end duration of metered inference requests, by tier.",
			Buckets: sloBuckets,
		}, []string{"tier"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_gateway_slo_violations_total",
			Help: "Metered inference requests slower than their tier's SLO target, by tier and slo (ttft or e2e).",
		}, []string{"tier", "slo"}),
	}
	for _, c := range []prometheus.Collector{s.ttft, s.duration, s.violations} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, t := range tiers {
		s.violations.WithLabelValues(t, sloTTFT)
		s.violations.WithLabelValues(t, sloE2E)
	}
	return s, nil
}

// observe records one finished request of tier: its TTFT (negative or 0 when no first token was
// seen: not observed) and end-to-end duration, counting a violation for each target it missed.
// streamed says whether TTFT is a first-token time; a non-streaming TTFT is the time to the whole
// answer's headers and is held to the same target. Safe on a nil receiver.
func (s *sloMetrics) observe(tier string, ttft, e2e time.Duration, streamed bool) {
	if s == nil {
		return
	}
	_ = streamed // both kinds are held to the TTFT target; the label set stays {tier}
	target := s.cfg.Target(tier)
	if ttft > 0 {
		s.ttft.WithLabelValues(tier).Observe(ttft.Seconds())
		if target.TTFT > 0 && ttft > target.TTFT.D() {
			s.violations.WithLabelValues(tier, sloTTFT).Inc()
		}
	}
	if e2e >= 0 {
		s.duration.WithLabelValues(tier).Observe(e2e.Seconds())
		if target.E2E > 0 && e2e > target.E2E.D() {
			s.violations.WithLabelValues(tier, sloE2E).Inc()
		}
	}
}
