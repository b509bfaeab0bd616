package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Pre-tokenizer patterns, from the "pre_tokenizer" Split of each family's tokenizer.json
// (meta-llama/Meta-Llama-3-8B-Instruct and Qwen/Qwen3-8B). They differ only in \p{N}{1,3}
// (Llama 3: up to three digits per piece) versus \p{N} (Qwen2: one digit per piece).
const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// Character classes of the patterns as Hugging Face tokenizers (Oniguruma) reads them:
// \s is Unicode White_Space, which is exactly unicode.IsSpace; \p{L} and \p{N} are the
// general categories.
func isSpace(r rune) bool  { return unicode.IsSpace(r) }
func isLetter(r rune) bool { return unicode.IsLetter(r) }
func isNumber(r rune) bool { return unicode.IsNumber(r) }

// isPunct is [^\s\p{L}\p{N}].
func isPunct(r rune) bool { return !isSpace(r) && !isLetter(r) && !isNumber(r) }

// splitPieces calls emit with each piece of text as the pattern's leftmost-first matches cut
// it (the Split pre-tokenizer with behaviour "Isolated": every match is a piece, and since the
// alternatives cover every character, there is no unmatched text). maxDigits is 3 for Llama 3
// and 1 for Qwen2.
//
// It is a hand-written scanner, not a regexp engine: dlclark/regexp2 backtracks on the
// lookahead and is slow (quadratic on long whitespace runs). FuzzSplitMatchesRegexp checks it
// against regexp2 running the exact pattern.
func splitPieces(text string, maxDigits int, emit func(piece string)) {
	i := 0
	for i < len(text) {
		n := matchAt(text, i, maxDigits)
		emit(text[i : i+n])
		i += n
	}
}

func decode(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// matchAt returns the length of the match starting at i (> 0 when i < len(text)).
func matchAt(s string, i, maxDigits int) int {
	c0, w0 := decode(s, i)
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if c0 == '\'' && i+1 < len(s) {
		switch lower(s[i+1]) {
		case 's', 't', 'm', 'd':
			return 2
		case 'r', 'v', 'l':
			if i+2 < len(s) {
				want := byte('e')
				if lower(s[i+1]) == 'l' {
					want = 'l'
				}
				if lower(s[i+2]) == want {
					return 3
				}
			}
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isLetter(c0) {
		return i + w0 + letters(s, i+w0) - i
	}
	if c0 != '\r' && c0 != '\n' && !isNumber(c0) {
		if c1, w1 := decode(s, i+w0); c1 >= 0 && isLetter(c1) {
			j := i + w0 + w1
			return j + letters(s, j) - i
		}
	}
	// \p{N}{1,maxDigits}
	if isNumber(c0) {
		j, n := i+w0, 1
		for n < maxDigits {
			c, w := decode(s, j)
			if c < 0 || !isNumber(c) {
				break
			}
			j += w
			n++
		}
		return j - i
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	j := i
	if c0 == ' ' {
		j += w0
	}
	if c, w := decode(s, j); c >= 0 && isPunct(c) {
		j += w
		for {
			c, w := decode(s, j)
			if c < 0 || !isPunct(c) {
				break
			}
			j += w
		}
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j - i
	}
	// c0 is whitespace from here on. Find the run of whitespace [i, end) and its last newline.
	end, lastNL, runes := i, -1, 0
	for {
		c, w := decode(s, end)
		if c < 0 || !isSpace(c) {
			break
		}
		if c == '\r' || c == '\n' {
			lastNL = end
		}
		end += w
		runes++
	}
	// \s*[\r\n]+ : greedy \s* backs off to the last newline of the run.
	if lastNL >= 0 {
		return lastNL + 1 - i
	}
	// \s+(?!\S) : the whole run at the end of text, else the run minus its last character.
	if end == len(s) || runes == 1 {
		return end - i // (runes == 1 and not at the end: \s+ alone)
	}
	_, wl := utf8.DecodeLastRuneInString(s[i:end])
	return end - wl - i
}

func letters(s string, j int) int {
	start := j
	for {
		c, w := decode(s, j)
		if c < 0 || !isLetter(c) {
			return j - start
		}
		j += w
	}
}

func lower(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}
