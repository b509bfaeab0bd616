package sim

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

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

// BenchmarkEngineMooncake replays the whole Mooncake conversation trace (12,031 requests over
// 59 min, ~8k-token prompts sharing 512-token blocks by hash id, ~350 output tokens) on 8 H100
// Llama-3.1-8B engines in virtual time, requests dealt round-robin, KV events on: the engines'
// share of a `strata replay` of that trace. It reports wall seconds per replay and simulated
// tokens per wall second. Skipped when the shared data is absent.
//
//	go test ./internal/engine/sim -run XXX -bench EngineMooncake -benchtime 1x
func BenchmarkEngineMooncake(b *testing.B) {
	f, err := os.Open("../../../../shared/data/traces/mooncake_conversation_trace.jsonl")
	if err != nil {
		b.Skip("the Mooncake trace is not in ../shared/data: ", err)
	}
	type row struct {
		Timestamp    int64 `json:"timestamp"`
		InputLength  int   `json:"input_length"`
		OutputLength int   `json:"output_length"`
		HashIDs      []int `json:"hash_ids"`
	}
	var rows []row
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r row
		require.NoError(b, json.Unmarshal(sc.Bytes(), &r))
		rows = append(rows, r)
	}
	require.NoError(b, f.Close())
	const engines, maxLen = 8, 131072
	var tokens int64
	start := time.Now()
	for b.Loop() {
		es := make([]*Engine, engines)
		nows := make([]time.Time, engines)
		for i := range es {
			es[i] = mustEngine(b, engineCfg(0, 16, maxLen))
		}
		t0 := time.Unix(0, 0)
		for i, r := range rows {
			if r.InputLength < 1 || r.InputLength+max(1, r.OutputLength) > maxLen {
				continue
			}
			prompt := make([]int, r.InputLength)
			for j := range prompt {
				// one deterministic 512-token block per hash id
				prompt[j] = 1000 + (r.HashIDs[j/512]*512+j%512)%120000
			}
			k := i % engines
			at := t0.Add(time.Duration(r.Timestamp) * time.Millisecond)
			nows[k] = es[k].RunUntil(nows[k], at, nil)
			if !es[k].InFlight() {
				nows[k] = at
			}
			require.NoError(b, es[k].Add(Request{ID: strconv.Itoa(i), Ref: i, Prompt: prompt, OutputLen: max(1, r.OutputLength), Arrival: at}))
			tokens += int64(r.InputLength + max(1, r.OutputLength))
		}
		for k, e := range es {
			e.RunUntil(nows[k], nows[k].Add(24*time.Hour), nil)
			require.True(b, e.Idle())
		}
	}
	wall := time.Since(start)
	b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s/replay")
	b.ReportMetric(float64(tokens)/wall.Seconds(), "sim-tokens/s")
}
