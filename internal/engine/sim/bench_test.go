package sim

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
)

// benchPrompt is a realistic long user turn: the first 16 Arena-Hard prompts joined (about 3 KB,
// 800 tokens), or a synthetic one when the shared data is absent.
func benchPrompt(b *testing.B) string {
	f, err := os.Open("../../../../shared/data/prompts/arenahard_v01_question.jsonl")
	if err != nil {
		return longPrefix
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var parts []string
	for len(parts) < 16 && sc.Scan() {
		var q struct {
			Prompt string `json:"prompt"`
		}
		require.NoError(b, json.Unmarshal(sc.Bytes(), &q))
		parts = append(parts, q.Prompt)
	}
	return strings.Join(parts, "\n\n")
}

// BenchmarkChatCompletion is one full non-streaming request at time_scale 0: parse, chat
// template, tokenization, prefix-cache lookup, 64 engine steps, response.
func BenchmarkChatCompletion(b *testing.B) {
	s, err := New(testConfig(), "bench", clock.RealClock{}, nil)
	require.NoError(b, err)
	defer s.Close()
	content, _ := json.Marshal(benchPrompt(b))
	body := `{"model":"` + testModel + `","messages":[{"role":"user","content":` + string(content) + `}],"max_tokens":64,"ignore_eos":true}`
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body)))
	var resp struct {
		Usage usageInfo `json:"usage"`
	}
	require.NoError(b, json.Unmarshal(rec.Body.Bytes(), &resp))
	require.Equal(b, 64, resp.Usage.CompletionTokens)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Body.String())
		}
	}
	b.ReportMetric(float64(resp.Usage.PromptTokens), "prompt_tokens")
}

// BenchmarkChatCompletionParallel is the same request from many clients at once.
func BenchmarkChatCompletionParallel(b *testing.B) {
	s, err := New(testConfig(), "bench", clock.RealClock{}, nil)
	require.NoError(b, err)
	defer s.Close()
	content, _ := json.Marshal(benchPrompt(b))
	body := `{"model":"` + testModel + `","messages":[{"role":"user","content":` + string(content) + `}],"max_tokens":64,"ignore_eos":true}`
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body)))
			if rec.Code != http.StatusOK {
				b.Fatal(rec.Body.String())
			}
		}
	})
}

func BenchmarkHashBlockTokens(b *testing.B) {
	parent := NoneHash(DefaultHashSeed)
	tokens := tokensFrom(1000, 16)
	b.ReportAllocs()
	for b.Loop() {
		parent = HashBlockTokens(parent, tokens, nil)
	}
}

func BenchmarkEncodeChat(b *testing.B) {
	tok := testTokenizer(b)
	text := renderChat(toMessages([]chatMsg{{"user", benchPrompt(b)}}), true)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		tok.encode(text)
	}
}
