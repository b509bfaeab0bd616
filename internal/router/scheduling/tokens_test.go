package scheduling

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
)

// byteTokenizer is one token per byte; BOS is 1; chat renders "role:content;" per message.
type byteTokenizer struct{ calls *int }

func (byteTokenizer) Name() string     { return "bytes" }
func (byteTokenizer) BOS() (int, bool) { return 1, true }
func (t byteTokenizer) EncodeSpecial(s string) []int {
	*t.calls++
	out := make([]int, len(s))
	for i := range len(s) {
		out[i] = int(s[i])
	}
	return out
}
func (t byteTokenizer) EncodeChat(msgs []openai.Message, _ bool) []int {
	out := []int{1}
	for _, m := range msgs {
		out = append(out, t.EncodeSpecial(m.Role+":"+m.ContentText()+";")...)
	}
	return out
}

func TestPromptTokens(t *testing.T) {
	calls := 0
	tok := byteTokenizer{&calls}
	require.Equal(t, []int{7, 8}, PromptTokens(&Request{TokenIDs: []int{7, 8}, Prompt: "x"}, tok))
	require.Nil(t, PromptTokens(&Request{Prompt: "x"}, nil))

	req := &Request{Prompt: "ab"}
	require.Equal(t, []int{1, 'a', 'b'}, PromptTokens(req, tok), "completions start with BOS")
	require.Equal(t, []int{1, 'a', 'b'}, PromptTokens(req, tok))
	require.Equal(t, 1, calls, "tokenized once per request")

	chat := &Request{Messages: []openai.Message{{Role: "u", Content: openai.TextContent("hi")}}}
	require.Equal(t, []int{1, 'u', ':', 'h', 'i', ';'}, PromptTokens(chat, tok))
	require.Empty(t, PromptTokens(&Request{}, tok))
}

func TestTokenBlockHashes(t *testing.T) {
	ids := []int{1, 2, 3, 4, 5, 6, 7}
	h := TokenBlockHashes(ids, 3)
	require.Len(t, h, 2, "the partial last block has no hash")
	require.Equal(t, h[:1], TokenBlockHashes(ids[:3], 3), "chained: a prefix hashes the same")
	other := TokenBlockHashes([]int{9, 2, 3, 4, 5, 6}, 3)
	require.NotEqual(t, h[1], other[1], "a block's hash depends on its parent")
	require.Empty(t, TokenBlockHashes(ids[:2], 3))
}
