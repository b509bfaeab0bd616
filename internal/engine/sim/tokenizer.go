package sim

import (
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/tokenizer"
)

// Tokenization: each model profile names its tokenizer (ModelProfile.Tokenizer), and the
// simulator tokenizes with the model's real vocabulary (internal/tokenizer: Llama 3's 128k or
// Qwen2/Qwen3's 151k byte-level BPE), chat template, BOS and EOS, so prompt token counts, prefix
// cache blocks and /tokenize answers are those of vLLM serving that model.
//
// Vocabularies are loaded once per process and shared by every replica; a tokenizerSet adds the
// generation vocabulary of the simulated answers and is shared per tokenizer too.

// tokenizerSet is the tokenizer of one model family plus the words answers are made of.
type tokenizerSet struct {
	*tokenizer.Tokenizer
	// words are the generation vocabulary: entries whose three forms are single tokens.
	words []word
	// text maps every generation token to its text.
	text map[int]string
	// period and comma are the punctuation tokens of generated text.
	period, comma int
	// eos ends an answer that stops by itself (the family's end of turn: <|eot_id|>,
	// <|im_end|>). It is counted as a completion token and has no text, as in vLLM.
	eos int
}

// word is one generation word in its three single-token forms.
type word struct {
	bare, spaced, capital int // "Word" (answer start), " word", " Word" (sentence start)
}

var sets struct {
	mu       sync.Mutex
	byName   map[string]*tokenizerSet
	loadTime map[string]time.Duration
}

// loadTokenizerFor returns the process-wide tokenizer of model's family, loading it on first use.
func loadTokenizerFor(model ModelProfile) (*tokenizerSet, error) {
	name := model.Tokenizer
	if name == "" {
		name = defaultTokenizer
	}
	sets.mu.Lock()
	defer sets.mu.Unlock()
	if t, ok := sets.byName[name]; ok {
		return t, nil
	}
	start := time.Now()
	t, err := newTokenizerSet(name)
	if err != nil {
		return nil, err
	}
	if sets.byName == nil {
		sets.byName, sets.loadTime = map[string]*tokenizerSet{}, map[string]time.Duration{}
	}
	sets.byName[name] = t
	sets.loadTime[name] = time.Since(start)
	return t, nil
}

// defaultTokenizer serves a profile that names none.
const defaultTokenizer = "llama-3"

func newTokenizerSet(name string) (*tokenizerSet, error) {
	tok, err := tokenizer.Load(name)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	t := &tokenizerSet{Tokenizer: tok, eos: tok.EOS(), text: map[int]string{tok.EOS(): ""}}
	single := func(s string) (int, bool) {
		ids := tok.Encode(s)
		if len(ids) != 1 {
			return 0, false
		}
		t.text[ids[0]] = s
		return ids[0], true
	}
	var ok1, ok2 bool
	if t.period, ok1 = single("."); !ok1 {
		return nil, fmt.Errorf("sim: tokenizer %s lacks a single-token %q", name, ".")
	}
	if t.comma, ok2 = single(","); !ok2 {
		return nil, fmt.Errorf("sim: tokenizer %s lacks a single-token %q", name, ",")
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
		return nil, fmt.Errorf("sim: only %d generation words are single tokens of %s", len(t.words), name)
	}
	return t, nil
}

func capitalize(w string) string {
	r := []rune(w)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}

// encode tokenizes prompt text as vLLM does: added tokens written in the text ("<|eot_id|>")
// become their ids, as Hugging Face tokenizers do by default; no BOS.
func (t *tokenizerSet) encode(text string) []int { return t.EncodeSpecial(text) }

// encodePrompt tokenizes a completion prompt, starting it with BOS when addBOS and the family
// has one (add_special_tokens: Llama 3 adds <|begin_of_text|>, Qwen none).
func (t *tokenizerSet) encodePrompt(text string, addBOS bool) []int {
	ids := t.EncodeSpecial(text)
	if bos, ok := t.BOS(); ok && addBOS {
		ids = append([]int{bos}, ids...)
	}
	return ids
}

// tokenString returns a token's piece for /tokenize's token_strs (vLLM:
// tokenizer.convert_ids_to_tokens), "" for an id without a token.
func (t *tokenizerSet) tokenString(id int) string {
	s, _ := t.TokenString(id)
	return s
}

// detokenize returns the text of token ids, skipping special tokens (vLLM's default
// skip_special_tokens=True for generated text).
func (t *tokenizerSet) detokenize(ids []int) string {
	var b strings.Builder
	for _, id := range ids {
		if s, ok := t.text[id]; ok {
			b.WriteString(s)
		} else if !t.IsSpecial(id) {
			b.Write(t.TokenBytes(id))
		}
	}
	return b.String()
}

// decodeAny is /detokenize and the text of token-id embedding inputs: vLLM's /detokenize calls
// transformers' tokenizer.decode, which skips nothing (special tokens included) and, for Llama 3
// (clean_up_tokenization_spaces true), removes spaces before punctuation and contractions.
func (t *tokenizerSet) decodeAny(ids []int) string { return t.TransformersDecode(ids) }

// inVocab reports whether id is a token of the vocabulary (vLLM rejects prompts with others).
func (t *tokenizerSet) inVocab(id int) bool { return id >= 0 && id < t.VocabSize() }

// renderChat renders messages with the chat template of the default tokenizer (Llama 3), for
// tests on the default model; the server renders with its model's tokenizer (EncodeChat).
func renderChat(messages []openai.Message, addGenerationPrompt bool) string {
	t, err := tokenizer.Load(defaultTokenizer)
	if err != nil {
		panic(err) // embedded data: cannot fail after the package tests pass
	}
	return t.ApplyChatTemplate(messages, addGenerationPrompt)
}

// generationWords are common English words; those that are single tokens in all three forms
// make up the generation vocabulary.
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
