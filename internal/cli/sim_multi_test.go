package cli

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
)

func TestStartSimReplicas(t *testing.T) {
	cfg := config.Default().Sim
	zero := 0.0
	cfg.TimeScale = &zero
	cfg.KVEventsEndpoint = "tcp://127.0.0.1:0"
	reps, err := startSimReplicas(cfg, 2, "127.0.0.1:0", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer stopSimReplicas(reps)
	require.Len(t, reps, 2)
	require.NotEqual(t, reps[0].url, reps[1].url)
	require.NotEqual(t, reps[0].srv.KVEventsEndpoint(), reps[1].srv.KVEventsEndpoint())
	for _, r := range reps {
		resp, err := http.Get(r.url + "/health")
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}

	_, err = startSimReplicas(cfg, 0, "127.0.0.1:0", slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "at least 1")
	cfg.KVEventsEndpoint = "ipc:///tmp/strata-kv"
	_, err = startSimReplicas(cfg, 2, "127.0.0.1:0", slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "only tcp:// and inproc://")
}
