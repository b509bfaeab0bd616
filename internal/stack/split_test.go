package stack

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/gateway"
)

// The same layers run as separate processes over HTTP: here router+engines in one stack and
// platform+gateway in another whose --upstream is the first.
func TestSplitLayersOverHTTP(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	zero := 0.0
	lower, err := config.Load("", func(c *config.Config) {
		c.DataDir = t.TempDir()
		c.Layers = []string{config.LayerRouter, config.LayerEngine}
		c.Sim.TimeScale = &zero
		c.Sim.Replicas = 2
	})
	require.NoError(t, err)
	down, err := New(context.Background(), lower, quiet)
	require.NoError(t, err)
	t.Cleanup(down.Close)
	lnDown, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	down.Serve(lnDown)
	require.Eventually(t, down.router.Ready, 10*time.Second, 20*time.Millisecond)

	t.Setenv(DevKeyEnv, devKey)
	upper, err := config.Load("", func(c *config.Config) {
		c.DataDir = t.TempDir()
		c.Layers = []string{config.LayerPlatform, config.LayerGateway}
		c.Upstream = "http://" + lnDown.Addr().String()
	})
	require.NoError(t, err)
	up, err := New(context.Background(), upper, quiet)
	require.NoError(t, err)
	t.Cleanup(up.Close)
	lnUp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	up.Serve(lnUp)

	c := oai.NewClient(option.WithBaseURL("http://"+lnUp.Addr().String()+"/v1"), option.WithAPIKey(devKey), option.WithMaxRetries(0))
	stream := c.Chat.Completions.NewStreaming(context.Background(), oai.ChatCompletionNewParams{
		Model:         lower.Sim.ServedModelName,
		Messages:      []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hello across processes")},
		MaxTokens:     oai.Int(8),
		StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
	}, option.WithHeader("X-Request-Id", "split-1"))
	var completion int64
	for stream.Next() {
		if u := stream.Current().Usage; u.TotalTokens > 0 {
			completion = u.CompletionTokens
		}
	}
	require.NoError(t, stream.Err())
	require.Positive(t, completion)

	secret, err := gateway.LoadOrCreateSecret(upper.Gateway.KeySecretFile)
	require.NoError(t, err)
	recs, err := gateway.NewAdmin(up.store, secret).Usage(context.Background(), "", 10)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, "split-1", recs[0].RequestID)
	require.Equal(t, completion, recs[0].CompletionTokens)
	require.Contains(t, recs[0].Endpoint, "sim-", "the router's served-endpoint header crossed the process boundary")
}

// `strata serve --config FILE` with engines: the same stack fronts external OpenAI-compatible
// servers (here two simulated replicas on their own listeners, standing in for vLLM), with the
// served models discovered from each server's /v1/models.
func TestExternalEnginesFromConfig(t *testing.T) {
	zero := 0.0
	simCfg := config.Default().Sim
	simCfg.TimeScale = &zero
	simCfg.ServedModelName = "external-model"
	var engines []config.Engine
	for _, name := range []string{"vllm-a", "vllm-b"} {
		srv, err := sim.New(simCfg, name, clock.RealClock{}, nil)
		require.NoError(t, err)
		hs := httptest.NewServer(srv)
		t.Cleanup(func() { hs.Close(); srv.Close() })
		engines = append(engines, config.Engine{Name: name, URL: hs.URL, GPU: "A100-80GB"})
	}
	ts := startStack(t, func(c *config.Config) { c.Engines = engines })
	require.Empty(t, ts.Replicas, "no simulated replicas when engines are configured")
	require.NotContains(t, ts.cfg.Layers, config.LayerEngine)

	c := ts.client(devKey)
	resp, err := c.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{
		Model:    "external-model",
		Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hello, external engine")},
	}, option.WithHeader("X-Request-Id", "ext-1"))
	require.NoError(t, err)
	require.Equal(t, "external-model", resp.Model)
	rec := ts.usage(t, "ext-1")
	require.NotNil(t, rec)
	require.Contains(t, []string{"vllm-a", "vllm-b"}, rec.Endpoint)
	require.Equal(t, "A100-80GB", rec.GPU, "the serving GPU is recorded with usage")
}
