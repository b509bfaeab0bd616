package vllm_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/engine/vllm"
)

// The client against a simulated replica: tokenize, LoRA load/unload, telemetry.
func TestClientAgainstSim(t *testing.T) {
	cfg := config.Default().Sim
	zero := 0.0
	cfg.TimeScale = &zero
	srv, err := sim.New(cfg, "r0", clock.RealClock{}, nil)
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	c, err := vllm.NewClient(hs.URL, hs.Client(), nil, "r0")
	require.NoError(t, err)
	ctx := context.Background()

	toks, err := c.Tokenize(ctx, cfg.Model, "Hello world", true)
	require.NoError(t, err)
	require.Equal(t, []int{128000, 9906, 1917}, toks)

	require.NoError(t, c.LoadLoRA(ctx, "sql", "/adapters/sql"))
	var apiErr *vllm.APIError
	err = c.LoadLoRA(ctx, "sql", "/adapters/sql")
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.Status)
	require.Contains(t, apiErr.Message, "already been loaded")
	require.NoError(t, c.UnloadLoRA(ctx, "sql"))
	require.ErrorIs(t, c.UnloadLoRA(ctx, "sql"), vllm.ErrAdapterNotFound)

	tel, err := c.Telemetry(ctx)
	require.NoError(t, err)
	require.Equal(t, &vllm.LoRAInfo{MaxLoRA: 1}, tel.LoRA)
	require.Equal(t, 16, tel.BlockSize)
}

func TestClientCountsMalformedMetrics(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("vllm:num_requests_running{ 1\n"))
	}))
	defer hs.Close()
	reg := prometheus.NewRegistry()
	c, err := vllm.NewClient(hs.URL, nil, reg, "bad")
	require.NoError(t, err)
	_, err = c.Telemetry(context.Background())
	require.True(t, errors.Is(err, vllm.ErrMalformed), err)
	require.Equal(t, 1.0, testutil.ToFloat64(findCounter(t, reg)))
}

func findCounter(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, mfs, 1)
	require.Equal(t, "strata_engine_vllm_metrics_parse_errors_total", mfs[0].GetName())
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return mfs[0].GetMetric()[0].GetCounter().GetValue() })
}
