package scheduling

import (
	"slices"

	"github.com/strata-inference/strata/internal/openai"
)

// Tokenizer is what plugins use of an internal/tokenizer.Tokenizer (contract C1) to see a
// prompt as the engine does.
type Tokenizer interface {
	// Name identifies the vocabulary ("llama-3"); requests cache their tokens under it.
	Name() string
	EncodeSpecial(text string) []int
	EncodeChat(msgs []openai.Message, addGenerationPrompt bool) []int
	BOS() (id int, ok bool)
}

// PromptTokens returns the prompt token ids of req as the engine computes them: req.TokenIDs
// when set; else, with t, the chat template of req.Messages with the generation prompt (vLLM's
// chat endpoint), or BOS + req.Prompt with special-token strings parsed (vLLM's completion
// endpoint, add_special_tokens). nil when neither applies. The result is computed once per
// request and tokenizer (cached in the request's cycle state) and must not be modified.
func PromptTokens(req *Request, t Tokenizer) []int {
	if req.TokenIDs != nil {
		return req.TokenIDs
	}
	if t == nil {
		return nil
	}
	key := "prompt-tokens/" + t.Name()
	if v, ok := req.Read(key); ok {
		return v.([]int)
	}
	var ids []int
	switch {
	case req.Messages != nil:
		ids = t.EncodeChat(req.Messages, true)
	case req.Prompt != "":
		ids = t.EncodeSpecial(req.Prompt)
		if bos, ok := t.BOS(); ok && (len(ids) == 0 || ids[0] != bos) {
			ids = slices.Insert(ids, 0, bos)
		}
	}
	req.Write(key, ids)
	return ids
}
