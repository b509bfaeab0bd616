package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/gateway"
	"github.com/strata-inference/strata/internal/store"
)

const devKey = "sk-strata-e2e-test-key-0123456789abcdef"

// testStack starts the whole default stack (platform -> gateway -> router -> 3 simulated
// replicas, SQLite in a temp dir) on a random port, with simulated time running at full speed.
type testStack struct {
	*Stack
	base  string
	model string
	admin *gateway.Admin
	db    *store.Store
}

func startStack(t testing.TB, edit func(*config.Config)) *testStack {
	t.Helper()
	t.Setenv(DevKeyEnv, devKey)
	cfg, err := config.Load("", func(c *config.Config) {
		c.DataDir = t.TempDir()
		c.Listen = "127.0.0.1:0"
		zero := 0.0
		c.Sim.TimeScale = &zero
		c.Router.HealthInterval = config.Duration(50 * time.Millisecond)
		// CI machines are small and busy: a late scrape must not make a replica look stale or
		// down, which would (correctly) move traffic and make affinity assertions flaky.
		c.Router.ScrapeTimeout = config.Duration(10 * time.Second)
		c.Router.StaleAfter = config.Duration(time.Minute)
		c.Gateway.AuthCacheTTL = config.Duration(200 * time.Millisecond)
		if edit != nil {
			edit(c)
		}
	})
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	st, err := New(context.Background(), cfg, log)
	require.NoError(t, err)
	t.Cleanup(st.Close)
	require.Equal(t, devKey, st.DevKey, "the first start creates the dev tenant with STRATA_DEV_API_KEY")
	ln, err := net.Listen("tcp", cfg.Listen)
	require.NoError(t, err)
	st.Serve(ln)
	ts := &testStack{Stack: st, base: "http://" + ln.Addr().String(), model: cfg.Sim.ServedModelName, db: st.store}
	secret, err := gateway.LoadOrCreateSecret(cfg.Gateway.KeySecretFile)
	require.NoError(t, err)
	ts.admin = gateway.NewAdmin(st.store, secret)
	require.Eventually(t, func() bool {
		resp, err := http.Get(ts.base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 10*time.Second, 20*time.Millisecond, "the router sees a healthy replica")
	return ts
}

func (ts *testStack) client(key string, opts ...option.RequestOption) *oai.Client {
	c := oai.NewClient(append([]option.RequestOption{option.WithBaseURL(ts.base + "/v1"), option.WithAPIKey(key),
		option.WithMaxRetries(0)}, opts...)...)
	return &c
}

// usage returns the usage record of a request id.
func (ts *testStack) usage(t *testing.T, requestID string) *store.UsageRecord {
	t.Helper()
	recs, err := ts.admin.Usage(context.Background(), "", 100000)
	require.NoError(t, err)
	for i := range recs {
		if recs[i].RequestID == requestID {
			return &recs[i]
		}
	}
	return nil
}

func (ts *testStack) usageCount(t *testing.T) int {
	recs, err := ts.admin.Usage(context.Background(), "", 100000)
	require.NoError(t, err)
	return len(recs)
}

func TestEndToEndOpenAIClient(t *testing.T) {
	ts := startStack(t, nil)
	ctx := context.Background()
	c := ts.client(devKey)

	t.Run("chat non-stream: usage record equals the engine's usage", func(t *testing.T) {
		var raw *http.Response
		resp, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{
			Model:     ts.model,
			Messages:  []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Explain continuous batching in one paragraph.")},
			MaxTokens: oai.Int(24),
		}, option.WithHeader("X-Request-Id", "e2e-chat-1"), option.WithResponseInto(&raw))
		require.NoError(t, err)
		require.NotEmpty(t, resp.Choices[0].Message.Content)
		require.Equal(t, "e2e-chat-1", raw.Header.Get("X-Request-Id"), "the request id is echoed")
		require.Empty(t, raw.Header.Get("x-gateway-destination-endpoint-served"), "replica names do not leak to clients")
		rec := ts.usage(t, "e2e-chat-1")
		require.NotNil(t, rec)
		require.Equal(t, resp.Usage.PromptTokens, rec.PromptTokens)
		require.Equal(t, resp.Usage.CompletionTokens, rec.CompletionTokens)
		require.Equal(t, resp.Usage.PromptTokensDetails.CachedTokens, rec.CachedTokens)
		require.Equal(t, ts.model, rec.Model)
		require.True(t, strings.HasPrefix(rec.Endpoint, "sim-"), rec.Endpoint)
		require.Equal(t, 200, rec.Status)
	})

	t.Run("chat stream with usage", func(t *testing.T) {
		stream := c.Chat.Completions.NewStreaming(ctx, oai.ChatCompletionNewParams{
			Model:         ts.model,
			Messages:      []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Write a haiku about KV caches.")},
			MaxTokens:     oai.Int(20),
			StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
		}, option.WithHeader("X-Request-Id", "e2e-stream-1"))
		var text strings.Builder
		var usage *oai.CompletionUsage
		for stream.Next() {
			ch := stream.Current()
			if len(ch.Choices) > 0 {
				text.WriteString(ch.Choices[0].Delta.Content)
			}
			if ch.Usage.TotalTokens > 0 {
				u := ch.Usage
				usage = &u
			}
		}
		require.NoError(t, stream.Err())
		require.NotEmpty(t, text.String())
		require.NotNil(t, usage, "the client asked for the usage chunk")
		rec := ts.usage(t, "e2e-stream-1")
		require.NotNil(t, rec)
		require.Equal(t, usage.PromptTokens, rec.PromptTokens)
		require.Equal(t, usage.CompletionTokens, rec.CompletionTokens)
		require.Equal(t, usage.PromptTokensDetails.CachedTokens, rec.CachedTokens)
		require.LessOrEqual(t, rec.TTFT, rec.Duration, "TTFT is part of the duration (both are exact to the gateway tests; here simulated time is off)")
	})

	t.Run("chat stream without usage: metered anyway, usage chunk not shown", func(t *testing.T) {
		stream := c.Chat.Completions.NewStreaming(ctx, oai.ChatCompletionNewParams{
			Model:     ts.model,
			Messages:  []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Count to five.")},
			MaxTokens: oai.Int(10),
		}, option.WithHeader("X-Request-Id", "e2e-stream-2"))
		chunks := 0
		for stream.Next() {
			require.Zero(t, stream.Current().Usage.TotalTokens, "no usage chunk unless asked")
			chunks++
		}
		require.NoError(t, stream.Err())
		require.Positive(t, chunks)
		rec := ts.usage(t, "e2e-stream-2")
		require.NotNil(t, rec)
		require.Positive(t, rec.CompletionTokens)
	})

	t.Run("completions", func(t *testing.T) {
		resp, err := c.Completions.New(ctx, oai.CompletionNewParams{
			Model:     oai.CompletionNewParamsModel(ts.model),
			Prompt:    oai.CompletionNewParamsPromptUnion{OfString: oai.String("The capital of France is")},
			MaxTokens: oai.Int(8),
		}, option.WithHeader("X-Request-Id", "e2e-cmpl-1"))
		require.NoError(t, err)
		require.NotEmpty(t, resp.Choices[0].Text)
		rec := ts.usage(t, "e2e-cmpl-1")
		require.NotNil(t, rec)
		require.Equal(t, resp.Usage.PromptTokens, rec.PromptTokens)
		require.Equal(t, resp.Usage.CompletionTokens, rec.CompletionTokens)
	})

	t.Run("models", func(t *testing.T) {
		page, err := c.Models.List(ctx)
		require.NoError(t, err)
		require.Len(t, page.Data, 1)
		require.Equal(t, ts.model, page.Data[0].ID)
	})

	t.Run("responses with previous_response_id", func(t *testing.T) {
		first, err := c.Responses.New(ctx, responses.ResponseNewParams{
			Model: ts.model,
			Input: responses.ResponseNewParamsInputUnion{OfString: oai.String("My name is Ada. Remember it.")},
		})
		require.NoError(t, err)
		require.Equal(t, responses.ResponseStatusCompleted, first.Status)
		require.NotEmpty(t, first.OutputText())
		second, err := c.Responses.New(ctx, responses.ResponseNewParams{
			Model:              ts.model,
			Input:              responses.ResponseNewParamsInputUnion{OfString: oai.String("What is my name?")},
			PreviousResponseID: oai.String(first.ID),
		})
		require.NoError(t, err)
		require.Equal(t, first.ID, second.PreviousResponseID)
		require.Greater(t, second.Usage.InputTokens, first.Usage.InputTokens, "the history is sent along")
		require.Positive(t, second.Usage.InputTokensDetails.CachedTokens, "the conversation's prefix is cached on its replica")
		got, err := c.Responses.Get(ctx, second.ID, responses.ResponseGetParams{})
		require.NoError(t, err)
		require.Equal(t, second.OutputText(), got.OutputText())

		stream := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model:              ts.model,
			Input:              responses.ResponseNewParamsInputUnion{OfString: oai.String("And again?")},
			PreviousResponseID: oai.String(second.ID),
		})
		var deltas strings.Builder
		var done string
		for stream.Next() {
			ev := stream.Current()
			switch ev.Type {
			case "response.output_text.delta":
				deltas.WriteString(ev.Delta)
			case "response.completed":
				done = ev.Response.OutputText()
			}
		}
		require.NoError(t, stream.Err())
		require.NotEmpty(t, done)
		require.Equal(t, done, deltas.String())
	})

	t.Run("401 for a wrong key and a revoked key", func(t *testing.T) {
		params := oai.ChatCompletionNewParams{Model: ts.model, Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")}}
		_, err := ts.client("sk-strata-wrong").Chat.Completions.New(ctx, params)
		requireAPIError(t, err, 401, "invalid_api_key")

		key, k, err := ts.admin.CreateKey(ctx, "dev", "")
		require.NoError(t, err)
		kc := ts.client(key)
		_, err = kc.Chat.Completions.New(ctx, params)
		require.NoError(t, err)
		require.NoError(t, ts.admin.RevokeKey(ctx, k.ID))
		// The CLI revokes through the store; the serving gateway applies it within auth_cache_ttl.
		require.Eventually(t, func() bool {
			_, err = kc.Chat.Completions.New(ctx, params)
			return err != nil
		}, 5*time.Second, 50*time.Millisecond)
		requireAPIError(t, err, 401, "invalid_api_key")
	})

	t.Run("429 after the RPM limit", func(t *testing.T) {
		_, err := ts.admin.CreateTenant(ctx, "tiny", 2, 0, nil)
		require.NoError(t, err)
		key, _, err := ts.admin.CreateKey(ctx, "tiny", "")
		require.NoError(t, err)
		kc := ts.client(key)
		params := oai.ChatCompletionNewParams{Model: ts.model, Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")}, MaxTokens: oai.Int(2)}
		for range 2 {
			_, err := kc.Chat.Completions.New(ctx, params)
			require.NoError(t, err)
		}
		before := ts.usageCount(t)
		_, err = kc.Chat.Completions.New(ctx, params)
		apiErr := requireAPIError(t, err, 429, "rate_limit_exceeded")
		h := apiErr.Response.Header
		require.Equal(t, "2", h.Get("x-ratelimit-limit-requests"))
		require.Equal(t, "0", h.Get("x-ratelimit-remaining-requests"))
		require.NotEmpty(t, h.Get("x-ratelimit-reset-requests"))
		require.NotEmpty(t, h.Get("retry-after"))
		require.Equal(t, before, ts.usageCount(t), "no usage record for a rejected request")
	})

	t.Run("404 for an unknown model", func(t *testing.T) {
		_, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: "no-such-model",
			Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")}})
		requireAPIError(t, err, 404, "model_not_found")
	})
}

func requireAPIError(t *testing.T, err error, status int, code string) *oai.Error {
	t.Helper()
	var apiErr *oai.Error
	require.True(t, errors.As(err, &apiErr), "want an API error, got %v", err)
	require.Equal(t, status, apiErr.StatusCode, apiErr.Error())
	require.Equal(t, code, apiErr.Code)
	return apiErr
}

// Bad input gets the OpenAI envelope with the right status and leaves no usage record.
func TestEndToEndBadInput(t *testing.T) {
	ts := startStack(t, func(c *config.Config) { c.MaxBodyBytes = 64 << 10 })
	post := func(key, path, body string) (*http.Response, map[string]map[string]any) {
		req, err := http.NewRequest(http.MethodPost, ts.base+path, strings.NewReader(body))
		require.NoError(t, err)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var env map[string]map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
		return resp, env
	}
	big := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", 70<<10) + `"}]}`
	for _, tc := range []struct {
		name, key, path, body string
		status                int
		typ, param, code      any
	}{
		{"malformed JSON", devKey, "/v1/chat/completions", `{"model":`, 400, "invalid_request_error", nil, "invalid_json"},
		{"missing messages", devKey, "/v1/chat/completions", `{"model":"` + ts.model + `"}`, 400, "invalid_request_error", "messages", "missing_required_parameter"},
		{"missing prompt", devKey, "/v1/completions", `{"model":"` + ts.model + `"}`, 400, "invalid_request_error", "prompt", "missing_required_parameter"},
		{"unknown model", devKey, "/v1/completions", `{"model":"gpt-9","prompt":"x"}`, 404, "invalid_request_error", "model", "model_not_found"},
		{"body over the limit", devKey, "/v1/chat/completions", big, 413, "invalid_request_error", nil, "request_too_large"},
		{"missing key", "", "/v1/chat/completions", `{"model":"` + ts.model + `","messages":[{"role":"user","content":"hi"}]}`, 401, "invalid_request_error", nil, "invalid_api_key"},
		{"wrong key", "sk-strata-nope", "/v1/chat/completions", `{"model":"` + ts.model + `","messages":[{"role":"user","content":"hi"}]}`, 401, "invalid_request_error", nil, "invalid_api_key"},
		{"missing key on responses", "", "/v1/responses", `{"model":"` + ts.model + `","input":"hi"}`, 401, "invalid_request_error", nil, "invalid_api_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, env := post(tc.key, tc.path, tc.body)
			require.Equal(t, tc.status, resp.StatusCode)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			e := env["error"]
			require.NotNil(t, e, "OpenAI error envelope")
			require.Equal(t, tc.typ, e["type"])
			require.Equal(t, tc.param, e["param"])
			require.Equal(t, tc.code, e["code"])
			require.NotEmpty(t, e["message"])
			require.NotEmpty(t, resp.Header.Get("X-Request-Id"))
		})
	}
	require.Zero(t, ts.usageCount(t), "no usage record for requests rejected before an engine")

	// A forged cross-layer header from outside the chain is dropped at the front door.
	req, _ := http.NewRequest(http.MethodPost, ts.base+"/v1/chat/completions", bytes.NewReader([]byte(`{"model":"`+ts.model+`","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)))
	req.Header.Set("Authorization", "Bearer "+devKey)
	req.Header.Set("X-Request-Id", "forged-1")
	req.Header.Set("x-gateway-destination-endpoint-served", "evil")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.True(t, strings.HasPrefix(ts.usage(t, "forged-1").Endpoint, "sim-"))
}

// The gateway's admin API is served at the front door under /admin/v1 with admin tokens only.
func TestEndToEndAdminAPI(t *testing.T) {
	ts := startStack(t, nil)
	token, _, err := ts.admin.CreateAdminToken(context.Background(), "ops", []string{gateway.ScopeRead})
	require.NoError(t, err)
	get := func(key string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, ts.base+"/admin/v1/tenants", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get(token)
	require.Equal(t, 200, resp.StatusCode, body)
	require.Contains(t, body, `"dev"`)
	require.NotEmpty(t, resp.Header.Get("X-Request-Id"))
	resp, _ = get(devKey)
	require.Equal(t, 401, resp.StatusCode, "a tenant key is not an admin token")
}
