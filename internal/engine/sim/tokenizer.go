package sim

import (
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer"

	"github.com/strata-inference/strata/internal/openai"
)

// Tokenization: a real byte-level BPE, OpenAI's cl100k_base from github.com/tiktoken-go/tokenizer
// (pure Go, vocabulary embedded), stands in for the model's own tokenizer until issue 3 brings
// the Llama-3 and Qwen vocabularies. Llama-3's BPE extends cl100k's (same pre-tokenizer pattern,
// 100k of its 128k merges), so ordinary text gets nearly the same counts; on top of cl100k the
// simulator knows Llama-3's special tokens with their real ids, so chat templates, BOS and EOS
// count exactly as on Llama-3.
//
// The vocabulary is loaded once per process, on the first New, and shared by every replica:
// the codec is immutable after loading and safe for concurrent use.

// Llama-3 special tokens (meta-llama/Meta-Llama-3-8B-Instruct tokenizer.json added_tokens).
const (
	bosToken = 128000 // <|begin_of_text|>
	// eosToken ends a generation that stops by itself: <|eot_id|>, Llama-3-Instruct's end of
	// turn. It is counted as a completion token and has no text, as in vLLM.
	eosToken = 128009
	// vocabSize is Llama-3's; larger prompt token ids are out of vocabulary.
	vocabSize = 128256
)

var specialTokens = map[string]int{
	"<|begin_of_text|>":   128000,
	"<|end_of_text|>":     128001,
	"<|start_header_id|>": 128006,
	"<|end_header_id|>":   128007,
	"<|eom_id|>":          128008,
	"<|eot_id|>":          128009,
	"<|python_tag|>":      128010,
}

type tokenizerSet struct {
	codec tokenizer.Codec
	// words are the generation vocabulary: entries whose three forms are single tokens.
	words []word
	// text maps every generation token to its text.
	text map[int]string
	// period and comma are the punctuation tokens of generated text.
	period, comma int
	// specialText maps Llama-3 special token ids to their text.
	specialText map[int]string
}

// word is one generation word in its three single-token forms.
type word struct {
	bare, spaced, capital int // "Word" (answer start), " word", " Word" (sentence start)
}

var shared struct {
	once     sync.Once
	tok      *tokenizerSet
	err      error
	loadTime time.Duration
}

// loadTokenizer returns the process-wide tokenizer, loading it on first use.
func loadTokenizer() (*tokenizerSet, error) {
	shared.once.Do(func() {
		start := time.Now()
		shared.tok, shared.err = newTokenizerSet()
		shared.loadTime = time.Since(start)
	})
	return shared.tok, shared.err
}

func newTokenizerSet() (*tokenizerSet, error) {
	codec, err := tokenizer.Get(tokenizer.Cl100kBase)
	if err != nil {
		return nil, fmt.Errorf("sim: load cl100k_base: %w", err)
	}
	t := &tokenizerSet{codec: codec, text: map[int]string{eosToken: ""}, specialText: map[int]string{}}
	for text, id := range specialTokens {
		t.specialText[id] = text
	}
	single := func(s string) (int, bool) {
		ids, _, err := codec.Encode(s)
		if err != nil || len(ids) != 1 {
			return 0, false
		}
		t.text[int(ids[0])] = s
		return int(ids[0]), true
	}
	var ok1, ok2 bool
	if t.period, ok1 = single("."); !ok1 {
		return nil, fmt.Errorf("sim: tokenizer lacks a single-token %q", ".")
	}
	if t.comma, ok2 = single(","); !ok2 {
		return nil, fmt.Errorf("sim: tokenizer lacks a single-token %q", ",")
	}
	for _, w := range strings.Fields(generationWords) {
		c := capitalize(w)
		bare, ok1 := single(c)
		spaced, ok2 := single(" " + w)
		capital, ok3 := single(" " + c)
		if ok1 && ok2 && ok3 {
			t.words = append(t.words, word{bare: bare, spaced: spaced, capital: capital})
		}
	}
	if len(t.words) < 100 {
		return nil, fmt.Errorf("sim: only %d generation words are single tokens", len(t.words))
	}
	return t, nil
}

func capitalize(w string) string {
	r := []rune(w)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}

// encode tokenizes text. Llama-3 special tokens written in the text become their ids, as
// Hugging Face tokenizers do; everything else is BPE-encoded with cl100k_base.
func (t *tokenizerSet) encode(text string) []int {
	out := make([]int, 0, len(text)/4+1)
	for len(text) > 0 {
		i := strings.Index(text, "<|")
		id, n := -1, 0
		for i >= 0 {
			if id, n = matchSpecial(text[i:]); id >= 0 {
				break
			}
			j := strings.Index(text[i+2:], "<|")
			if j < 0 {
				i = -1
				break
			}
			i += 2 + j
		}
		plain := text
		if i >= 0 {
			plain = text[:i]
		}
		out = t.encodePlain(out, plain)
		if i < 0 {
			break
		}
		out = append(out, id)
		text = text[i+n:]
	}
	return out
}

// encodePrompt tokenizes a completion prompt, starting it with BOS when addBOS.
func (t *tokenizerSet) encodePrompt(text string, addBOS bool) []int {
	ids := t.encode(text)
	if addBOS {
		ids = append([]int{bosToken}, ids...)
	}
	return ids
}

// maxSpecialLen bounds the length of a special token, so matching one is O(1).
const maxSpecialLen = len("<|start_header_id|>")

// maxWhitespaceRun bounds the whitespace runs handed to the BPE in one piece. The codec's
// pre-tokenizer is a backtracking regexp (dlclark/regexp2) that costs O(k^2) on a run of k
// whitespace characters mixing newlines ("\n \n \n ...": 64 KiB take 1.7 s, 1 MiB 7 min),
// where Hugging Face's tokenizers are linear. Longer runs are cut into pieces of about this
// size, preferably after a newline; their token counts can differ slightly from cl100k's.
const maxWhitespaceRun = 256

// encodePlain appends the BPE tokens of text, which holds no special token.
func (t *tokenizerSet) encodePlain(out []int, text string) []int {
	start, run := 0, 0
	for i, r := range text {
		if !unicode.IsSpace(r) {
			run = 0
			continue
		}
		run++
		if (run >= maxWhitespaceRun && r == '\n') || run >= 2*maxWhitespaceRun {
			end := i + utf8.RuneLen(r)
			out = t.appendBPE(out, text[start:end])
			start, run = end, 0
		}
	}
	return t.appendBPE(out, text[start:])
}

func (t *tokenizerSet) appendBPE(out []int, text string) []int {
	if text == "" {
		return out
	}
	ids, _, _ := t.codec.Encode(text) // ErrorModeNone: Encode does not fail
	for _, x := range ids {
		out = append(out, int(x))
	}
	return out
}

func matchSpecial(s string) (id, n int) {
	end := strings.Index(s[:min(len(s), maxSpecialLen)], "|>")
	if end < 0 {
		return -1, 0
	}
	if id, ok := specialTokens[s[:end+2]]; ok {
		return id, end + 2
	}
	return -1, 0
}

// tokenString returns the text of one token id for /tokenize's token_strs.
func (t *tokenizerSet) tokenString(id int) string {
	if s, ok := t.specialText[id]; ok {
		return s
	}
	if s, ok := t.text[id]; ok {
		return s
	}
	s, err := t.codec.Decode([]uint{uint(id)})
	if err != nil {
		return ""
	}
	return s
}

// detokenize returns the text of generated tokens (all from the generation vocabulary).
func (t *tokenizerSet) detokenize(ids []int) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(t.text[id])
	}
	return b.String()
}

// renderChat renders messages with the Llama 3 chat template (meta-llama/Meta-Llama-3-8B-Instruct
// tokenizer_config.json chat_template), as text:
//
//	<|begin_of_text|>{for each message: <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>}
//	[<|start_header_id|>assistant<|end_header_id|>\n\n]   (add_generation_prompt)
//
// CONTENT is trimmed, as the template's `| trim` does. Because the template ends with "\n\n"
// and generated answers start with a word, re-rendering a conversation that includes an answer
// tokenizes that answer to the same tokens it was generated as, so turn 2 hits turn 1's blocks.
func renderChat(messages []openai.Message, addGenerationPrompt bool) string {
	var b strings.Builder
	b.WriteString("<|begin_of_text|>")
	for _, m := range messages {
		b.WriteString("<|start_header_id|>")
		b.WriteString(m.Role)
		b.WriteString("<|end_header_id|>\n\n")
		b.WriteString(strings.TrimSpace(m.ContentText()))
		b.WriteString("<|eot_id|>")
	}
	if addGenerationPrompt {
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	}
	return b.String()
}

// generationWords are common English words; those that are single cl100k tokens in all three
// forms make up the generation vocabulary.
const generationWords = `
the of and to in is that for it as was with be by on not he this are or his from at which but
have an they you were her she there one all we their been has when who will more no if out so
said what up its about into than them can only other new some could time these two may then do
first any my now such like our over man me even most made after also did many before must
through back years where much your way well down should because each just those people how too
little state good very make world still own see men work long get here between both life being
under never day same another know while last might great old year off come since against go came
right used take three states himself few house use during without again place around however
home small found thought went say part once general high upon school every don does got united
left number course war until always away something fact though water less public put think
almost hand enough far took head yet government system better set told nothing night end why
called didn find look going asked later knew point next program city business give group toward
young days let room president side social given present several order national possible rather
second face per among form often important things early white case john become large big need
four within felt along children saw best church ever least power development light thing seemed
family interest want members others mind country area however done open god service certain kind
problem began different door thus help sense means whole matter perhaps itself york times law
human line above name example action company hands local show whether five history gave today
either act feet across taken past quite anything having seen death experience body word half
really week field car words already information tell together college shall money period held
keep sure real probably free seems political cannot behind miss question air office making brought
whose special major heard problems federal became study ago moment available known result street
economic boy position reason change south board individual job areas society west close turn love
community true court force full seem model data cache token request answer engine latency memory
`
