package sim

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/cespare/xxhash/v2"
)

// outputPlan is the whole answer of one request, decided when it arrives.
type outputPlan struct {
	tokens []int
	reason string // finishStop (last token is EOS) or finishLength
}

// genParams are the request fields that shape an answer.
type genParams struct {
	limit     int // most tokens to generate (>= 1)
	minTokens int
	ignoreEOS bool
	seed      *int64
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
		out = append(out, eosToken)
	}
	return outputPlan{tokens: out, reason: reason}
}
