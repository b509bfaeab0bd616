package tokenizer

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// corpusTexts reads a prompt file of ../shared/data/prompts as TestReferenceCorpora orders it.
func corpusTexts(t *testing.T, file string) []string {
	f, err := os.Open(sharedData(t, filepath.Join("prompts", file)))
	require.NoError(t, err)
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var row struct {
			Prompt   string   `json:"prompt"`
			Turns    []string `json:"turns"`
			Question string   `json:"question"`
			Answer   string   `json:"answer"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &row))
		switch {
		case row.Prompt != "":
			out = append(out, row.Prompt)
		case row.Turns != nil:
			out = append(out, row.Turns...)
		default:
			out = append(out, row.Question, row.Answer)
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// TestReferenceCorpora: all 3,298 texts of the shared prompt corpora (Arena-Hard, MT-Bench,
// GSM8K: ~270k Llama 3 and ~300k Qwen2 tokens) tokenize exactly as transformers.js's independent
// implementation does from the original tokenizer.json files (testdata/reference.js made
// testdata/reference_digests.json).
func TestReferenceCorpora(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "reference_digests.json"))
	require.NoError(t, err)
	var want map[string]map[string]struct {
		Texts  int    `json:"texts"`
		Tokens int    `json:"tokens"`
		SHA256 string `json:"sha256"`
	}
	require.NoError(t, json.Unmarshal(b, &want))
	for name, files := range want {
		tok := load(t, name)
		for file, w := range files {
			t.Run(name+"/"+file, func(t *testing.T) {
				texts := corpusTexts(t, file)
				require.Len(t, texts, w.Texts)
				h := sha256.New()
				n := 0
				for _, s := range texts {
					ids := tok.EncodeSpecial(s)
					n += len(ids)
					var line []byte
					for i, id := range ids {
						if i > 0 {
							line = append(line, ',')
						}
						line = strconv.AppendInt(line, int64(id), 10)
					}
					_, _ = fmt.Fprintf(h, "%s\n", line)
				}
				require.Equal(t, w.Tokens, n, "token count")
				require.Equal(t, w.SHA256, hex.EncodeToString(h.Sum(nil)), "token ids")
			})
		}
	}
}
