package stack

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
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
		Model:         lower.Sim.Model,
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
