package cli

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runSim runs `strata sim --listen 127.0.0.1:0 --time-scale 0 args...` until the test ends and
// returns replica 0's base URL, read from the "listening" log line.
func runSim(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, append([]string{"sim", "--listen", "127.0.0.1:0", "--time-scale", "0"}, args...), io.Discard, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	urlRE := regexp.MustCompile(`url=(http://[0-9.:]+)`)
	var url string
	require.Eventually(t, func() bool {
		if m := urlRE.FindStringSubmatch(stderr.String()); m != nil {
			url = m[1]
		}
		return url != ""
	}, 30*time.Second, 5*time.Millisecond, "no listening line in %q", stderr.String())
	return url
}

func postCompletion(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"hi","max_tokens":2}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestSimFaultFlags: the --fault-* and --cold-start flags of `strata sim` reach the replicas,
// and out-of-range values are refused by the config's validation.
func TestSimFaultFlags(t *testing.T) {
	err := Run(context.Background(), []string{"sim", "--fault-error-rate", "2"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "sim.faults.error_rate: must be in [0, 1], got 2")
	err = Run(context.Background(), []string{"sim", "--fault-hang-rate", "-1"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "sim.faults.hang_rate: must be in [0, 1], got -1")
	err = Run(context.Background(), []string{"sim", "--fault-reset-after", "-1"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "sim.faults.reset_after: must not be negative")
	err = Run(context.Background(), []string{"sim", "--cold-start", "-1s"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "sim.faults.cold_start: must not be negative")

	t.Run("cold-start", func(t *testing.T) {
		url := runSim(t, "--cold-start", "1h")
		resp, err := http.Get(url + "/health")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		code, body := postCompletion(t, url)
		require.Equal(t, http.StatusServiceUnavailable, code)
		require.Contains(t, body, "The engine is starting.")
	})
	t.Run("error-rate", func(t *testing.T) {
		url := runSim(t, "--fault-error-rate", "1")
		resp, err := http.Get(url + "/health")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		code, body := postCompletion(t, url)
		require.Contains(t, []int{http.StatusInternalServerError, http.StatusServiceUnavailable}, code, body)
		require.Contains(t, body, `"code":`)
	})
	t.Run("off", func(t *testing.T) {
		code, body := postCompletion(t, runSim(t))
		require.Equal(t, http.StatusOK, code, body)
	})
}
