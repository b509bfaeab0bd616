package sim

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func testTokenizer(t testing.TB) *tokenizerSet {
	tok, err := loadTokenizerFor(ModelProfile{Tokenizer: defaultTokenizer})
	require.NoError(t, err)
	return tok
}

func testTokenizerFor(t testing.TB, model string) *tokenizerSet {
	m, err := LookupModel(model)
	require.NoError(t, err)
	tok, err := loadTokenizerFor(m)
	require.NoError(t, err)
	return tok
}

// families are the model profiles of each tokenizer family.
var families = []struct{ model, tokenizer string }{
	{"meta-llama/Llama-3.1-8B-Instruct", "llama-3"},
	{"Qwen/Qwen3-8B", "qwen2"},
}

func TestTokenizerLoadShared(t *testing.T) {
	a := testTokenizer(t)
	b := testTokenizerFor(t, "llama-3-70b")
	require.Same(t, a, b, "one tokenizer per family and process")
	require.Same(t, testTokenizerFor(t, "qwen3-8b"), testTokenizerFor(t, "qwen3-32b"))
	for _, f := range families {
		tok := testTokenizerFor(t, f.model)
		require.Equal(t, f.tokenizer, tok.Name())
		t.Logf("%s load: %v; %d generation words", f.tokenizer, sets.loadTime[f.tokenizer], len(tok.words))
		require.GreaterOrEqual(t, len(tok.words), 100)
	}
}

func TestProfileTokenizers(t *testing.T) {
	for name, p := range modelProfiles {
		want := "llama-3"
		if strings.HasPrefix(name, "qwen") {
			want = "qwen2"
		}
		require.Equal(t, want, p.Tokenizer, name)
	}
}

func TestEncodeSpecialTokens(t *testing.T) {
	tok := testTokenizer(t)
	eot := tok.EOS()
	for _, tc := range []struct {
		text string
		want []int
	}{
		{"Hello world", []int{9906, 1917}},
		{"<|begin_of_text|>Hello", []int{128000, 9906}},
		{"a<|eot_id|>", []int{64, eot}},
		{"<|not_special|>", tok.Encode("<|not_special|>")},
		{"<|<|eot_id|>", append(tok.Encode("<|"), eot)},
		{"", []int{}},
	} {
		t.Run(tc.text, func(t *testing.T) { require.Equal(t, tc.want, tok.encode(tc.text)) })
	}
	msgs := []chatMsg{{"user", "Hello there"}}
	// Llama-3: <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>
	// <|start_header_id|>assistant<|end_header_id|>\n\n is 12 tokens.
	require.Len(t, tok.EncodeChat(toMessages(msgs), true), 12)
	require.Equal(t, tok.EncodeChat(toMessages(msgs), true), tok.encode(renderChat(toMessages(msgs), true)))
	// Qwen3: <|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n is 10 tokens, no BOS.
	qwen := testTokenizerFor(t, "qwen3-8b")
	require.Equal(t, []int{151644, 872, 198, 9707, 1052, 151645, 198, 151644, 77091, 198}, qwen.EncodeChat(toMessages(msgs), true))
	require.Equal(t, qwen.encode("Hi"), qwen.encodePrompt("Hi", true), "Qwen adds no BOS")
	require.Equal(t, append([]int{128000}, tok.encode("Hi")...), tok.encodePrompt("Hi", true))
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

// TestPlanOutputRetokenizes: the answer text tokenizes back to the generated tokens, also
// inside the family's chat template (after the generation prompt, before the end of turn), so a
// follow-up turn's prompt shares the first turn's blocks.
func TestPlanOutputRetokenizes(t *testing.T) {
	for _, f := range families {
		t.Run(f.tokenizer, func(t *testing.T) {
			tok := testTokenizerFor(t, f.model)
			for i := 0; i < 300; i++ {
				prompt := []int{i, i + 1, i + 2}
				plan := tok.planOutput(0, prompt, genParams{limit: 120})
				words := plan.tokens
				if plan.reason == finishStop {
					require.Equal(t, tok.EOS(), words[len(words)-1])
					words = words[:len(words)-1]
				}
				text := tok.detokenize(words)
				require.Equal(t, text, plan.text)
				require.Equal(t, words, tok.encode(text), "answer %q", text)
				msgs := toMessages([]chatMsg{{"user", "Hi"}, {"assistant", text}, {"user", "More"}})
				turn2 := tok.EncodeChat(msgs, true)
				turn1 := tok.EncodeChat(msgs[:1], true)
				require.Equal(t, append(append(turn1, words...), tok.EOS()), turn2[:len(turn1)+len(words)+1], "answer %q in a template", text)
			}
		})
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
				require.Equal(t, plan.reason == finishLength, n == tc.p.limit && plan.tokens[n-1] != tok.EOS())
				require.Nil(t, plan.stopReason)
			}
		})
	}
}

// TestPlanOutputStops: stop strings and stop token ids cut the planned answer as vLLM does.
func TestPlanOutputStops(t *testing.T) {
	tok := testTokenizer(t)
	base := tok.planOutput(3, []int{1, 2, 3}, genParams{limit: 100, ignoreEOS: true})
	full := base.text
	require.Len(t, base.tokens, 100)
	// A stop string taken from the middle of the answer: the third word's text.
	k := 2
	w := tok.text[base.tokens[k]]
	stop := strings.TrimSpace(w)
	first := strings.Index(full, stop)
	// The token whose text completes the first occurrence.
	end := 0
	for end < len(base.ends) && base.ends[end] < first+len(stop) {
		end++
	}

	for _, tc := range []struct {
		name       string
		p          genParams
		tokens     int
		text       string
		reason     string
		stopReason any
	}{
		{"stop string excluded", genParams{stop: []string{stop}}, end + 1, full[:first], finishStop, stop},
		{"stop string included", genParams{stop: []string{stop}, includeStop: true}, end + 1, full[:first+len(stop)], finishStop, stop},
		{"first stop of the list wins", genParams{stop: []string{"zzz-absent", stop}}, end + 1, full[:first], finishStop, stop},
		{"stop string never found", genParams{stop: []string{"zzz-absent"}}, 100, full, finishLength, nil},
		{"stop token id", genParams{stopTokenIDs: []int{base.tokens[k]}}, k + 1, full[:base.ends[k-1]], finishStop, base.tokens[k]},
		{"stop token id included", genParams{stopTokenIDs: []int{base.tokens[k]}, includeStop: true}, k + 1, full[:base.ends[k]], finishStop, base.tokens[k]},
		{"stop token masked by min_tokens", genParams{stopTokenIDs: []int{base.tokens[k]}, minTokens: 99}, 100, full, finishLength, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.limit, p.ignoreEOS = 100, true
			plan := tok.planOutput(3, []int{1, 2, 3}, p)
			if tc.name == "stop token id" || tc.name == "stop token id included" {
				// the id may occur earlier than k: the first occurrence ends the answer
				if i := indexOf(base.tokens, base.tokens[k]); i < k {
					t.Skipf("token at %d repeats an earlier one", k)
				}
			}
			require.Equal(t, tc.reason, plan.reason)
			require.Equal(t, tc.stopReason, plan.stopReason)
			require.Len(t, plan.tokens, tc.tokens)
			require.Equal(t, base.tokens[:tc.tokens], plan.tokens, "the tokens before the stop are unchanged")
			require.Equal(t, tc.text, plan.text)
			// A stream never shows text beyond the final text, and ends with all of it.
			sent, streamed := 0, ""
			for g := 1; g <= len(plan.tokens); g++ {
				streamed += plan.delta(&sent, g, g == len(plan.tokens))
				require.True(t, strings.HasPrefix(plan.text, streamed))
			}
			require.Equal(t, plan.text, streamed)
		})
	}
	// Cut short by the engine (finished before the plan's end): the text of the generated tokens,
	// nothing held back, and no stop_reason.
	cutPlan := tok.planOutput(3, []int{1, 2, 3}, genParams{limit: 100, ignoreEOS: true, stop: []string{"zzz-absent"}})
	require.Equal(t, full[:base.ends[9]], cutPlan.visibleText(10, true))
	require.Equal(t, full[:base.ends[9]-len("zzz-absent")+1], cutPlan.visibleText(10, false), "held back while running")
	require.Nil(t, cutPlan.finalStopReason(10, finishLength))
	// ignore_eos leaves stop strings working; EOS itself gives stop_reason null.
	natural := tok.planOutput(5, []int{9}, genParams{limit: 100})
	require.Equal(t, finishStop, natural.reason)
	require.Nil(t, natural.stopReason)
}

func indexOf(s []int, v int) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestParseStop(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want []string
		err  string
	}{
		{``, nil, ""}, {`null`, nil, ""}, {`"x"`, []string{"x"}, ""}, {`["a","bc"]`, []string{"a", "bc"}, ""},
		{`[]`, []string{}, ""}, {`""`, nil, "stop cannot contain an empty string."}, {`["a",""]`, nil, "empty string"},
		{`3`, nil, "valid list"}, {`[1]`, nil, "valid list"},
	} {
		got, err := parseStop([]byte(tc.raw))
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.raw)
			continue
		}
		require.NoError(t, err, tc.raw)
		require.Equal(t, tc.want, got, tc.raw)
	}
}

type chatMsg struct{ role, content string }

// TestEncodePathologicalInput: inputs that are quadratic for a backtracking pre-tokenizer or a
// naive special-token scan still tokenize (in linear time; a regression makes this test take
// minutes), and round-trip to the same text.
func TestEncodePathologicalInput(t *testing.T) {
	for _, f := range families {
		tok := testTokenizerFor(t, f.model)
		for _, tc := range []struct{ name, text string }{
			{"newline-space run", strings.Repeat("\n ", 128<<10)},
			{"unterminated special markers", strings.Repeat("<|", 128<<10)},
			{"almost special tokens", strings.Repeat("<|eot_id", 32<<10)},
			{"almost special tokens", strings.Repeat("<|im_end", 32<<10)},
		} {
			t.Run(f.tokenizer+" "+tc.name, func(t *testing.T) {
				ids := tok.encode(tc.text)
				require.NotEmpty(t, ids)
				require.Equal(t, tc.text, tok.decodeAny(ids))
			})
		}
	}
}

// FuzzParseStop: any "stop" value is accepted or rejected with an error, never a panic, and an
// accepted list has no empty string.
func FuzzParseStop(f *testing.F) {
	for _, s := range []string{`"x"`, `["a","b"]`, `null`, `""`, `[""]`, `3`, `{"a":1}`, `["a",1]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		stops, err := parseStop([]byte(s))
		if err != nil {
			require.Nil(t, stops)
			return
		}
		for _, x := range stops {
			require.NotEmpty(t, x)
		}
	})
}
