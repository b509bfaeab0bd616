package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"golang.org/x/text/unicode/norm"
)

// sharedData is ../shared/data seen from the repository root.
func sharedData(t testing.TB, rel string) string {
	p := filepath.Join("..", "..", "..", "shared", "data", rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("reference data %s is absent (%v): run from a checkout next to ../shared/data", p, err)
	}
	return p
}

func load(t testing.TB, name string) *Tokenizer {
	tok, err := Load(name)
	require.NoError(t, err)
	return tok
}

// TestVectors: every pair of llama.cpp's reference tokenizations (ggml-vocab-llama-bpe and
// ggml-vocab-qwen2 .inp/.out, made with the Hugging Face tokenizers of the models) encodes
// exactly, and decodes back to its text.
func TestVectors(t *testing.T) {
	for _, tc := range []struct{ name, file string }{
		{"llama-3", "llama3_vectors.json"},
		{"qwen2", "qwen2_vectors.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(sharedData(t, filepath.Join("tokenizer", tc.file)))
			require.NoError(t, err)
			var vectors []struct {
				Text string `json:"text"`
				IDs  []int  `json:"ids"`
			}
			require.NoError(t, json.Unmarshal(b, &vectors))
			require.NotEmpty(t, vectors)
			tok := load(t, tc.name)
			for i, v := range vectors {
				got := tok.Encode(v.Text)
				if len(v.IDs) == 0 {
					got = []int{}
					require.Empty(t, tok.Encode(v.Text))
				}
				require.Equal(t, v.IDs, got, "vector %d %q", i, v.Text)
				require.Equal(t, v.IDs, tok.EncodeSpecial(v.Text), "vector %d %q", i, v.Text)
				want := v.Text
				if tc.name == "qwen2" {
					want = norm.NFC.String(want)
				}
				require.Equal(t, want, tok.Decode(v.IDs), "vector %d", i)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	_, err := Load("gpt-2")
	require.ErrorIs(t, err, ErrUnknown)
	var wg sync.WaitGroup
	got := make([]*Tokenizer, 8)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], _ = Load("llama-3") }()
	}
	wg.Wait()
	for _, g := range got {
		require.Same(t, got[0], g, "one tokenizer per process")
	}
	for _, tc := range []struct {
		name       string
		vocab, eos int
		bos        int
		hasBOS     bool
	}{
		{"llama-3", 128256, 128009, 128000, true},
		{"qwen2", 151669, 151645, -1, false},
	} {
		tok := load(t, tc.name)
		require.Equal(t, tc.name, tok.Name())
		require.Equal(t, tc.vocab, tok.VocabSize())
		require.Equal(t, tc.eos, tok.EOS())
		bos, ok := tok.BOS()
		require.Equal(t, tc.hasBOS, ok)
		if ok {
			require.Equal(t, tc.bos, bos)
		}
	}
}

func TestSpecialTokens(t *testing.T) {
	llama, qwen := load(t, "llama-3"), load(t, "qwen2")
	for _, tc := range []struct {
		tok  *Tokenizer
		text string
		want []int
	}{
		{llama, "<|begin_of_text|>Hi<|eot_id|>", []int{128000, 13347, 128009}},
		{llama, "<|start_header_id|>user<|end_header_id|>", []int{128006, 882, 128007}},
		{llama, "<|reserved_special_token_250|>", []int{128255}},
		{llama, "<|reserved_special_token_4|><|reserved_special_token_5|>", []int{128008, 128010}},
		{qwen, "<|im_start|>user\nHi<|im_end|>", []int{151644, 872, 198, 13048, 151645}},
		{qwen, "<think>\n\n</think>", []int{151667, 271, 151668}},
		{qwen, "<tool_call>", []int{151657}},
	} {
		t.Run(tc.tok.Name()+" "+tc.text, func(t *testing.T) {
			require.Equal(t, tc.want, tc.tok.EncodeSpecial(tc.text))
			require.Equal(t, tc.text, tc.tok.Decode(tc.want))
			plain := tc.tok.Encode(tc.text)
			require.NotContains(t, plain, tc.want[0], "Encode leaves special-token strings as text")
			require.Equal(t, tc.text, tc.tok.Decode(plain))
		})
	}
	// Llama 3.1's names for reserved tokens encode to the same ids.
	require.Equal(t, []int{128004, 128008, 128010}, llama.EncodeSpecial("<|finetune_right_pad_id|><|eom_id|><|python_tag|>"))
	// Not a special token, or one cut short: ordinary text.
	for _, s := range []string{"<|not_special|>", "<|eot_id", "<|<|eot_id|>"} {
		ids := llama.EncodeSpecial(s)
		require.Equal(t, s, llama.Decode(ids))
		require.Equal(t, strings.Contains(s, "<|eot_id|>"), len(ids) > 0 && ids[len(ids)-1] == 128009, s)
	}
}

func TestTokenString(t *testing.T) {
	llama := load(t, "llama-3")
	ids := llama.Encode(" Hello\n")
	var strs []string
	for _, id := range ids {
		s, ok := llama.TokenString(id)
		require.True(t, ok)
		strs = append(strs, s)
	}
	require.Equal(t, []string{"ĠHello", "Ċ"}, strs, "GPT-2 byte-level alphabet, as convert_ids_to_tokens")
	s, ok := llama.TokenString(128009)
	require.True(t, ok)
	require.Equal(t, "<|eot_id|>", s)
	for _, id := range []int{-1, 128256, 1 << 30} {
		_, ok := llama.TokenString(id)
		require.False(t, ok, id)
		require.Empty(t, llama.Decode([]int{id}))
	}
	require.True(t, llama.IsSpecial(128000))
	require.False(t, llama.IsSpecial(9906))
}

func TestDecodeLossy(t *testing.T) {
	llama := load(t, "llama-3")
	ids := llama.Encode("€") // three bytes: see how the vocabulary splits it
	all := llama.Decode(ids)
	require.Equal(t, "€", all)
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte{0xE2, 0x82}, "\uFFFD"},
		{[]byte{0xE2, 0x82, 'a'}, "\uFFFDa"},
		{[]byte{0xFF, 'a', 0xC0, 0xAF}, "\uFFFDa\uFFFD\uFFFD"},
		{[]byte{0xF0, 0x9F, 0x98}, "\uFFFD"},
		{[]byte{0xED, 0xA0, 0x80}, "\uFFFD\uFFFD\uFFFD"}, // surrogate: 0xED takes 0x80..0x9F only
	} {
		require.Equal(t, tc.want, lossyUTF8(tc.in), "%x", tc.in)
	}
}

// TestBPEScanMatchesHeap: the quadratic and the heap merge loops agree on long pieces.
func TestBPEScanMatchesHeap(t *testing.T) {
	for _, name := range []string{"llama-3", "qwen2"} {
		tok := load(t, name)
		for _, piece := range []string{
			strings.Repeat("a", 300), strings.Repeat(" ", 200), strings.Repeat("ab", 150),
			"Pneumonoultramicroscopicsilicovolcanoconiosis" + strings.Repeat("xyz", 40),
			strings.Repeat("日本語", 50),
		} {
			syms := make([]int32, len(piece))
			for i := 0; i < len(piece); i++ {
				syms[i] = int32(tok.byteID[piece[i]])
			}
			require.Equal(t, tok.bpeScan(nil, syms), tok.bpeHeap(nil, piece), "%s %q", name, piece[:20])
		}
	}
}

// TestPathologicalInputs: long runs that are quadratic for a backtracking regexp or a naive BPE
// tokenize fast and round-trip.
func TestPathologicalInputs(t *testing.T) {
	for _, name := range []string{"llama-3", "qwen2"} {
		tok := load(t, name)
		for _, s := range []string{
			strings.Repeat("\n \n ", 1<<13), strings.Repeat(" ", 1<<15), strings.Repeat("a", 1<<15),
			strings.Repeat("1", 1<<15), strings.Repeat("!", 1<<15),
		} {
			ids := tok.Encode(s)
			require.Equal(t, s, tok.Decode(ids))
			require.LessOrEqual(t, len(ids), len(s))
		}
	}
}

func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", "Hello world", " 'll 'LL 's", "ied 4 ½ months", "\n\n \t x", "<|eot_id|>", "Führer", "🦙🦙 3333333", "e\u0301"} {
		f.Add(s)
	}
	llama, qwen := load(f, "llama-3"), load(f, "qwen2")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // request bodies are JSON: always valid UTF-8
		}
		require.Equal(t, s, llama.Decode(llama.Encode(s)))
		require.Equal(t, s, llama.Decode(llama.EncodeSpecial(s)))
		n := norm.NFC.String(s)
		require.Equal(t, n, qwen.Decode(qwen.Encode(s)))
		for _, id := range qwen.Encode(s) {
			require.False(t, qwen.IsSpecial(id))
		}
		for _, id := range llama.Encode(s) {
			require.False(t, llama.IsSpecial(id))
		}
	})
}

// TestConcurrentUse: one Tokenizer serves many goroutines (run with -race).
func TestConcurrentUse(t *testing.T) {
	for _, name := range []string{"llama-3", "qwen2"} {
		tok := load(t, name)
		want := tok.EncodeSpecial("<|im_start|>Hello <|eot_id|> world 12345 日本語")
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 {
					require.Equal(t, want, tok.EncodeSpecial("<|im_start|>Hello <|eot_id|> world 12345 日本語"))
				}
			}()
		}
		wg.Wait()
	}
}

func TestTransformersDecode(t *testing.T) {
	llama, qwen := load(t, "llama-3"), load(t, "qwen2")
	for _, tc := range []struct{ in, llama string }{
		{"Hello , world . Isn't it ? I 'm here !", "Hello, world. Isn't it? I'm here!"},
		{"x  ' m", "x'm"}, // chained replacements, as transformers
		{"do n't 's 've 're", "don't's've're"},
		{"plain text", "plain text"},
	} {
		require.Equal(t, tc.llama, llama.TransformersDecode(llama.Encode(tc.in)), tc.in)
		require.Equal(t, tc.in, qwen.TransformersDecode(qwen.Encode(tc.in)), "qwen2 does not clean up: %s", tc.in)
	}
}
