package sim

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func testTokenizer(t testing.TB) *tokenizerSet {
	tok, err := loadTokenizer()
	require.NoError(t, err)
	return tok
}

func TestTokenizerLoadShared(t *testing.T) {
	a := testTokenizer(t)
	b := testTokenizer(t)
	require.Same(t, a, b, "one tokenizer per process")
	t.Logf("cl100k_base load: %v; %d generation words", shared.loadTime, len(a.words))
	require.GreaterOrEqual(t, len(a.words), 100)
}

func TestEncodeSpecialTokens(t *testing.T) {
	tok := testTokenizer(t)
	for _, tc := range []struct {
		text string
		want []int
	}{
		{"Hello world", []int{9906, 1917}},
		{"<|begin_of_text|>Hello", []int{bosToken, 9906}},
		{"a<|eot_id|>", []int{64, eosToken}},
		{"<|not_special|>", tok.encode("<|not_special|>")},
		{"<|<|eot_id|>", append(tok.encode("<|"), eosToken)},
		{"", []int{}},
	} {
		t.Run(tc.text, func(t *testing.T) { require.Equal(t, tc.want, tok.encode(tc.text)) })
	}
	msgs := []chatMsg{{"user", "Hello there"}}
	// Llama-3: <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>
	// <|start_header_id|>assistant<|end_header_id|>\n\n is 12 tokens.
	require.Len(t, tok.encode(renderChat(toMessages(msgs), true)), 12)
}

func TestPlanOutputDeterministic(t *testing.T) {
	tok := testTokenizer(t)
	prompt := tok.encode("Tell me about prefix caching.")
	p := genParams{limit: 200}
	a := tok.planOutput(7, prompt, p)
	require.Equal(t, a, tok.planOutput(7, prompt, p), "same seed and prompt, same answer")
	require.NotEqual(t, a.tokens, tok.planOutput(8, prompt, p).tokens, "the configured seed changes the answer")
	seed := int64(42)
	p.seed = &seed
	require.NotEqual(t, a.tokens, tok.planOutput(7, prompt, p).tokens, "the request seed changes the answer")
}

// TestPlanOutputRetokenizes: the answer text tokenizes back to the generated tokens, also after
// the chat template's "\n\n" and before the next message's <|eot_id|>.
func TestPlanOutputRetokenizes(t *testing.T) {
	tok := testTokenizer(t)
	for i := 0; i < 300; i++ {
		prompt := []int{i, i + 1, i + 2}
		plan := tok.planOutput(0, prompt, genParams{limit: 120})
		words := plan.tokens
		if plan.reason == finishStop {
			require.Equal(t, eosToken, words[len(words)-1])
			words = words[:len(words)-1]
		}
		text := tok.detokenize(words)
		require.Equal(t, words, tok.encode(text)[:len(words)], "answer %q", text)
		framed := tok.encode("<|end_header_id|>\n\n" + text + "<|eot_id|>")
		require.Equal(t, append(append([]int{128007, 271}, words...), eosToken), framed, "answer %q in a template", text)
	}
}

func TestPlanOutputLengths(t *testing.T) {
	tok := testTokenizer(t)
	for _, tc := range []struct {
		name       string
		p          genParams
		minN, maxN int
		reason     string
	}{
		{"limit 1", genParams{limit: 1}, 1, 1, ""},
		{"ignore_eos generates exactly the limit", genParams{limit: 37, ignoreEOS: true}, 37, 37, finishLength},
		{"min_tokens holds EOS back", genParams{limit: 50, minTokens: 40}, 41, 50, ""},
		{"min_tokens equal to the limit", genParams{limit: 20, minTokens: 20}, 20, 20, finishLength},
		{"natural length within the limit", genParams{limit: 64}, 1, 64, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 200; i++ {
				plan := tok.planOutput(int64(i), []int{i}, tc.p)
				n := len(plan.tokens)
				require.GreaterOrEqual(t, n, tc.minN)
				require.LessOrEqual(t, n, tc.maxN)
				if tc.reason != "" {
					require.Equal(t, tc.reason, plan.reason)
				}
				require.Equal(t, plan.reason == finishLength, n == tc.p.limit && plan.tokens[n-1] != eosToken)
			}
		})
	}
}

type chatMsg struct{ role, content string }

// TestEncodePathologicalInput: inputs that are quadratic for a backtracking pre-tokenizer or a
// naive special-token scan still tokenize (in linear time; a regression makes this test take
// minutes), and round-trip to the same text.
func TestEncodePathologicalInput(t *testing.T) {
	tok := testTokenizer(t)
	for _, tc := range []struct{ name, text string }{
		{"newline-space run", strings.Repeat("\n ", 128<<10)},
		{"unterminated special markers", strings.Repeat("<|", 128<<10)},
		{"almost special tokens", strings.Repeat("<|eot_id", 32<<10)},
		{"short runs are exact", "a\n \n \n b" + strings.Repeat("\n", 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids := tok.encode(tc.text)
			require.NotEmpty(t, ids)
			var b strings.Builder
			for _, id := range ids {
				b.WriteString(tok.tokenString(id))
			}
			require.Equal(t, tc.text, b.String())
		})
	}
	short := "a\n \n \n b"
	ids, _, err := tok.codec.Encode(short)
	require.NoError(t, err)
	want := make([]int, len(ids))
	for i, id := range ids {
		want[i] = int(id)
	}
	require.Equal(t, want, tok.encode(short), "runs under the bound tokenize exactly as cl100k")
}
