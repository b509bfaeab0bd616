package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

func TestAuth(t *testing.T) {
	h := newHarness(t, 0, 0)
	wrong := "sk-strata-" + strings.Repeat("Z", 43)
	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
		body   string
	}{
		{"bearer", nil, 200, ""},
		{"bearer scheme in lower case", []string{"Authorization", "bearer " + h.key}, 200, ""},
		{"x-api-key", []string{"Authorization", "", HeaderAPIKey, h.key}, 200, ""},
		{"missing", []string{"Authorization", ""}, 401, errorBody(errNoKey)},
		{"empty bearer", []string{"Authorization", "Bearer "}, 401, errorBody(errNoKey)},
		{"wrong bearer", []string{"Authorization", "Bearer " + wrong}, 401, errorBody(errBadKey)},
		{"wrong x-api-key", []string{"Authorization", "", HeaderAPIKey, wrong}, 401, errorBody(errBadKey)},
		{"basic scheme", []string{"Authorization", "Basic " + h.key}, 401, errorBody(errBadKey)},
		{"key with a space", []string{"Authorization", "Bearer " + h.key + " x"}, 401, errorBody(errBadKey)},
		{"right x-api-key under a wrong bearer", []string{"Authorization", "Bearer " + wrong, HeaderAPIKey, h.key}, 401, errorBody(errBadKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.eng.seen())
			w := h.do("POST", openai.PathChatCompletions, simpleChat, tc.hdr...)
			require.Equal(t, tc.status, w.Code, w.Body.String())
			if tc.status != 200 {
				require.JSONEq(t, tc.body, w.Body.String())
				require.NotContains(t, w.Body.String(), wrong)
				require.NotContains(t, w.Body.String(), h.key)
				require.Len(t, h.eng.seen(), before, "a refused request must not reach the engine")
				return
			}
			seen := h.eng.seen()
			require.Len(t, seen, before+1)
			got := seen[len(seen)-1].header
			require.Empty(t, got.Get("Authorization"), "the key must not travel below the gateway")
			require.Empty(t, got.Get(HeaderAPIKey))
		})
	}
	require.Len(t, h.usage(), 3, "one record per request that reached the engine, none for 401s")
	require.Equal(t, 5.0, testutil.ToFloat64(h.gw.m.authFailures.WithLabelValues("invalid")))
	require.Equal(t, 2.0, testutil.ToFloat64(h.gw.m.authFailures.WithLabelValues("missing")))
}

func TestRevokedKey(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat).Code)
	h.clk.Step(time.Second)
	require.NoError(t, h.admin.RevokeKey(ctx, h.keyRec.ID))
	// A running gateway learns of the revocation within AuthCacheTTL.
	h.clk.Step(AuthCacheTTL)
	w := h.do("POST", openai.PathChatCompletions, simpleChat)
	require.Equal(t, 401, w.Code)
	require.JSONEq(t, errorBody(errBadKey), w.Body.String())
	w = h.do("GET", openai.PathModels, "")
	require.Equal(t, 401, w.Code)
	require.Equal(t, 2.0, testutil.ToFloat64(h.gw.m.authFailures.WithLabelValues("revoked")))
	require.Len(t, h.usage(), 1)
}

func TestUnknownPath(t *testing.T) {
	h := newHarness(t, 0, 0)
	for _, tc := range []struct{ method, path string }{
		{"GET", openai.PathChatCompletions},
		{"POST", "/v1/load_lora_adapter"},
		{"GET", "/metrics"},
	} {
		w := h.do(tc.method, tc.path, "", "Authorization", "")
		require.Equal(t, 401, w.Code, "unauthenticated callers learn nothing about paths")
		w = h.do(tc.method, tc.path, "")
		require.Equal(t, 404, w.Code)
		require.JSONEq(t, errorBody(openai.NotFound("Invalid URL (%s %s)", tc.method, tc.path)), w.Body.String())
	}
	require.Empty(t, h.eng.seen())
}

func TestAllowlist(t *testing.T) {
	h := newHarness(t, 0, 0, "m1")
	w := h.do("POST", openai.PathChatCompletions, `{"model":"m2","messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, 404, w.Code)
	require.JSONEq(t, errorBody(openai.ModelNotFound("m2")), w.Body.String(), "same answer as a model that does not exist")
	require.Empty(t, h.eng.seen())
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat).Code)

	w = h.do("GET", openai.PathModels, "")
	require.Equal(t, 200, w.Code)
	var list openai.ModelList
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &list))
	require.Equal(t, "list", list.Object)
	require.Len(t, list.Data, 1)
	require.Equal(t, openai.Model{ID: "m1", Object: "model", Created: 1700000000, OwnedBy: "vllm", MaxModelLen: 8192}, list.Data[0])
	require.Empty(t, w.Header().Get(openai.HeaderEndpointServed))

	w = h.do("GET", openai.PathModels+"/m1", "")
	require.Equal(t, 200, w.Code)
	require.JSONEq(t, `{"id":"m1","object":"model","created":1700000000,"owned_by":"vllm","max_model_len":8192}`, w.Body.String())
	w = h.do("GET", openai.PathModels+"/m2", "")
	require.Equal(t, 404, w.Code)
	require.JSONEq(t, errorBody(openai.ModelNotFound("m2")), w.Body.String())

	// Without an allowlist the engine's list passes through byte for byte.
	ctx := context.Background()
	_, err := h.admin.CreateTenant(ctx, "open", 0, 0, nil)
	require.NoError(t, err)
	key, _, err := h.admin.CreateKey(ctx, "open", "")
	require.NoError(t, err)
	w = h.do("GET", openai.PathModels, "", "Authorization", "Bearer "+key)
	require.Equal(t, 200, w.Code)
	require.Contains(t, w.Body.String(), `"id":"m2"`)
	require.Len(t, h.usage(), 1, "model lists are not metered")
}

func TestRequestsPerMinute(t *testing.T) {
	h := newHarness(t, 2, 0)
	w := h.do("POST", openai.PathChatCompletions, simpleChat)
	require.Equal(t, 200, w.Code)
	require.Equal(t, "2", w.Header().Get(openai.HeaderLimitRequests))
	require.Equal(t, "1", w.Header().Get(openai.HeaderRemainingRequests))
	require.Equal(t, "30s", w.Header().Get(openai.HeaderResetRequests))
	require.Empty(t, w.Header().Get(openai.HeaderLimitTokens), "an unlimited TPM sends no token headers")
	h.clk.SetTime(t0) // the engine's steps do not count here: both requests at t0
	w = h.do("POST", openai.PathChatCompletions, simpleChat)
	require.Equal(t, 200, w.Code)
	require.Equal(t, "0", w.Header().Get(openai.HeaderRemainingRequests))
	require.Equal(t, "1m0s", w.Header().Get(openai.HeaderResetRequests))

	h.clk.SetTime(t0)
	w = h.do("POST", openai.PathChatCompletions, simpleChat)
	require.Equal(t, 429, w.Code)
	require.JSONEq(t, `{"error":{"message":"Rate limit reached for m1 on requests per min (RPM): Limit 2, Used 2, Requested 1. Please try again in 30s.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`, w.Body.String())
	require.Equal(t, "30", w.Header().Get(openai.HeaderRetryAfter))
	require.Equal(t, "2", w.Header().Get(openai.HeaderLimitRequests))
	require.Equal(t, "0", w.Header().Get(openai.HeaderRemainingRequests))
	require.Equal(t, "1m0s", w.Header().Get(openai.HeaderResetRequests))
	require.Equal(t, 1.0, testutil.ToFloat64(h.gw.m.rateLimited.WithLabelValues("requests")))
	require.Len(t, h.eng.seen(), 2)

	h.clk.SetTime(t0.Add(30 * time.Second))
	w = h.do("POST", openai.PathChatCompletions, simpleChat)
	require.Equal(t, 200, w.Code)
	require.Len(t, h.usage(), 3)
}

func TestTokensPerMinuteSettle(t *testing.T) {
	h := newHarness(t, 0, 1000)
	body := chatBody("m1", 100, 500, "") // charged 100 + 500 at admission
	h.eng.set(func(e *fakeEngine) { e.usage = openai.Usage{PromptTokens: 90, CompletionTokens: 10, TotalTokens: 100} })
	w := h.do("POST", openai.PathChatCompletions, body)
	require.Equal(t, 200, w.Code)
	require.Equal(t, "1000", w.Header().Get(openai.HeaderLimitTokens))
	require.Equal(t, "400", w.Header().Get(openai.HeaderRemainingTokens))
	require.Equal(t, "36s", w.Header().Get(openai.HeaderResetTokens))

	// Settled to the 100 tokens used: the same request fits again (without the settlement
	// 600 + 600 > 1000 would be refused).
	h.clk.SetTime(t0)
	h.eng.set(func(e *fakeEngine) {
		e.usage = openai.Usage{PromptTokens: 800, CompletionTokens: 100, TotalTokens: 900}
	})
	w = h.do("POST", openai.PathChatCompletions, body)
	require.Equal(t, 200, w.Code)
	require.Equal(t, "300", w.Header().Get(openai.HeaderRemainingTokens))
	require.Equal(t, "42s", w.Header().Get(openai.HeaderResetTokens))

	// Settled to 900 (an overrun of 300): 100 + 900 spent, so the next 600 waits 36s.
	h.clk.SetTime(t0)
	w = h.do("POST", openai.PathChatCompletions, body)
	require.Equal(t, 429, w.Code)
	require.JSONEq(t, `{"error":{"message":"Rate limit reached for m1 on tokens per min (TPM): Limit 1000, Used 1000, Requested 600. Please try again in 36s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`, w.Body.String())
	require.Equal(t, "36", w.Header().Get(openai.HeaderRetryAfter))
	require.Equal(t, "0", w.Header().Get(openai.HeaderRemainingTokens))
	require.Equal(t, "1m0s", w.Header().Get(openai.HeaderResetTokens))
	require.Equal(t, 1.0, testutil.ToFloat64(h.gw.m.rateLimited.WithLabelValues("tokens")))

	// A request whose own limit exceeds the TPM can never run: refused without a retry.
	h.clk.SetTime(t0.Add(time.Hour))
	w = h.do("POST", openai.PathChatCompletions, chatBody("m1", 10, 2000, ""))
	require.Equal(t, 429, w.Code)
	require.JSONEq(t, `{"error":{"message":"Request too large for m1 on tokens per min (TPM): Limit 1000, Requested 2010. The input or output tokens must be reduced in order to run successfully.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`, w.Body.String())
	require.Empty(t, w.Header().Get(openai.HeaderRetryAfter))
	require.Equal(t, "1000", w.Header().Get(openai.HeaderRemainingTokens))
	// Without max_tokens the default estimate is capped at the limit instead.
	h.eng.set(func(e *fakeEngine) { e.usage = openai.Usage{PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15} })
	w = h.do("POST", openai.PathChatCompletions, chatBody("m1", 900, 0, ""))
	require.Equal(t, 200, w.Code, w.Body.String())
	require.Equal(t, "0", w.Header().Get(openai.HeaderRemainingTokens))
	require.Len(t, h.usage(), 3)
}

func TestUsageNonStream(t *testing.T) {
	for _, tc := range []struct {
		name, path, body string
		usage            openai.Usage
	}{
		{"chat", openai.PathChatCompletions, simpleChat,
			openai.Usage{PromptTokens: 1234, CompletionTokens: 56, TotalTokens: 1290, PromptTokensDetails: &openai.PromptTokensDetails{CachedTokens: 1024}}},
		{"completions", openai.PathCompletions, `{"model":"m1","prompt":"once upon","max_tokens":8}`,
			openai.Usage{PromptTokens: 3, CompletionTokens: 8, TotalTokens: 11}},
		{"embeddings", openai.PathEmbeddings, `{"model":"m1","input":["a","b"]}`,
			openai.Usage{PromptTokens: 2, TotalTokens: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 100, 100000)
			h.eng.set(func(e *fakeEngine) { e.usage = tc.usage })
			w := h.do("POST", tc.path, tc.body, openai.HeaderRequestID, "req-"+tc.name)
			require.Equal(t, 200, w.Code)
			require.Equal(t, string(vllmBody(tc.path, "m1", tc.usage)), w.Body.String(), "the answer is the engine's, byte for byte")
			require.Empty(t, w.Header().Get(openai.HeaderEndpointServed), "the replica's name stays inside")
			require.Equal(t, "req-"+tc.name, w.Header().Get(openai.HeaderRequestID))
			require.NotEmpty(t, w.Header().Get(openai.HeaderRemainingRequests))

			recs := h.usage()
			require.Equal(t, []store.UsageRecord{{
				RequestID: "req-" + tc.name, TenantID: h.tenant.ID, KeyID: h.keyRec.ID, Model: "m1",
				Endpoint: "sim-1", GPU: "H100-SXM", PromptTokens: int64(tc.usage.PromptTokens),
				CachedTokens: int64(tc.usage.CachedTokens()), CompletionTokens: int64(tc.usage.CompletionTokens),
				TTFT: 7 * time.Millisecond, Duration: 12 * time.Millisecond, Status: 200, Source: store.UsageEngine, BilledReason: store.BilledComplete,
				CreatedAt: t0.Add(12 * time.Millisecond),
			}}, recs)
			require.Equal(t, float64(tc.usage.PromptTokens), testutil.ToFloat64(h.gw.m.tokens.WithLabelValues("prompt")))
			require.Equal(t, float64(tc.usage.CachedTokens()), testutil.ToFloat64(h.gw.m.tokens.WithLabelValues("cached")))
			require.Equal(t, float64(tc.usage.CompletionTokens), testutil.ToFloat64(h.gw.m.tokens.WithLabelValues("completion")))
		})
	}
}

func TestUsageStream(t *testing.T) {
	u := openai.Usage{PromptTokens: 517, CompletionTokens: 3, TotalTokens: 520, PromptTokensDetails: &openai.PromptTokensDetails{CachedTokens: 512}}
	for _, tc := range []struct {
		name, path, body string
		clientWantsUsage bool
		clientChunks     bool
	}{
		{"chat without include_usage", openai.PathChatCompletions,
			`{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}],"temperature":0.5}`, false, false},
		{"chat with include_usage", openai.PathChatCompletions,
			`{"model":"m1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, true, false},
		{"chat with continuous usage", openai.PathChatCompletions,
			`{"model":"m1","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true},"messages":[{"role":"user","content":"hi"}]}`, true, true},
		{"chat with include_usage false", openai.PathChatCompletions,
			`{"stream_options":{"include_usage":false,"continuous_usage_stats":true},"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}`, false, false},
		{"completions without include_usage", openai.PathCompletions,
			`{"model":"m1","prompt":"once","stream":true,"max_tokens":3}`, false, false},
		{"completions with include_usage", openai.PathCompletions,
			`{"model":"m1","prompt":"once","stream":true,"max_tokens":3,"stream_options":{"include_usage":true}}`, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 0, 0)
			h.eng.set(func(e *fakeEngine) { e.usage, e.pause = u, true })
			w := h.do("POST", tc.path, tc.body, openai.HeaderRequestID, "req-s")
			require.Equal(t, 200, w.Code)
			require.Equal(t, "text/event-stream", w.Header().Get("Content-Type"))
			require.Empty(t, w.Header().Get(openai.HeaderEndpointServed))

			// The engine was asked for usage whatever the client asked, with every other field kept.
			seen := h.eng.seen()
			require.Len(t, seen, 1)
			var sent, orig map[string]any
			require.NoError(t, json.Unmarshal(seen[0].body, &sent))
			require.NoError(t, json.Unmarshal([]byte(tc.body), &orig))
			require.Equal(t, map[string]any{"include_usage": true, "continuous_usage_stats": true}, sent["stream_options"])
			delete(sent, "stream_options")
			delete(orig, "stream_options")
			require.Equal(t, orig, sent)

			engineStream := h.eng.stream("req-s")
			require.Contains(t, string(engineStream), `"choices":[],"usage":`)
			require.Equal(t, 4, strings.Count(string(engineStream), `"usage":{"prompt_tokens":517,`), "usage on every chunk and the final usage chunk")
			require.Equal(t, fakeStreamFor(tc.path, "m1", u, tc.clientWantsUsage, tc.clientChunks), w.Body.String(),
				"byte-identical to the engine's stream for the client's own request")
			require.True(t, strings.HasSuffix(w.Body.String(), "data: [DONE]\n\n"))

			require.Equal(t, []store.UsageRecord{{
				RequestID: "req-s", TenantID: h.tenant.ID, KeyID: h.keyRec.ID, Model: "m1", Endpoint: "sim-1", GPU: "H100-SXM",
				PromptTokens: 517, CachedTokens: 512, CompletionTokens: 3, TTFT: 7 * time.Millisecond, Duration: 12 * time.Millisecond,
				Status: 200, Stream: true, Source: store.UsageEngine, BilledReason: store.BilledComplete, CreatedAt: t0.Add(12 * time.Millisecond),
			}}, h.usage())
		})
	}
}

func TestStreamWithoutUsageIsEstimated(t *testing.T) {
	prompt := `{"model":"m1","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("x", 33) + `"}]}` // 40 bytes of prompt text: 10 tokens
	t.Run("engine stops early", func(t *testing.T) {
		h := newHarness(t, 0, 0)
		h.eng.set(func(e *fakeEngine) { e.mode, e.noChunks = "cut", true })
		w := h.do("POST", openai.PathChatCompletions, prompt, openai.HeaderRequestID, "req-cut")
		require.Equal(t, 200, w.Code)
		require.Equal(t, string(h.eng.stream("req-cut")), w.Body.String())
		recs := h.usage()
		require.Len(t, recs, 1)
		require.Equal(t, store.UsageEstimated, recs[0].Source)
		require.Equal(t, int64(10), recs[0].PromptTokens)
		require.Equal(t, int64(2), recs[0].CompletionTokens, "one token per chunk seen")
		require.Zero(t, recs[0].CachedTokens)
		require.Equal(t, store.BilledUpstreamError, recs[0].BilledReason)
	})
	t.Run("client leaves", func(t *testing.T) {
		h := newHarness(t, 0, 0)
		h.eng.set(func(e *fakeEngine) { e.mode, e.noChunks = "hang", true })
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := httptest.NewRequestWithContext(ctx, "POST", openai.PathChatCompletions, strings.NewReader(prompt))
		r.Header.Set("Authorization", "Bearer "+h.key)
		r.Header.Set(openai.HeaderRequestID, "req-gone")
		w := &cancelAfterWrites{ResponseRecorder: httptest.NewRecorder(), n: 2, cancel: cancel}
		h.gw.ServeHTTP(w, r)
		recs := h.usage()
		require.Len(t, recs, 1, "the record is written although the client's context is cancelled")
		require.Equal(t, "req-gone", recs[0].RequestID)
		require.Equal(t, store.UsageEstimated, recs[0].Source)
		require.Equal(t, int64(10), recs[0].PromptTokens)
		require.Equal(t, int64(2), recs[0].CompletionTokens)
		require.Equal(t, store.BilledClientDisconnect, recs[0].BilledReason)
	})
}

// cancelAfterWrites cancels the request's context after n writes: a client that goes away.
type cancelAfterWrites struct {
	*httptest.ResponseRecorder
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfterWrites) Write(b []byte) (int, error) {
	n, err := c.ResponseRecorder.Write(b)
	if c.n--; c.n == 0 {
		c.cancel()
	}
	return n, err
}

func TestNoUsageOnRejection(t *testing.T) {
	h := newHarness(t, 1, 0, "m1")
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat).Code) // spends the one request per minute
	h.clk.SetTime(t0)
	require.Len(t, h.usage(), 1)
	for _, tc := range []struct {
		name   string
		status int
		send   func() *httptest.ResponseRecorder
	}{
		{"401", 401, func() *httptest.ResponseRecorder {
			return h.do("POST", openai.PathChatCompletions, simpleChat, "Authorization", "Bearer sk-strata-nope-nope")
		}},
		{"400 malformed", 400, func() *httptest.ResponseRecorder { return h.do("POST", openai.PathChatCompletions, `{"model":`) }},
		{"400 missing messages", 400, func() *httptest.ResponseRecorder { return h.do("POST", openai.PathChatCompletions, `{"model":"m1"}`) }},
		{"404 model not allowed", 404, func() *httptest.ResponseRecorder {
			return h.do("POST", openai.PathChatCompletions, `{"model":"m9","messages":[{"role":"user","content":"hi"}]}`)
		}},
		{"429", 429, func() *httptest.ResponseRecorder { return h.do("POST", openai.PathChatCompletions, simpleChat) }},
		{"413", 413, func() *httptest.ResponseRecorder {
			w := httptest.NewRecorder()
			r := httptest.NewRequest("POST", openai.PathChatCompletions, strings.NewReader(simpleChat))
			r.Header.Set("Authorization", "Bearer "+h.key)
			r.Body = http.MaxBytesReader(w, r.Body, 10) // as the front door does
			h.gw.ServeHTTP(w, r)
			return w
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.send()
			require.Equal(t, tc.status, w.Code, w.Body.String())
			require.Len(t, h.usage(), 1)
		})
	}
	require.Len(t, h.eng.seen(), 1)

	// The router's own refusals (no replica named) pass through unmetered.
	for _, status := range []int{404, 503} {
		h.clk.SetTime(t0.Add(time.Duration(status) * time.Minute))
		h.eng.set(func(e *fakeEngine) { e.served, e.status = "", status })
		w := h.do("POST", openai.PathChatCompletions, simpleChat)
		require.Equal(t, status, w.Code)
		require.Len(t, h.usage(), 1)
	}
	// An engine's own error answer (replica named) is metered, with no tokens.
	h.clk.SetTime(t0.Add(24 * time.Hour))
	h.eng.set(func(e *fakeEngine) { e.served, e.status = engineServed, 400 })
	w := h.do("POST", openai.PathChatCompletions, simpleChat)
	require.Equal(t, 400, w.Code)
	recs := h.usage()
	require.Len(t, recs, 2)
	require.Equal(t, 400, recs[0].Status)
	require.Zero(t, recs[0].PromptTokens+recs[0].CompletionTokens)
}

func TestIdempotentRequestID(t *testing.T) {
	h := newHarness(t, 0, 0)
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-once").Code)
	first := h.usage()
	h.eng.set(func(e *fakeEngine) {
		e.usage = openai.Usage{PromptTokens: 999, CompletionTokens: 999, TotalTokens: 1998}
	})
	// A second request under a metered id is refused before it reaches the engine.
	w := h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-once")
	require.Equal(t, 409, w.Code)
	require.JSONEq(t, errorBody(requestIDReused("req-once")), w.Body.String())
	require.Equal(t, first, h.usage(), "one record per request id; the first stays")
	require.Len(t, h.eng.seen(), 1)
	require.Equal(t, 1.0, testutil.ToFloat64(h.gw.mm.idReused))

	// Absent or unusable request ids are generated, so records never collide by accident.
	for _, id := range []string{"", strings.Repeat("r", 129), "bad id"} {
		w := h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, id)
		require.Equal(t, 200, w.Code)
		require.Len(t, w.Header().Get(openai.HeaderRequestID), 36)
	}
	require.Len(t, h.usage(), 4)
}

func TestDownstreamHeaders(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	other, err := h.admin.CreateTenant(ctx, "other", 0, 0, nil)
	require.NoError(t, err)
	otherKey, _, err := h.admin.CreateKey(ctx, "other", "")
	require.NoError(t, err)
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderObjective, "critical").Code)
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat, HeaderAPIKey, otherKey, "Authorization", "").Code)
	require.Equal(t, 200, h.do("GET", openai.PathModels, "").Code)
	seen := h.eng.seen()
	require.Len(t, seen, 3)
	a, b := seen[0].header.Get(openai.HeaderFairnessID), seen[1].header.Get(openai.HeaderFairnessID)
	require.Regexp(t, `^[0-9a-f]{16}$`, a)
	require.Equal(t, fairnessID(testSecret, h.tenant.ID), a)
	require.Equal(t, fairnessID(testSecret, other.ID), b)
	require.NotEqual(t, a, b)
	require.Equal(t, a, seen[2].header.Get(openai.HeaderFairnessID))
	require.NotContains(t, a, h.tenant.ID)
	require.Empty(t, seen[0].header.Get(openai.HeaderObjective), "a caller cannot pick its own objective")
	for _, s := range seen {
		require.Empty(t, s.header.Get("Authorization"))
		require.Empty(t, s.header.Get(HeaderAPIKey))
		require.NotEmpty(t, s.header.Get(openai.HeaderRequestID))
	}
}

func TestLastUsedAt(t *testing.T) {
	h := newHarness(t, 0, 0)
	ctx := context.Background()
	lastUsed := func() time.Time {
		k, err := h.st.APIKey(ctx, h.keyRec.ID)
		require.NoError(t, err)
		return k.LastUsedAt
	}
	require.True(t, lastUsed().IsZero())
	for _, tc := range []struct {
		at   time.Duration
		want time.Duration
	}{
		{0, 0},
		{30 * time.Second, 0}, // within TouchInterval: no write (the cache expired, the store's time is used)
		{time.Minute + time.Millisecond, time.Minute + time.Millisecond},
		{time.Minute + 2*time.Second, time.Minute + time.Millisecond}, // cached principal, no write
	} {
		h.clk.SetTime(t0.Add(tc.at))
		require.Equal(t, 200, h.do("GET", openai.PathModels, "").Code)
		h.gw.syncWriteBehind() // last_used_at is written behind, in batches
		require.Equal(t, t0.Add(tc.want), lastUsed(), "at %s", tc.at)
	}
}

func TestUsageWriteFailureIsLoggedAndCounted(t *testing.T) {
	h := newHarness(t, 0, 0)
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat).Code) // caches the key
	require.NoError(t, h.st.Close())
	w := h.do("POST", openai.PathChatCompletions, simpleChat, openai.HeaderRequestID, "req-lost")
	require.Equal(t, 503, w.Code, "an answer that cannot be billed is withheld")
	require.JSONEq(t, errorBody(errUsageNotRecorded), w.Body.String())
	require.Equal(t, 1.0, testutil.ToFloat64(h.gw.m.usageWriteErrors))
	logs := h.logs.String()
	require.Contains(t, logs, "level=ERROR")
	require.Contains(t, logs, "usage record not written")
	require.Contains(t, logs, "request_id=req-lost")
	require.Contains(t, logs, "prompt_tokens=17")
	require.NotContains(t, logs, h.key)
	require.NotContains(t, logs, `"hi"`, "no prompt in logs")
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, 1, 0)
	require.Equal(t, 200, h.do("POST", openai.PathChatCompletions, simpleChat).Code)
	h.clk.SetTime(t0)
	require.Equal(t, 429, h.do("POST", openai.PathChatCompletions, simpleChat).Code)
	require.Equal(t, 401, h.do("POST", openai.PathChatCompletions, simpleChat, "Authorization", "").Code)
	require.NoError(t, testutil.GatherAndCompare(h.reg, strings.NewReader(`
# HELP strata_gateway_rate_limited_total Requests refused with 429 by a rate limit, by limit (requests, tokens or concurrency).
# TYPE strata_gateway_rate_limited_total counter
strata_gateway_rate_limited_total{limit="concurrency"} 0
strata_gateway_rate_limited_total{limit="requests"} 1
strata_gateway_rate_limited_total{limit="tokens"} 0
# HELP strata_gateway_requests_total Requests answered by the gateway, by HTTP status code.
# TYPE strata_gateway_requests_total counter
strata_gateway_requests_total{code="200"} 1
strata_gateway_requests_total{code="401"} 1
strata_gateway_requests_total{code="429"} 1
# HELP strata_gateway_tokens_total Tokens metered into usage records, by kind (prompt, cached, completion); cached tokens are part of prompt tokens.
# TYPE strata_gateway_tokens_total counter
strata_gateway_tokens_total{kind="cached"} 16
strata_gateway_tokens_total{kind="completion"} 3
strata_gateway_tokens_total{kind="prompt"} 17
# HELP strata_gateway_usage_write_errors_total Usage records that could not be written to the store (each is also logged at error level with its content).
# TYPE strata_gateway_usage_write_errors_total counter
strata_gateway_usage_write_errors_total 0
`), "strata_gateway_requests_total", "strata_gateway_rate_limited_total", "strata_gateway_tokens_total", "strata_gateway_usage_write_errors_total"))
}

func TestNew(t *testing.T) {
	st := openTestStore(t)
	next := http.DefaultTransport
	for _, tc := range []struct {
		name   string
		st     *store.Store
		secret []byte
		next   http.RoundTripper
	}{
		{"no store", nil, testSecret, next},
		{"short secret", st, []byte("short"), next},
		{"no next", st, testSecret, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(config.Default().Gateway, tc.st, tc.secret, tc.next, nil, nil, nil)
			require.Error(t, err)
		})
	}
}
