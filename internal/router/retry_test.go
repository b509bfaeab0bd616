package router

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

// vLLM's 503, as the simulator's fault injection and an overloaded vLLM answer it.
const vllm503 = `{"object":"error","message":"The server is temporarily unable to handle the request.","type":"ServiceUnavailableError","param":null,"code":503}`

func answer503(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, vllm503)
}

// A 502/503 answer before any body byte was relayed goes to another endpoint; when every attempt
// gets one, the client receives the last engine answer as it is.
func TestRetryOnUnavailable(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	b := newFakeEngine(t, "b", "m")
	c := newFakeEngine(t, "c", "m")
	a.handler = answer503
	tr := newTestRouter(t, testConfig(), engineConfigs(a, b, c))
	tr.markUp("a", 0)
	tr.markUp("b", 3)
	tr.markUp("c", 6)
	w := tr.post(openai.PathChatCompletions, chatBody("m", "hello"))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "b", w.Header().Get(openai.HeaderEndpointServed))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.retries))
	require.True(t, tr.ep("a").isHealthy(), "an engine's 503 does not mark it down")

	b.handler, c.handler = answer503, answer503
	w = tr.post(openai.PathChatCompletions, chatBody("m", "hello"))
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, vllm503, w.Body.String(), "the last engine answer, unchanged")
	require.Equal(t, 2+3, a.received()+b.received()+c.received(), "3 attempts: max_attempts")
	require.Equal(t, 3.0, testutil.ToFloat64(tr.metrics.retries))
	for _, n := range []string{"a", "b", "c"} {
		require.Zero(t, tr.snapshotOne(tr.ep(n), tr.clk.Now()).InFlight, n)
	}
}

// A stream cut after its first chunks reached the client is never retried: the client keeps what
// it got, and no other endpoint sees the request.
func TestMidStreamResetNotRetried(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	b := newFakeEngine(t, "b", "m")
	a.handler = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n")
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
	tr := newTestRouter(t, testConfig(), engineConfigs(a, b))
	tr.markUp("a", 0)
	tr.markUp("b", 5)
	resp, err := tr.srv.Client().Post(tr.srv.URL+openai.PathChatCompletions, "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	require.NoError(t, err)
	got, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(got), `"Hel"`)
	require.NotContains(t, string(got), "[DONE]")
	require.Zero(t, b.received())
	require.Zero(t, testutil.ToFloat64(tr.metrics.retries))
	require.Eventually(t, func() bool { return tr.snapshotOne(tr.ep("a"), tr.clk.Now()).InFlight == 0 }, 5*time.Second, time.Millisecond)
}

// An engine that never answers holds the request only until the client goes away; nothing leaks
// (goleak in TestMain) and the in-flight count returns to zero.
func TestHangingEngineClientCancels(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	a.handler = func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	tr := newTestRouter(t, testConfig(), engineConfigs(a))
	tr.markUp("a", 0)
	ctx, cancel := context.WithCancel(context.Background())
	w, done := tr.postAsync(ctx, "", "", "anyone there?")
	require.Eventually(t, func() bool { return a.received() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	<-done
	require.Equal(t, 499, w.Code)
	require.Zero(t, tr.snapshotOne(tr.ep("a"), tr.clk.Now()).InFlight)
	require.Zero(t, testutil.ToFloat64(tr.metrics.retries), "a gone client is not retried")
}

// Every endpoint down: a clear 503 in the OpenAI envelope at once, whether the router already
// knows (failed health checks) or finds out (refused connections), never a hang.
func TestAllEndpointsDown(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		var engines []config.Engine
		for i := range 3 {
			engines = append(engines, config.Engine{Name: fmt.Sprint("e", i), URL: closedAddr(t), Models: []string{"m"}})
		}
		tr := newTestRouter(t, testConfig(), engines)
		for _, e := range engines {
			tr.markUp(e.Name, 0)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := httptest.NewRequest(http.MethodPost, openai.PathChatCompletions, strings.NewReader(chatBody("m", "hi"))).WithContext(ctx)
		w := httptest.NewRecorder()
		tr.ServeHTTP(w, req)
		require.NoError(t, ctx.Err(), "answered before the deadline")
		require.Equal(t, http.StatusServiceUnavailable, w.Code)
		e := errorOf(t, w.Body.Bytes())
		require.Equal(t, openai.CodeNoCapacity, e.Code)
		require.Equal(t, "application/json", w.Header().Get("Content-Type"))
		require.False(t, tr.Ready(), "every refusing endpoint is marked down")
		// Now the router knows: the next request is refused without dialling.
		w = tr.post(openai.PathChatCompletions, chatBody("m", "hi"))
		require.Equal(t, http.StatusServiceUnavailable, w.Code)
	})
	t.Run("health checks failing", func(t *testing.T) {
		a := newFakeEngine(t, "a", "m")
		b := newFakeEngine(t, "b", "m")
		a.health.Store(http.StatusServiceUnavailable)
		b.health.Store(http.StatusInternalServerError)
		cfg := testConfig()
		cfg.FlowControl = flowConfig().FlowControl // queueing on: down endpoints must not queue
		tr := newTestRouter(t, cfg, []config.Engine{{Name: "a", URL: a.srv.URL, Models: []string{"m"}}, {Name: "b", URL: b.srv.URL, Models: []string{"m"}}})
		tr.run(t)
		require.Never(t, tr.Ready, 50*time.Millisecond, time.Millisecond)
		w := tr.post(openai.PathChatCompletions, chatBody("m", "hi"))
		require.Equal(t, http.StatusServiceUnavailable, w.Code)
		require.Equal(t, openai.CodeNoCapacity, errorOf(t, w.Body.Bytes()).Code)
		require.Zero(t, a.received()+b.received())
		require.Zero(t, tr.flow.length())
	})
}
