package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// data holds the vocabularies written by internal/gen (format documented there).
//
//go:embed data/*.bin.gz
var data embed.FS

type addedToken struct {
	id      int
	content string
	special bool
}

type vocabFile struct {
	tokens [][]byte
	merges [][2]int // nil: derive from ranks (tiktoken vocabulary)
	added  []addedToken
}

func readVocab(name string) (*vocabFile, error) {
	f, err := data.Open("data/" + name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	r := bufio.NewReader(zr)
	magic := make([]byte, 5)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "STOK1" {
		return nil, errors.New("bad magic")
	}
	var rerr error
	uv := func() int {
		x, err := binary.ReadUvarint(r)
		if err != nil && rerr == nil {
			rerr = err
		}
		return int(x)
	}
	str := func() []byte {
		b := make([]byte, uv())
		if _, err := io.ReadFull(r, b); err != nil && rerr == nil {
			rerr = err
		}
		return b
	}
	v := &vocabFile{}
	v.tokens = make([][]byte, uv())
	for i := range v.tokens {
		v.tokens[i] = str()
	}
	if m := uv(); m > 0 && rerr == nil {
		v.merges = make([][2]int, m)
		for i := range v.merges {
			v.merges[i] = [2]int{uv(), uv()}
		}
	}
	k := uv()
	for i := 0; i < k && rerr == nil; i++ {
		a := addedToken{id: uv(), content: string(str())}
		flags, err := r.ReadByte()
		if err != nil {
			rerr = err
		}
		a.special = flags&1 != 0
		v.added = append(v.added, a)
	}
	if rerr != nil {
		return nil, fmt.Errorf("%s: %w", name, rerr)
	}
	return v, nil
}

// deriveMerges turns a tiktoken rank list into Hugging Face merges exactly as transformers'
// TikTokenConverter does (convert_slow_tokenizer.py generate_merges): every split of every token
// into two tokens is a merge; merges are ordered by the rank of their result, then by the ranks
// of the left and right parts.
func deriveMerges(tokens [][]byte, ids map[string]int32) [][2]int {
	merges := make([][2]int, 0, 2*len(tokens))
	var local [][2]int
	for _, tok := range tokens {
		local = local[:0]
		for i := 1; i < len(tok); i++ {
			l, ok1 := ids[string(tok[:i])]
			r, ok2 := ids[string(tok[i:])]
			if ok1 && ok2 {
				local = append(local, [2]int{int(l), int(r)})
			}
		}
		slices.SortFunc(local, func(a, b [2]int) int {
			if a[0] != b[0] {
				return a[0] - b[0]
			}
			return a[1] - b[1]
		})
		merges = append(merges, local...)
	}
	return merges
}

// bytesToUnicode is GPT-2's byte-level alphabet (openai/gpt-2 src/encoder.py bytes_to_unicode):
// printable Latin-1 bytes stand for themselves, the other 68 bytes for U+0100 onwards. Token
// strings in tokenizer.json, and vLLM's /tokenize token_strs, are written in it.
var bytesToUnicode = func() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}()

func byteLevel(b []byte) string {
	var s bytes.Buffer
	for _, c := range b {
		s.WriteRune(bytesToUnicode[c])
	}
	return s.String()
}
