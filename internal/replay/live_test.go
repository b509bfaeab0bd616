package replay

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
)

// startSims starts n simulator replicas over HTTP (time_scale 0.01: a hundred times faster than
// the modelled GPU) and returns their base URLs.
func startSims(t *testing.T, n int) []string {
	t.Helper()
	cfg := config.Default().Sim
	scale := 0.01
	cfg.TimeScale = &scale
	cfg.MaxModelLen = 32768
	var urls []string
	for i := range n {
		s, err := sim.New(cfg, "sim-"+strconv.Itoa(i), clock.RealClock{}, nil)
		require.NoError(t, err)
		hs := httptest.NewServer(s)
		t.Cleanup(func() {
			hs.Close()
			s.Close()
		})
		urls = append(urls, hs.URL)
	}
	return urls
}

// A live replay through the real router: every request completes on the sim replicas, a request
// sharing a prefix with an earlier one on the same replica is served from its cache, and the
// measures come from the streams.
func TestRunLive(t *testing.T) {
	rows, err := ReadTrace(strings.NewReader(sample), FormatMooncake, 0)
	require.NoError(t, err)
	urls := startSims(t, 2)
	epc, err := PolicyConfig("default")
	require.NoError(t, err)
	res, err := RunLive(context.Background(), rows, "default", epc, LiveOptions{Endpoints: urls, RateScale: 2})
	require.NoError(t, err)
	require.Equal(t, 3, res.Completed)
	require.Zero(t, res.Failed)
	require.Equal(t, 3, res.PerReplica[0]+res.PerReplica[1])
	require.InDelta(t, 1024.0/2900, res.IdealHitRatio, 1e-9)
	require.InDelta(t, 1024.0/2900, res.HitRatio, 1e-9, "the prefix-aware default sends the second request where its prefix is")
	require.Greater(t, res.TTFT.P50, 0.0)
	require.Greater(t, res.ITL.P50, 0.0)
	require.Greater(t, res.OutputTokensPerSec, 0.0)

	_, err = RunLive(context.Background(), rows, "x", epc, LiveOptions{})
	require.ErrorContains(t, err, "endpoints: at least one is required")
	_, err = RunLive(context.Background(), rows, "x", epc, LiveOptions{Endpoints: []string{"ftp://x"}})
	require.ErrorContains(t, err, "not an http(s) URL")
}
