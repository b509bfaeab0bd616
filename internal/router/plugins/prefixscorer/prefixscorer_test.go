package prefixscorer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
	"github.com/strata-inference/strata/internal/tokenizer"
)

// With a tokenizer the scorer works on token blocks: a later request sharing the system prompt
// matches the blocks the first one left on its endpoint, and the block count is the number of
// full 16-token blocks of the templated prompt.
func TestTokenBlocks(t *testing.T) {
	p, err := Factory("x", json.RawMessage(`{"tokenizer":"llama-3","blockSizeTokens":16}`), nil)
	require.NoError(t, err)
	s := p.(*scheduling.PrefixScorer)
	system := openai.Message{Role: "system", Content: openai.TextContent(strings.Repeat("Answer in French, briefly and politely. ", 30))}
	a := &scheduling.Request{Messages: []openai.Message{system, {Role: "user", Content: openai.TextContent("Hello!")}}}
	b := &scheduling.Request{Messages: []openai.Message{system, {Role: "user", Content: openai.TextContent("What is the capital of Peru?")}}}
	eps := []*scheduling.Endpoint{{Name: "x"}, {Name: "y"}}
	s.PreRequest(a, eps[0])

	tok, err := tokenizer.Load("llama-3")
	require.NoError(t, err)
	full := len(tok.EncodeChat(a.Messages, true)) / 16
	require.Equal(t, full, s.Blocks("x", a))

	scores := make([]float64, 2)
	s.Score(b, eps, scores)
	require.Greater(t, scores[0], 0.5)
	require.Less(t, scores[0], 1.0)
	require.Zero(t, scores[1])
}

func TestFactoryErrors(t *testing.T) {
	for params, want := range map[string]string{
		`{"tokenizer":"gpt-2"}`:   `parameters.tokenizer: tokenizer: unknown tokenizer "gpt-2"`,
		`{"blockSizeTokens":-16}`: "parameters.blockSizeTokens: must be positive, got -16",
		`{"blockSize":0}`:         "parameters.blockSize: must be positive, got 0",
	} {
		_, err := Factory("x", json.RawMessage(params), nil)
		require.ErrorContains(t, err, want)
	}
}

// BenchmarkScoreTokenized is one Score of the token-block prefix scorer on 16 endpoints for a
// fresh ~1k-token chat request: tokenizing it with Llama-3 (chat template) is included.
func BenchmarkScoreTokenized(b *testing.B) {
	p, err := Factory("x", json.RawMessage(`{"tokenizer":"llama-3"}`), nil)
	require.NoError(b, err)
	s := p.(*scheduling.PrefixScorer)
	system := openai.Message{Role: "system", Content: openai.TextContent(strings.Repeat("Answer in French, briefly and politely. ", 100))}
	eps := make([]*scheduling.Endpoint, 16)
	for i := range eps {
		eps[i] = &scheduling.Endpoint{Name: string(rune('a' + i))}
	}
	s.PreRequest(&scheduling.Request{Messages: []openai.Message{system}}, eps[3])
	scores := make([]float64, len(eps))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req := &scheduling.Request{Messages: []openai.Message{system, {Role: "user", Content: openai.TextContent(strings.Repeat("why? ", i%50))}}}
		s.Score(req, eps, scores)
	}
}
