package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/config"
)

// longPrefix is a system prompt long enough to span many KV blocks.
var longPrefix = strings.Repeat("You are a careful assistant for an inference platform. Answer briefly and cite sources. ", 20)

func TestChatNonStream(t *testing.T) {
	s, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	c := newClient(hs)
	resp, err := c.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{
		Model:     testModel,
		Messages:  []oai.ChatCompletionMessageParamUnion{oai.SystemMessage("Be brief."), oai.UserMessage("What is a KV cache?")},
		MaxTokens: oai.Int(40),
	})
	require.NoError(t, err)
	require.Equal(t, "chat.completion", string(resp.Object))
	require.True(t, strings.HasPrefix(resp.ID, "chatcmpl-"))
	require.Equal(t, testModel, resp.Model)
	require.Len(t, resp.Choices, 1)
	ch := resp.Choices[0]
	require.Equal(t, "assistant", string(ch.Message.Role))
	require.Contains(t, []string{"stop", "length"}, ch.FinishReason)

	prompt := s.tok.encode(renderChat(toMessages([]chatMsg{{"system", "Be brief."}, {"user", "What is a KV cache?"}}), true))
	require.EqualValues(t, len(prompt), resp.Usage.PromptTokens)
	require.GreaterOrEqual(t, resp.Usage.CompletionTokens, int64(1))
	require.LessOrEqual(t, resp.Usage.CompletionTokens, int64(40))
	require.Equal(t, resp.Usage.PromptTokens+resp.Usage.CompletionTokens, resp.Usage.TotalTokens)
	require.Zero(t, resp.Usage.PromptTokensDetails.CachedTokens)
	require.True(t, resp.Usage.PromptTokensDetails.JSON.CachedTokens.Valid(), "cached_tokens is always present")

	// The text is the generated tokens; EOS, when the answer stops by itself, has no text.
	words := s.tok.encode(ch.Message.Content)
	want := resp.Usage.CompletionTokens
	if ch.FinishReason == "stop" {
		want--
	}
	require.EqualValues(t, want, len(words))

	again, err := c.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{
		Model:     testModel,
		Messages:  []oai.ChatCompletionMessageParamUnion{oai.SystemMessage("Be brief."), oai.UserMessage("What is a KV cache?")},
		MaxTokens: oai.Int(40),
	})
	require.NoError(t, err)
	require.Equal(t, ch.Message.Content, again.Choices[0].Message.Content, "deterministic from seed and prompt")
}

func TestChatStream(t *testing.T) {
	_, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	c := newClient(hs)
	stream := c.Chat.Completions.NewStreaming(context.Background(), oai.ChatCompletionNewParams{
		Model:         testModel,
		Messages:      []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Write a haiku about GPUs.")},
		MaxTokens:     oai.Int(30),
		StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
	})
	var acc oai.ChatCompletionAccumulator
	var chunks []oai.ChatCompletionChunk
	for stream.Next() {
		chunks = append(chunks, stream.Current())
		acc.AddChunk(stream.Current())
	}
	require.NoError(t, stream.Err())
	require.GreaterOrEqual(t, len(chunks), 3)

	first := chunks[0]
	require.Equal(t, "assistant", string(first.Choices[0].Delta.Role))
	require.Equal(t, "", first.Choices[0].Delta.Content)

	last := chunks[len(chunks)-1]
	require.Empty(t, last.Choices, "the usage chunk has no choices")
	require.NotZero(t, last.Usage.PromptTokens)
	finish := chunks[len(chunks)-2].Choices[0].FinishReason
	require.Contains(t, []string{"stop", "length"}, finish)
	tokenChunks := len(chunks) - 2 // minus the role chunk and the usage chunk
	require.EqualValues(t, last.Usage.CompletionTokens, tokenChunks, "one chunk per generated token")
	for _, ch := range chunks[1 : len(chunks)-2] {
		require.Empty(t, ch.Choices[0].FinishReason)
	}
	require.Equal(t, last.Usage.PromptTokens+last.Usage.CompletionTokens, last.Usage.TotalTokens)
	require.NotEmpty(t, acc.Choices[0].Message.Content)
}

// TestChatStreamWireFormat checks the exact chunk JSON of vLLM's chat stream, with
// continuous_usage_stats.
func TestChatStreamWireFormat(t *testing.T) {
	_, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	code, body := postJSON(t, hs, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],
		"max_tokens":3,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`)
	require.Equal(t, http.StatusOK, code)
	data := sseData(t, body)
	require.Len(t, data, 6, "role, 3 tokens, usage, [DONE]")
	require.Equal(t, "[DONE]", data[5])
	strip := func(s string) map[string]any {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(s), &m))
		require.True(t, strings.HasPrefix(m["id"].(string), "chatcmpl-"))
		delete(m, "id")
		delete(m, "created")
		return m
	}
	const head = `"object":"chat.completion.chunk","model":"meta-llama/Llama-3.1-8B-Instruct"`
	require.JSONEq(t, `{`+head+`,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],
		"usage":{"prompt_tokens":11,"completion_tokens":0,"total_tokens":11}}`, mustJSON(strip(data[0])))
	tok := strip(data[1])
	require.Nil(t, tok["choices"].([]any)[0].(map[string]any)["finish_reason"])
	require.Equal(t, map[string]any{"prompt_tokens": 11.0, "completion_tokens": 1.0, "total_tokens": 12.0}, tok["usage"])
	fin := strip(data[3])["choices"].([]any)[0].(map[string]any)
	require.Equal(t, "length", fin["finish_reason"])
	require.Contains(t, fin, "stop_reason")
	require.JSONEq(t, `{`+head+`,"choices":[],"usage":{"prompt_tokens":11,"total_tokens":14,"completion_tokens":3,
		"prompt_tokens_details":{"cached_tokens":0}}}`, mustJSON(strip(data[4])))
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestCompletions(t *testing.T) {
	_, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	c := newClient(hs)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		prompt  oai.CompletionNewParamsPromptUnion
		choices int
		tokens  int64 // prompt tokens
	}{
		{"string (BOS added)", oai.CompletionNewParamsPromptUnion{OfString: oai.String("Hello world")}, 1, 3},
		{"batch of strings", oai.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{"Hello world", "Goodbye"}}, 2, 3 + 3},
		{"token ids", oai.CompletionNewParamsPromptUnion{OfArrayOfTokens: []int64{128000, 9906, 1917, 0}}, 1, 4},
		{"batch of token ids", oai.CompletionNewParamsPromptUnion{OfArrayOfTokenArrays: [][]int64{{1, 2}, {3, 4, 5}}}, 2, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Completions.New(ctx, oai.CompletionNewParams{Model: testModel, Prompt: tc.prompt, MaxTokens: oai.Int(16)})
			require.NoError(t, err)
			require.Equal(t, "text_completion", string(resp.Object))
			require.True(t, strings.HasPrefix(resp.ID, "cmpl-"))
			require.Len(t, resp.Choices, tc.choices)
			for i, ch := range resp.Choices {
				require.EqualValues(t, i, ch.Index)
				require.Contains(t, []string{"stop", "length"}, string(ch.FinishReason))
			}
			require.Equal(t, tc.tokens, resp.Usage.PromptTokens)
			require.LessOrEqual(t, resp.Usage.CompletionTokens, int64(16*tc.choices))
		})
	}
	t.Run("stream", func(t *testing.T) {
		stream := c.Completions.NewStreaming(ctx, oai.CompletionNewParams{Model: testModel,
			Prompt:        oai.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{"One", "Two"}},
			MaxTokens:     oai.Int(8),
			StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
		}, option.WithJSONSet("ignore_eos", true))
		texts := map[int64]string{}
		finished := map[int64]string{}
		var usage oai.CompletionUsage
		for stream.Next() {
			ch := stream.Current()
			if len(ch.Choices) == 0 {
				usage = ch.Usage
				continue
			}
			texts[ch.Choices[0].Index] += ch.Choices[0].Text
			if ch.Choices[0].FinishReason != "" {
				finished[ch.Choices[0].Index] = string(ch.Choices[0].FinishReason)
			}
		}
		require.NoError(t, stream.Err())
		require.Equal(t, map[int64]string{0: "length", 1: "length"}, finished)
		require.Len(t, texts, 2)
		require.EqualValues(t, 16, usage.CompletionTokens, "ignore_eos: exactly max_tokens per prompt")
	})
}

// TestPrefixCacheHit: a second request sharing a long prefix reports cached tokens, a multiple
// of the block size, as prompt_tokens_details.cached_tokens.
func TestPrefixCacheHit(t *testing.T) {
	cfg := testConfig()
	_, hs := startServer(t, cfg, clock.RealClock{}, nil)
	c := newClient(hs)
	ask := func(q string) *oai.ChatCompletion {
		resp, err := c.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{
			Model:     testModel,
			Messages:  []oai.ChatCompletionMessageParamUnion{oai.SystemMessage(longPrefix), oai.UserMessage(q)},
			MaxTokens: oai.Int(8),
		})
		require.NoError(t, err)
		return resp
	}
	first := ask("How do I size a GPU fleet?")
	require.Zero(t, first.Usage.PromptTokensDetails.CachedTokens)
	second := ask("What is prefix caching?")
	cached := second.Usage.PromptTokensDetails.CachedTokens
	require.Greater(t, cached, int64(0))
	require.Zero(t, cached%int64(cfg.BlockSize))
	require.Greater(t, cached, second.Usage.PromptTokens/2, "the shared system prompt is most of the prompt")
	require.Less(t, cached, second.Usage.PromptTokens)

	fams := scrape(t, hs)
	require.Equal(t, float64(cached), metricValue(t, fams, "vllm:prefix_cache_hits_total"))
	require.Equal(t, float64(first.Usage.PromptTokens+second.Usage.PromptTokens), metricValue(t, fams, "vllm:prefix_cache_queries_total"))
}

// TestMultiTurnMTBench: turn 2 (turn 1 + answer + turn 2) hits the blocks of turn 1 and its
// answer, for every MT-Bench question.
func TestMultiTurnMTBench(t *testing.T) {
	questions := mtbench(t)
	cfg := testConfig()
	_, hs := startServer(t, cfg, clock.RealClock{}, nil)
	c := newClient(hs)
	ctx := context.Background()
	var prompt, cached int64
	for _, turns := range questions {
		msgs := []oai.ChatCompletionMessageParamUnion{oai.UserMessage(turns[0])}
		r1, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: testModel, Messages: msgs, MaxTokens: oai.Int(128)})
		require.NoError(t, err)
		msgs = append(msgs, oai.AssistantMessage(r1.Choices[0].Message.Content), oai.UserMessage(turns[1]))
		r2, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: testModel, Messages: msgs, MaxTokens: oai.Int(128)})
		require.NoError(t, err)
		hit := r2.Usage.PromptTokensDetails.CachedTokens
		require.Positive(t, hit, "question %q", turns[0])
		require.Zero(t, hit%int64(cfg.BlockSize))
		// Turn 1's prompt and answer are recomputed at most up to the last partial block.
		require.GreaterOrEqual(t, hit, r1.Usage.PromptTokens+r1.Usage.CompletionTokens-int64(cfg.BlockSize))
		prompt += r2.Usage.PromptTokens
		cached += hit
	}
	t.Logf("MT-Bench turn 2: %d questions, prefix-hit ratio %.1f%% of prompt tokens", len(questions), 100*float64(cached)/float64(prompt))
}

func TestIgnoreEOSAndMinTokens(t *testing.T) {
	_, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	c := newClient(hs)
	for i := 0; i < 20; i++ {
		q := fmt.Sprintf("question %d", i)
		resp, err := c.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{Model: testModel,
			Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage(q)}, MaxCompletionTokens: oai.Int(25)},
			option.WithJSONSet("ignore_eos", true))
		require.NoError(t, err)
		require.EqualValues(t, 25, resp.Usage.CompletionTokens)
		require.Equal(t, "length", resp.Choices[0].FinishReason)

		resp, err = c.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{Model: testModel,
			Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage(q)}, MaxTokens: oai.Int(25)},
			option.WithJSONSet("min_tokens", 20))
		require.NoError(t, err)
		require.GreaterOrEqual(t, resp.Usage.CompletionTokens, int64(21), "EOS comes after min_tokens")
	}
}

func TestErrors(t *testing.T) {
	cfg := testConfig()
	cfg.MaxModelLen = 64
	_, hs := startServer(t, cfg, clock.RealClock{}, nil)
	long := strings.Repeat("word ", 80)
	for _, tc := range []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, 404,
			`{"error":{"message":"The model ` + "`gpt-4o`" + ` does not exist.","type":"NotFoundError","param":"model","code":404}}`},
		{"unknown model, completions", "/v1/completions", `{"model":"x","prompt":"hi"}`, 404,
			`{"error":{"message":"The model ` + "`x`" + ` does not exist.","type":"NotFoundError","param":"model","code":404}}`},
		{"prompt over max_model_len", "/v1/completions", `{"prompt":"` + long + `"}`, 400,
			`{"error":{"message":"This model's maximum context length is 64 tokens. However, your request has 82 input tokens. Please reduce the length of the input messages.","type":"BadRequestError","param":"input_tokens","code":400}}`},
		{"prompt + max_tokens over max_model_len", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":60}`, 400,
			`{"error":{"message":"'max_tokens' or 'max_completion_tokens' is too large: 60. This model's maximum context length is 64 tokens and your request has 11 input tokens (60 > 64 - 11).","type":"BadRequestError","param":"max_tokens","code":400}}`},
		{"malformed JSON", "/v1/chat/completions", `{"messages":[`, 400,
			`{"error":{"message":"[{'type': 'json_invalid', 'loc': ('body', 0), 'msg': 'JSON decode error'}]","type":"Bad Request","param":null,"code":400}}`},
		{"missing messages", "/v1/chat/completions", `{"model":"` + testModel + `"}`, 400,
			`{"error":{"message":"[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]","type":"Bad Request","param":null,"code":400}}`},
		{"missing prompt", "/v1/completions", `{}`, 400,
			`{"error":{"message":"[{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required'}]","type":"Bad Request","param":null,"code":400}}`},
		{"mistyped field", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":"ten"}`, 400,
			`{"error":{"message":"[{'type': 'string_type', 'loc': ('body', 'max_tokens'), 'msg': 'Input should be a valid integer'}]","type":"Bad Request","param":null,"code":400}}`},
		{"integer out of range", "/v1/completions", `{"prompt":"hi","seed":1e30}`, 400,
			`{"error":{"message":"[{'type': 'number_type', 'loc': ('body', 'seed'), 'msg': 'Input should be a valid integer'}]","type":"Bad Request","param":null,"code":400}}`},
		{"message without role", "/v1/chat/completions", `{"messages":[{"content":"hi"}]}`, 400,
			`{"error":{"message":"[{'type': 'missing', 'loc': ('body', 'messages', 0, 'role'), 'msg': 'Field required'}]","type":"Bad Request","param":null,"code":400}}`},
		{"n > 1", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"n":2}`, 400,
			`{"error":{"message":"n must be 1: the simulator generates one choice per prompt, got 2.","type":"BadRequestError","param":"n","code":400}}`},
		{"max_tokens 0", "/v1/completions", `{"prompt":"hi","max_tokens":0}`, 400,
			`{"error":{"message":"max_tokens must be at least 1, got 0.","type":"BadRequestError","param":"max_tokens","code":400}}`},
		{"min_tokens over max_tokens", "/v1/completions", `{"prompt":"hi","max_tokens":4,"min_tokens":5}`, 400,
			`{"error":{"message":"min_tokens must be less than or equal to max_tokens=4, got 5.","type":"BadRequestError","param":"min_tokens","code":400}}`},
		{"stream_options without stream", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`, 400,
			`{"error":{"message":"Stream options can only be defined when ` + "`stream=True`" + `.","type":"BadRequestError","param":"stream_options","code":400}}`},
		{"token out of vocabulary", "/v1/completions", `{"prompt":[1,2,200000]}`, 400,
			`{"error":{"message":"Token id 200000 is out of vocabulary","type":"BadRequestError","param":null,"code":400}}`},
		{"empty token prompt", "/v1/completions", `{"prompt":[]}`, 400,
			`{"error":{"message":"The decoder prompt cannot be empty","type":"BadRequestError","param":null,"code":400}}`},
		{"prompt of the wrong type", "/v1/completions", `{"prompt":{"a":1}}`, 400,
			`{"error":{"message":"[{'type': 'union_type', 'loc': ('body', 'prompt'), 'msg': 'Input should be a valid string, a list of strings, a list of integers or a list of lists of integers'}]","type":"Bad Request","param":null,"code":400}}`},
		{"mixed batch", "/v1/completions", `{"prompt":["a",[1]]}`, 400,
			`{"error":{"message":"[{'type': 'union_type', 'loc': ('body', 'prompt'), 'msg': 'Input should be a valid string, a list of strings, a list of integers or a list of lists of integers'}]","type":"Bad Request","param":null,"code":400}}`},
		{"unknown path", "/v1/audio/speech", `{}`, 404,
			`{"error":{"message":"Not Found","type":"NotFoundError","param":null,"code":404}}`},
		{"wrong method", "/health", ``, 405,
			`{"error":{"message":"Method Not Allowed","type":"MethodNotAllowed","param":null,"code":405}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := postJSON(t, hs, tc.path, tc.body)
			require.Equal(t, tc.status, code, body)
			require.JSONEq(t, tc.want, body)
		})
	}
	t.Run("the openai client sees the error", func(t *testing.T) {
		_, err := newClient(hs).Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{
			Model: "nope", Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("hi")}})
		var apiErr *oai.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
		require.Equal(t, "The model `nope` does not exist.", apiErr.Message)
	})
}

func TestModelsHealthTokenize(t *testing.T) {
	s, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	models, err := newClient(hs).Models.List(context.Background())
	require.NoError(t, err)
	require.Len(t, models.Data, 1)
	require.Equal(t, testModel, models.Data[0].ID)
	require.Equal(t, "vllm", models.Data[0].OwnedBy)

	resp, err := http.Get(hs.URL + "/v1/models")
	require.NoError(t, err)
	var raw struct {
		Data []map[string]any `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&raw))
	resp.Body.Close()
	card := raw.Data[0]
	require.Equal(t, "model", card["object"])
	require.Equal(t, testModel, card["root"])
	require.Contains(t, card, "parent")
	require.Nil(t, card["parent"])
	require.Equal(t, 8192.0, card["max_model_len"])
	require.Equal(t, "model_permission", card["permission"].([]any)[0].(map[string]any)["object"])

	resp, err = http.Get(hs.URL + "/health")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Zero(t, resp.ContentLength)
	resp.Body.Close()

	for _, tc := range []struct{ name, body, want string }{
		{"prompt with BOS", `{"model":"` + testModel + `","prompt":"Hello world","return_token_strs":true}`,
			`{"count":3,"max_model_len":8192,"tokens":[128000,9906,1917],"token_strs":["<|begin_of_text|>","Hello","Ġworld"]}`},
		{"prompt without special tokens", `{"prompt":"Hello world","add_special_tokens":false}`,
			`{"count":2,"max_model_len":8192,"tokens":[9906,1917],"token_strs":null}`},
		{"messages", `{"messages":[{"role":"user","content":"Hello there"}]}`,
			`{"count":12,"max_model_len":8192,"tokens":` + mustJSON(s.tok.encode(renderChat(toMessages([]chatMsg{{"user", "Hello there"}}), true))) + `,"token_strs":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := postJSON(t, hs, "/tokenize", tc.body)
			require.Equal(t, http.StatusOK, code)
			require.JSONEq(t, tc.want, body)
		})
	}

	s.Close()
	resp, err = http.Get(hs.URL + "/health")
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "a closed engine is unhealthy")
	resp.Body.Close()
	code, body := postJSON(t, hs, "/v1/completions", `{"prompt":"hi"}`)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
}

// TestMetrics scrapes /metrics, parses it with expfmt and checks vLLM's names, types, labels and
// the values after a known workload.
func TestMetrics(t *testing.T) {
	cfg := testConfig()
	_, hs := startServer(t, cfg, clock.RealClock{}, nil)
	c := newClient(hs)
	var prompt, completion int64
	for i := 0; i < 5; i++ {
		resp, err := c.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{Model: testModel,
			Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage(fmt.Sprintf("request %d", i))}, MaxTokens: oai.Int(12)},
			option.WithJSONSet("ignore_eos", i%2 == 0))
		require.NoError(t, err)
		prompt += resp.Usage.PromptTokens
		completion += resp.Usage.CompletionTokens
	}
	fams := scrape(t, hs)
	for name, typ := range map[string]string{
		"vllm:num_requests_running":          "GAUGE",
		"vllm:num_requests_waiting":          "GAUGE",
		"vllm:kv_cache_usage_perc":           "GAUGE",
		"vllm:gpu_cache_usage_perc":          "GAUGE",
		"vllm:prefix_cache_queries_total":    "COUNTER",
		"vllm:prefix_cache_hits_total":       "COUNTER",
		"vllm:num_preemptions_total":         "COUNTER",
		"vllm:prompt_tokens_total":           "COUNTER",
		"vllm:generation_tokens_total":       "COUNTER",
		"vllm:request_success_total":         "COUNTER",
		"vllm:time_to_first_token_seconds":   "HISTOGRAM",
		"vllm:inter_token_latency_seconds":   "HISTOGRAM",
		"vllm:time_per_output_token_seconds": "HISTOGRAM",
		"vllm:e2e_request_latency_seconds":   "HISTOGRAM",
		"vllm:request_queue_time_seconds":    "HISTOGRAM",
		"vllm:iteration_tokens_total":        "HISTOGRAM",
		"vllm:request_prompt_tokens":         "HISTOGRAM",
		"vllm:request_generation_tokens":     "HISTOGRAM",
		"vllm:cache_config_info":             "GAUGE",
	} {
		f, ok := fams[name]
		require.True(t, ok, "missing %s", name)
		require.Equal(t, typ, f.GetType().String(), name)
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			require.Equal(t, "0", labels["engine"], name)
			if name != "vllm:cache_config_info" {
				require.Equal(t, testModel, labels["model_name"], name)
			}
		}
	}
	// The last byte of an answer can reach the client before the engine's step that finished it
	// updates the gauges (as in vLLM, whose stats are logged per step): wait for that step.
	require.Eventually(t, func() bool {
		fams = scrape(t, hs)
		return metricValue(t, fams, "vllm:num_requests_running") == 0 &&
			metricValue(t, fams, "vllm:num_requests_waiting") == 0
	}, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 0.0, metricValue(t, fams, "vllm:kv_cache_usage_perc"), "finished requests hold no blocks")
	require.Equal(t, float64(prompt), metricValue(t, fams, "vllm:prompt_tokens_total"))
	require.Equal(t, float64(completion), metricValue(t, fams, "vllm:generation_tokens_total"))
	require.Equal(t, 5.0, metricValue(t, fams, "vllm:request_success_total"))
	require.Equal(t, uint64(5), fams["vllm:e2e_request_latency_seconds"].GetMetric()[0].GetHistogram().GetSampleCount())
	require.Equal(t, uint64(5), fams["vllm:time_to_first_token_seconds"].GetMetric()[0].GetHistogram().GetSampleCount())
	require.Equal(t, uint64(completion-5), fams["vllm:inter_token_latency_seconds"].GetMetric()[0].GetHistogram().GetSampleCount())
	reasons := map[string]float64{}
	for _, m := range fams["vllm:request_success_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "finished_reason" {
				reasons[l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	require.GreaterOrEqual(t, reasons["length"], 3.0, "ignore_eos requests end by length")
	require.Contains(t, reasons, "stop")
	info := fams["vllm:cache_config_info"].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range info.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	require.Equal(t, "16", labels["block_size"])
	require.Equal(t, "25650", labels["num_gpu_blocks"], "derived: (80 GB × 0.9 − 16.06 GB − 2 GiB) / (16 × 128 KiB)")
	require.Equal(t, 1.0, info.GetGauge().GetValue())
}

// TestKVUsageWhileRunning: while requests run, KV usage and the running gauge reflect them
// (virtual time: a fake clock that is never stepped holds the first step open).
func TestKVUsageWhileRunning(t *testing.T) {
	cfg := testConfig()
	one := 1.0
	cfg.TimeScale = &one
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	_, hs := startServer(t, cfg, clk, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"messages":[{"role":"user","content":"%d %s"}],"max_tokens":50,"ignore_eos":true}`, i, longPrefix)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+"/v1/chat/completions", strings.NewReader(body))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	// The first request's prefill runs alone; the others join the batch at the next step.
	require.Eventually(t, func() bool {
		fams := scrape(t, hs)
		if metricValue(t, fams, "vllm:num_requests_running") == 3 {
			return true
		}
		clk.Step(time.Millisecond)
		return false
	}, 5*time.Second, time.Millisecond)
	fams := scrape(t, hs)
	usage := metricValue(t, fams, "vllm:kv_cache_usage_perc")
	require.Greater(t, usage, 0.0)
	require.Less(t, usage, 1.0)
	require.Equal(t, usage, metricValue(t, fams, "vllm:gpu_cache_usage_perc"))

	// Clients that go away are aborted: their blocks are freed once the step in flight ends.
	cancel()
	wg.Wait()
	require.Eventually(t, func() bool {
		clk.Step(10 * time.Millisecond)
		fams := scrape(t, hs)
		return metricValue(t, fams, "vllm:num_requests_running") == 0 && metricValue(t, fams, "vllm:kv_cache_usage_perc") == 0
	}, 5*time.Second, time.Millisecond)
}

// TestVirtualTimeLatency drives a replica with a fake clock at time_scale 1 and checks that TTFT
// and e2e latency are exactly the roofline's step times.
func TestVirtualTimeLatency(t *testing.T) {
	cfg := testConfig()
	one := 1.0
	cfg.TimeScale = &one
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	s, hs := startServer(t, cfg, clk, nil)
	stop := make(chan struct{})
	stepped := make(chan struct{})
	go func() { // advance virtual time whenever the step loop waits on it
		defer close(stepped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if clk.HasWaiters() {
				clk.Step(100 * time.Microsecond)
			} else {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
	defer func() { close(stop); <-stepped }()

	resp, err := newClient(hs).Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{Model: testModel,
		Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage(longPrefix)}, MaxTokens: oai.Int(20)},
		option.WithJSONSet("ignore_eos", true))
	require.NoError(t, err)
	require.EqualValues(t, 20, resp.Usage.CompletionTokens)

	L := int(resp.Usage.PromptTokens)
	tm := s.eng.timing
	ttft := tm.StepTime(L, 0, L)
	e2e := ttft
	for k := 2; k <= 20; k++ {
		e2e += tm.StepTime(0, 1, L+k-1)
	}
	fams := scrape(t, hs)
	require.InDelta(t, ttft.Seconds(), metricValue(t, fams, "vllm:time_to_first_token_seconds"), 1e-9)
	require.InDelta(t, e2e.Seconds(), metricValue(t, fams, "vllm:e2e_request_latency_seconds"), 1e-9)
	require.InDelta(t, (e2e - ttft).Seconds(), metricValue(t, fams, "vllm:inter_token_latency_seconds"), 1e-9)
	t.Logf("virtual time: %d-token prompt, TTFT %v, mean ITL %v", L, ttft, (e2e-ttft)/19)
}

// TestCloseFailsInflight: Close ends requests still in the engine with a 503.
func TestCloseFailsInflight(t *testing.T) {
	cfg := testConfig()
	one := 1.0
	cfg.TimeScale = &one
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0)) // never stepped
	s, hs := startServer(t, cfg, clk, nil)
	type result struct {
		code int
		body string
	}
	done := make(chan result, 2)
	for _, stream := range []bool{false, true} {
		go func() {
			code, body := postJSON(t, hs, "/v1/chat/completions", fmt.Sprintf(`{"messages":[{"role":"user","content":"hi %v"}],"stream":%v}`, stream, stream))
			done <- result{code, body}
		}()
	}
	require.Eventually(t, func() bool { return clk.HasWaiters() }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool {
		fams := scrape(t, hs)
		return metricValue(t, fams, "vllm:num_requests_running")+metricValue(t, fams, "vllm:num_requests_waiting") == 2
	}, 5*time.Second, time.Millisecond)
	s.Close()
	for i := 0; i < 2; i++ {
		r := <-done
		if r.code == http.StatusOK { // the stream had started: it ends with an error event
			data := sseData(t, r.body)
			require.Equal(t, "[DONE]", data[len(data)-1])
			require.JSONEq(t, `{"error":{"message":"The engine is shut down.","type":"ServiceUnavailableError","param":null,"code":503}}`, data[len(data)-2])
		} else {
			require.Equal(t, http.StatusServiceUnavailable, r.code)
		}
	}
}

// TestConcurrentRequests runs concurrent streaming and non-streaming requests through a replica
// whose KV cache holds about three of them, so requests wait for blocks and running ones can be
// preempted; every request still gets its whole answer.
func TestConcurrentRequests(t *testing.T) {
	cfg := testConfig()
	cfg.MaxNumSeqs = 4
	cfg.MaxModelLen = 1024
	cfg.NumGPUBlocks = 70 // 69 usable; each request needs about 25
	_, hs := startServer(t, cfg, clock.RealClock{}, nil)
	c := newClient(hs)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			params := oai.ChatCompletionNewParams{Model: testModel, MaxTokens: oai.Int(64),
				// The number first: no two prompts share a block.
				Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage(fmt.Sprint(i) + longPrefix)}}
			if i%2 == 0 {
				stream := c.Chat.Completions.NewStreaming(context.Background(), params, option.WithJSONSet("ignore_eos", true))
				n := 0
				for stream.Next() {
					if len(stream.Current().Choices) > 0 && stream.Current().Choices[0].Delta.Role == "" {
						n++
					}
				}
				if err := stream.Err(); err != nil || n != 64 {
					errs <- fmt.Errorf("stream %d: %d token chunks, err %v", i, n, err)
				}
				return
			}
			resp, err := c.Chat.Completions.New(context.Background(), params, option.WithJSONSet("ignore_eos", true))
			if err != nil || resp.Usage.CompletionTokens != 64 {
				errs <- fmt.Errorf("request %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	fams := scrape(t, hs)
	require.Equal(t, 32.0, metricValue(t, fams, "vllm:request_success_total"))
	require.Equal(t, 32.0*64, metricValue(t, fams, "vllm:generation_tokens_total"))
	require.Equal(t, 0.0, metricValue(t, fams, "vllm:kv_cache_usage_perc"))
	t.Logf("preemptions: %v", metricValue(t, fams, "vllm:num_preemptions_total"))
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *config.Sim)
		err    string
	}{
		{name: "unknown GPU", change: func(c *config.Sim) { c.GPU = "TPU-v5" }, err: `unknown GPU "TPU-v5"`},
		{name: "unknown model", change: func(c *config.Sim) { c.Model = "my-model" }, err: `unknown model "my-model"`},
		{name: "KV cache too small for max_model_len", change: func(c *config.Sim) { c.NumGPUBlocks = 512 },
			err: "num_gpu_blocks 512 cannot hold one request of max_model_len 8192"},
		{name: "negative time scale", change: func(c *config.Sim) { v := -1.0; c.TimeScale = &v }, err: "time_scale"},
		{name: "zero block size", change: func(c *config.Sim) { c.BlockSize = 0 }, err: "block_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.change(&cfg)
			_, err := New(cfg, "r", clock.RealClock{}, nil)
			require.ErrorContains(t, err, tc.err)
		})
	}
	t.Run("strata metrics on the registerer, one series per replica", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		a, err := New(testConfig(), "a", clock.RealClock{}, reg)
		require.NoError(t, err)
		defer a.Close()
		b, err := New(testConfig(), "b", clock.RealClock{}, reg)
		require.NoError(t, err)
		defer b.Close()
		_, err = New(testConfig(), "a", clock.RealClock{}, reg)
		require.ErrorContains(t, err, "register metrics")
		require.Equal(t, 2, testutil.CollectAndCount(reg, "strata_engine_sim_steps_total"))
		require.NotSame(t, a.Registry(), b.Registry(), "each replica has its own vLLM registry")
	})
}
