package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/openai"
)

// startFamily starts a replica of the family's model profile, served under the model's name.
func startFamily(t *testing.T, model string) (*Server, *httptest.Server) {
	cfg := testConfig()
	cfg.Model = model
	cfg.ServedModelName = ""
	return startServer(t, cfg, clock.RealClock{}, nil)
}

// TestTokenizePerModel: /tokenize and /detokenize answer with the served model's vocabulary,
// in vLLM's shapes (token_strs from convert_ids_to_tokens), and a chat request's prompt_tokens
// is its template's token count.
func TestTokenizePerModel(t *testing.T) {
	for _, tc := range []struct {
		model      string
		tokens     string
		strs       string
		vocab      int
		chatTokens int
	}{
		// Llama 3: BOS (add_special_tokens defaults to true), "Hello", " world".
		{"meta-llama/Llama-3.1-8B-Instruct", `[128000,9906,1917]`, `["<|begin_of_text|>","Hello","Ġworld"]`, 128256, 12},
		// Qwen3: no BOS.
		{"Qwen/Qwen3-8B", `[9707,1879]`, `["Hello","Ġworld"]`, 151669, 10},
	} {
		t.Run(tc.model, func(t *testing.T) {
			s, hs := startFamily(t, tc.model)
			base := hs.URL
			post := func(path, body string) (int, string) {
				resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
				require.NoError(t, err)
				defer resp.Body.Close()
				var b json.RawMessage
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&b))
				return resp.StatusCode, string(b)
			}
			code, body := post("/tokenize", `{"prompt":"Hello world","return_token_strs":true}`)
			require.Equal(t, http.StatusOK, code, body)
			require.JSONEq(t, fmt.Sprintf(`{"count":%d,"max_model_len":8192,"tokens":%s,"token_strs":%s}`,
				len(mustUnmarshalInts(t, tc.tokens)), tc.tokens, tc.strs), body)

			msgs := []openai.Message{{Role: "user", Content: openai.TextContent("Hello there")}}
			want := s.tok.EncodeChat(msgs, true)
			require.Len(t, want, tc.chatTokens)
			code, body = post("/tokenize", `{"messages":[{"role":"user","content":"Hello there"}]}`)
			require.Equal(t, http.StatusOK, code, body)
			var tr struct{ Tokens []int }
			require.NoError(t, json.Unmarshal([]byte(body), &tr))
			require.Equal(t, want, tr.Tokens)

			code, body = post("/detokenize", `{"tokens":`+mustJSON(want)+`}`)
			require.Equal(t, http.StatusOK, code, body)
			require.JSONEq(t, `{"prompt":`+mustJSON(s.tok.ApplyChatTemplate(msgs, true))+`}`, body)
			code, _ = post("/detokenize", fmt.Sprintf(`{"tokens":[%d]}`, tc.vocab))
			require.Equal(t, http.StatusBadRequest, code, "ids beyond the vocabulary")
			code, _ = post("/detokenize", fmt.Sprintf(`{"tokens":[%d]}`, tc.vocab-1))
			require.Equal(t, http.StatusOK, code)

			c := newClient(hs)
			resp, err := c.Chat.Completions.New(context.Background(), oai.ChatCompletionNewParams{Model: tc.model,
				Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("Hello there")}, MaxTokens: oai.Int(20)})
			require.NoError(t, err)
			require.Equal(t, int64(tc.chatTokens), resp.Usage.PromptTokens)
			// The answer re-tokenizes to its completion tokens (plus EOS when it stopped).
			n := len(s.tok.encode(resp.Choices[0].Message.Content))
			if resp.Choices[0].FinishReason == "stop" {
				n++
			}
			require.Equal(t, int64(n), resp.Usage.CompletionTokens)
		})
	}
}

// TestMultiTurnPrefixHitQwen: with the Qwen3 template too, turn 2 hits turn 1's prompt and
// answer blocks (the answer re-renders to the tokens it was generated as, <|im_end|> included).
func TestMultiTurnPrefixHitQwen(t *testing.T) {
	_, hs := startFamily(t, "Qwen/Qwen3-8B")
	c := newClient(hs)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		msgs := []oai.ChatCompletionMessageParamUnion{oai.UserMessage(fmt.Sprintf("Question %d: explain the KV cache of a transformer in detail, please.", i))}
		r1, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: "Qwen/Qwen3-8B", Messages: msgs, MaxTokens: oai.Int(100)})
		require.NoError(t, err)
		msgs = append(msgs, oai.AssistantMessage(r1.Choices[0].Message.Content), oai.UserMessage("And then?"))
		r2, err := c.Chat.Completions.New(ctx, oai.ChatCompletionNewParams{Model: "Qwen/Qwen3-8B", Messages: msgs, MaxTokens: oai.Int(10)})
		require.NoError(t, err)
		require.GreaterOrEqual(t, r2.Usage.PromptTokensDetails.CachedTokens, r1.Usage.PromptTokens+r1.Usage.CompletionTokens-16)
	}
}

func mustUnmarshalInts(t *testing.T, s string) []int {
	var v []int
	require.NoError(t, json.Unmarshal([]byte(s), &v))
	return v
}

// TestDetokenizeCleanUp: /detokenize is transformers' decode, which cleans up spaces before
// punctuation for Llama 3 (clean_up_tokenization_spaces true) and not for Qwen3.
func TestDetokenizeCleanUp(t *testing.T) {
	for _, tc := range []struct{ model, want string }{
		{"meta-llama/Llama-3.1-8B-Instruct", `{"prompt":"<|begin_of_text|>Hello, world. I'm here!"}`},
		{"Qwen/Qwen3-8B", `{"prompt":"Hello , world . I 'm here !"}`},
	} {
		s, hs := startFamily(t, tc.model)
		ids := s.tok.encodePrompt("Hello , world . I 'm here !", true)
		code, body := postJSON(t, hs, "/detokenize", `{"tokens":`+mustJSON(ids)+`}`)
		require.Equal(t, http.StatusOK, code, body)
		require.JSONEq(t, tc.want, body, tc.model)
	}
}
