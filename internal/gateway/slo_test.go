package gateway

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

func histCount(t *testing.T, reg *prometheus.Registry, name, tier string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tier" && l.GetValue() == tier {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// TestSLOObserve: per-tier targets (a tier's own, else the default), violations counted per SLO,
// a missing TTFT not observed, and a nil receiver a no-op.
func TestSLOObserve(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := config.SLO{Default: config.SLOTarget{TTFT: config.Duration(time.Second), E2E: config.Duration(10 * time.Second)},
		Tiers: map[string]config.SLOTarget{"gold": {TTFT: config.Duration(200 * time.Millisecond)}}}
	s, err := newSLOMetrics(reg, cfg, []string{"", "gold"})
	require.NoError(t, err)
	for _, tc := range []struct {
		tier      string
		ttft, e2e time.Duration
	}{
		{"gold", 100 * time.Millisecond, time.Second},      // within both
		{"gold", 300 * time.Millisecond, 11 * time.Second}, // gold's own TTFT target, the default e2e
		{"", 300 * time.Millisecond, time.Second},          // within the default
		{"", 2 * time.Second, 2 * time.Second},             // TTFT violation
		{"", 0, 20 * time.Second},                          // no first token: e2e only
	} {
		s.observe(tc.tier, tc.ttft, tc.e2e, true)
	}
	for _, tc := range []struct {
		tier, slo string
		want      float64
	}{{"gold", sloTTFT, 1}, {"gold", sloE2E, 1}, {"", sloTTFT, 1}, {"", sloE2E, 1}} {
		require.Equal(t, tc.want, testutil.ToFloat64(s.violations.WithLabelValues(tc.tier, tc.slo)), tc.tier+"/"+tc.slo)
	}
	require.EqualValues(t, 2, histCount(t, reg, "strata_gateway_ttft_seconds", ""), "the request without a first token is not a TTFT sample")
	require.EqualValues(t, 3, histCount(t, reg, "strata_gateway_request_duration_seconds", ""))
	require.EqualValues(t, 2, histCount(t, reg, "strata_gateway_ttft_seconds", "gold"))

	var nilSLO *sloMetrics
	nilSLO.observe("x", time.Second, time.Second, false) // no panic

	_, err = newSLOMetrics(reg, cfg, nil)
	require.Error(t, err, "registering twice on one registry fails")
}

// TestSLOEndToEnd: a request through the gateway is observed once in its tier's histograms (by the
// metering code's call, contract C6) and a TTFT over the tier's target counts a violation.
func TestSLOEndToEnd(t *testing.T) {
	cfg := config.Default().Gateway
	cfg.Tiers = map[string]config.Policy{"gold": {}}
	cfg.DefaultTier = "gold"
	cfg.SLO.Tiers = map[string]config.SLOTarget{"gold": {TTFT: config.Duration(time.Millisecond)}} // the fake engine takes 7 ms to its first token
	h := newHarnessCfg(t, cfg, 0, 0)
	require.Equal(t, http.StatusOK, h.do(http.MethodPost, openai.PathChatCompletions, simpleChat).Code)
	require.Equal(t, http.StatusOK, h.do(http.MethodPost, openai.PathChatCompletions, `{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`).Code)
	require.EqualValues(t, 2, histCount(t, h.reg, "strata_gateway_request_duration_seconds", "gold"))
	require.EqualValues(t, 2, histCount(t, h.reg, "strata_gateway_ttft_seconds", "gold"))
	require.Equal(t, 2.0, testutil.ToFloat64(h.gw.slo.violations.WithLabelValues("gold", sloTTFT)))
	require.Equal(t, 0.0, testutil.ToFloat64(h.gw.slo.violations.WithLabelValues("gold", sloE2E)))
}
