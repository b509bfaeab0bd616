package tokenizer

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	tiktoken "github.com/tiktoken-go/tokenizer"
)

// arenaHard returns the 500 Arena-Hard v0.1 prompts (../shared/data/prompts).
func arenaHard(b *testing.B) []string {
	f, err := os.Open(sharedData(b, filepath.Join("prompts", "arenahard_v01_question.jsonl")))
	require.NoError(b, err)
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var q struct {
			Prompt string `json:"prompt"`
		}
		require.NoError(b, json.Unmarshal(sc.Bytes(), &q))
		out = append(out, q.Prompt)
	}
	require.NoError(b, sc.Err())
	return out
}

// BenchmarkEncode encodes all Arena-Hard prompts per iteration, with this package's tokenizers
// and, for comparison in the same run, github.com/tiktoken-go/tokenizer's cl100k_base.
// Reports tokens/s and bytes/s (MB/s).
func BenchmarkEncode(b *testing.B) {
	prompts := arenaHard(b)
	var size int64
	for _, p := range prompts {
		size += int64(len(p))
	}
	for _, name := range []string{"llama-3", "qwen2"} {
		tok := load(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			tokens := 0
			for b.Loop() {
				for _, p := range prompts {
					tokens += len(tok.Encode(p))
				}
			}
			b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
	codec, err := tiktoken.Get(tiktoken.Cl100kBase)
	require.NoError(b, err)
	b.Run("tiktoken-go-cl100k", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		tokens := 0
		for b.Loop() {
			for _, p := range prompts {
				ids, _, _ := codec.Encode(p)
				tokens += len(ids)
			}
		}
		b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
	})
}

// BenchmarkLoad is the first-use cost of a vocabulary (decompress, index, derive merges).
func BenchmarkLoad(b *testing.B) {
	for _, name := range []string{"llama-3", "qwen2"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := build(name, families[name]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
