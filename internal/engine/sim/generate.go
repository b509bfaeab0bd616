package sim

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// outputPlan is the whole answer of one request, decided when it arrives: the tokens the engine
// will generate and the text the client will see.
type outputPlan struct {
	tokens []int
	reason string // finishStop or finishLength
	// stopReason is vLLM's stop_reason: nil (EOS, or a length cut), the matched stop string, or
	// the matched stop token id.
	stopReason any
	// text is the final output text: the tokens' text, cut at a stop string (vLLM excludes the
	// stop string unless include_stop_str_in_output) and without the text of a stop token.
	text string
	// ends[i] is the length of the uncut text of tokens[:i+1].
	ends []int
	// holdBack is how many trailing characters a stream holds back until the request finishes,
	// so that a stop string is never streamed before it is recognised (vLLM's
	// stop_buffer_length: the longest stop string's length - 1, 0 with include_stop_str_in_output).
	holdBack int
}

// genParams are the request fields that shape an answer (vllm/sampling_params.py SamplingParams).
type genParams struct {
	limit     int // most tokens to generate (>= 1)
	minTokens int
	ignoreEOS bool
	seed      *int64
	// stop strings end the answer where they first appear in its text; stopTokenIDs end it at
	// one of these tokens; includeStop keeps the matched stop string (or stop token's text).
	stop         []string
	stopTokenIDs []int
	includeStop  bool
}

// genParams are the answer-shaping fields of a request whose stop was checked by parseStop,
// with an output limit of limit tokens.
func (r *genRequest) genParams(limit int) genParams {
	stops, _ := parseStop(r.Stop)
	return genParams{limit: limit, minTokens: r.MinTokens, ignoreEOS: r.IgnoreEOS, seed: r.Seed,
		stop: stops, stopTokenIDs: r.StopTokenIDs, includeStop: r.IncludeStopStrInOutput}
}

// parseStop decodes a request's "stop": a string, a list of strings, or null (vLLM's
// `stop: str | list[str] | None`). An empty string is rejected as SamplingParams._verify_args
// does ("stop cannot contain an empty string.").
func parseStop(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var stops []string
	var one string
	if json.Unmarshal(raw, &one) == nil {
		stops = []string{one}
	} else if json.Unmarshal(raw, &stops) != nil {
		return nil, validationError("list_type", "'stop', 'list[str]'", "Input should be a valid list")
	}
	if slices.Contains(stops, "") {
		return nil, badRequest("stop", "stop cannot contain an empty string.")
	}
	return stops, nil
}

// planOutput decides a request's answer, deterministically from (configured seed, request seed,
// prompt tokens): the same inputs always give the same tokens.
//
// The natural length is uniform in [max(2, limit/2), limit] (a real model seldom answers with EOS
// alone, and an empty answer helps no one trying the stack); an answer shorter than limit ends with EOS
// (finish_reason "stop"), one of length limit is cut (finish_reason "length"). With ignore_eos
// exactly limit tokens are generated; min_tokens delays EOS as vLLM's MinTokensLogitsProcessor
// does. The text is English words with sentence punctuation, each word a single token and each
// word boundary a pre-tokenizer boundary, so the answer text re-tokenizes to the same tokens.
//
// Stop conditions then cut the answer as vLLM's engine and detokenizer do, token by token
// (vllm/v1/core/sched/utils.py check_stop, vllm/v1/engine/detokenizer.py update and
// check_stop_strings):
//   - a token in stop_token_ids ends the answer with finish_reason "stop" and stop_reason the id;
//     it counts as a completion token but its text is not shown unless
//     include_stop_str_in_output; it is masked (not honoured) while fewer than min_tokens tokens
//     precede it. ignore_eos does not disable it.
//   - a stop string is searched in the text each token adds (plus the stop string's length - 1
//     characters before it), once more than min_tokens tokens exist, in the order of the stop
//     list; the first found ends the answer with finish_reason "stop" (even on the last allowed
//     token) and stop_reason the string, and the text is cut before it (after it with
//     include_stop_str_in_output). The token that completed it counts as generated.
//
// Generated text is ASCII, so character offsets (Python's) are byte offsets here.
func (t *tokenizerSet) planOutput(cfgSeed int64, prompt []int, p genParams) outputPlan {
	var buf [8]byte
	d := xxhash.New()
	binary.LittleEndian.PutUint64(buf[:], uint64(cfgSeed))
	_, _ = d.Write(buf[:])
	if p.seed != nil {
		binary.LittleEndian.PutUint64(buf[:], uint64(*p.seed))
		_, _ = d.Write([]byte{1})
		_, _ = d.Write(buf[:])
	} else {
		_, _ = d.Write([]byte{0})
	}
	for _, id := range prompt {
		binary.LittleEndian.PutUint32(buf[:4], uint32(id))
		_, _ = d.Write(buf[:4])
	}
	h := d.Sum64()
	rng := rand.New(rand.NewPCG(h, h^0x9e3779b97f4a7c15))

	lo := min(p.limit, max(2, p.limit/2))
	n := lo + rng.IntN(p.limit-lo+1)
	reason := finishStop
	if p.ignoreEOS {
		n = p.limit
	}
	if !p.ignoreEOS && n-1 < p.minTokens {
		n = p.minTokens + 1 // EOS is masked until min_tokens tokens exist
	}
	if p.ignoreEOS || n >= p.limit {
		n = p.limit
		reason = finishLength
	}
	words := n
	if reason == finishStop {
		words-- // the last token is EOS
	}
	out := make([]int, 0, n)
	sentenceStart := true
	for len(out) < words {
		w := t.words[rng.IntN(len(t.words))]
		switch {
		case len(out) == 0:
			out = append(out, w.bare)
		case sentenceStart:
			out = append(out, w.capital)
		default:
			out = append(out, w.spaced)
		}
		sentenceStart = false
		// Punctuation follows a word, never starts or ends an answer that stops by itself.
		if len(out) < words-1 {
			switch r := rng.IntN(24); {
			case r < 2:
				out = append(out, t.period)
				sentenceStart = true
			case r < 3:
				out = append(out, t.comma)
			}
		}
	}
	if reason == finishStop {
		out = append(out, t.eos)
	}
	return t.applyStops(outputPlan{tokens: out, reason: reason}, p)
}

// applyStops cuts plan at the first stop token or stop string (see planOutput) and fills in
// its text.
func (t *tokenizerSet) applyStops(plan outputPlan, p genParams) outputPlan {
	if len(p.stop) > 0 && !p.includeStop {
		for _, s := range p.stop {
			plan.holdBack = max(plan.holdBack, utf8.RuneCountInString(s)-1)
		}
	}
	var text strings.Builder
	plan.ends = make([]int, 0, len(plan.tokens))
	cut := -1 // text length to cut to, -1: no cut
	for i, id := range plan.tokens {
		last := i == len(plan.tokens)-1
		// The engine's check_stop: EOS (the planned last token), then stop_token_ids.
		stopToken := !(last && plan.reason == finishStop && id == t.eos) && i >= p.minTokens && slices.Contains(p.stopTokenIDs, id)
		eosStop := last && plan.reason == finishStop && id == t.eos
		added := 0
		if (!stopToken && !eosStop) || p.includeStop {
			s := t.text[id]
			text.WriteString(s)
			added = len(s)
		}
		plan.ends = append(plan.ends, text.Len())
		if stopToken {
			plan.tokens, plan.ends = plan.tokens[:i+1], plan.ends[:i+1]
			plan.reason, plan.stopReason = finishStop, id
		}
		// The detokenizer's stop strings, on the text this token added.
		if added > 0 && i+1 > p.minTokens {
			if s, at, ok := findStop(text.String(), added, p.stop, p.includeStop); ok {
				plan.tokens, plan.ends = plan.tokens[:i+1], plan.ends[:i+1]
				plan.reason, plan.stopReason, cut = finishStop, s, at
				break
			}
		}
		if stopToken {
			break
		}
	}
	plan.text = text.String()
	if cut >= 0 {
		plan.text = plan.text[:cut]
	}
	return plan
}

// findStop is vLLM's check_stop_strings (vllm/v1/engine/detokenizer.py): for each stop string
// in order, search text from newChars + len(stop) - 1 characters before its end; the first found
// wins. It returns the string and the length to cut the text to: its start, or its end when
// include.
func findStop(text string, newChars int, stops []string, include bool) (string, int, bool) {
	for _, s := range stops {
		from := max(0, len(text)+1-newChars-len(s))
		i := strings.Index(text[from:], s)
		if i < 0 {
			continue
		}
		at := from + i
		if include {
			at += len(s)
		}
		return s, min(at, len(text)), true
	}
	return "", 0, false
}

// visibleText is the text a client has seen once generated tokens exist: all of it when the
// request finished its plan, else the uncut text minus the held-back tail (vLLM's
// get_next_output_text; nothing is held back once finished, e.g. cut short by the engine),
// never beyond the final text.
func (p *outputPlan) visibleText(generated int, finished bool) string {
	if finished && generated >= len(p.tokens) {
		return p.text
	}
	if generated <= 0 || len(p.ends) == 0 {
		return ""
	}
	hold := p.holdBack
	if finished {
		hold = 0
	}
	n := min(p.ends[min(generated, len(p.ends))-1]-hold, len(p.text))
	return p.text[:max(n, 0)]
}

// delta returns the text to stream after generated tokens (finished: the request is done) and
// advances *sent, the number of text bytes already streamed.
func (p *outputPlan) delta(sent *int, generated int, finished bool) string {
	v := p.visibleText(generated, finished)
	if len(v) <= *sent {
		return ""
	}
	d := v[*sent:]
	*sent = len(v)
	return d
}

// finalStopReason is the stop_reason of a finished request that generated generated tokens
// with finish reason reason: the plan's when the engine ran the plan to its end.
func (p *outputPlan) finalStopReason(generated int, reason string) any {
	if reason == p.reason && generated == len(p.tokens) {
		return p.stopReason
	}
	return nil
}
