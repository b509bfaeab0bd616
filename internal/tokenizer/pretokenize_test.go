package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
	"github.com/stretchr/testify/require"
)

// regexpPieces cuts text with the pattern itself, run by dlclark/regexp2 (a backtracking
// engine with lookahead, as Oniguruma in Hugging Face tokenizers): the reference for the
// hand-written scanner.
func regexpPieces(t testing.TB, re *regexp2.Regexp, text string) []string {
	var out []string
	m, err := re.FindStringMatch(text)
	require.NoError(t, err)
	end := 0
	for m != nil {
		i, n := m.Group.Capture.ByteRange()
		require.Equal(t, end, i, "the alternatives cover every character, so matches are contiguous")
		out = append(out, text[i:i+n])
		end = i + n
		m, err = re.FindNextMatch(m)
		require.NoError(t, err)
	}
	require.Equal(t, len(text), end)
	return out
}

func scannerPieces(text string, maxDigits int) []string {
	var out []string
	splitPieces(text, maxDigits, func(p string) { out = append(out, p) })
	return out
}

var splitSeeds = []string{
	"", "Hello world", "  Hello   world  ", "I'm 'S 'Ll 'RE 'x can't", "3333333 12 1", "a\r\n\r\nb",
	"x  \n  y", "\t\n", " \n", "   ", " !!! \n\n", "¡Hola! ¿qué?", "日本語 テキスト", "e\u0301 \u00a0x \u3000y",
	"x\u2028y \u0085z", "🦙 emoji👍🏽", "a.b,c;d", " ?\n", "''s", "'\n", "1a2b", "\v\f x", "Ⅻ ½ ٣",
	"\x7f", "\x00\x01 \x1c\x1f",
}

// compileReference compiles a pre-tokenizer pattern for regexpPieces. The \G anchor changes
// nothing (the alternatives match at every position, so matches are contiguous) but turns off
// regexp2's first-character scan, which v2.5.1 gets wrong for these patterns: unanchored, the
// pattern finds no match in "\x7f" (DEL), which [^\s\p{L}\p{N}]+ matches.
func compileReference(pattern string) *regexp2.Regexp {
	return regexp2.MustCompile(`\G(?:`+pattern+`)`, regexp2.None)
}

func TestSplitMatchesRegexp(t *testing.T) {
	for _, tc := range []struct {
		pattern   string
		maxDigits int
	}{{llama3Pattern, 3}, {qwen2Pattern, 1}} {
		re := compileReference(tc.pattern)
		for _, s := range splitSeeds {
			require.Equal(t, regexpPieces(t, re, s), scannerPieces(s, tc.maxDigits), "%q", s)
		}
	}
}

func FuzzSplitMatchesRegexp(f *testing.F) {
	for _, s := range splitSeeds {
		f.Add(s)
	}
	llama := compileReference(llama3Pattern)
	qwen := compileReference(qwen2Pattern)
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || len(s) > 512 {
			return
		}
		require.Equal(t, regexpPieces(t, llama, s), scannerPieces(s, 3), "llama-3 %q", s)
		require.Equal(t, regexpPieces(t, qwen, s), scannerPieces(s, 1), "qwen2 %q", s)
		require.Equal(t, s, strings.Join(scannerPieces(s, 3), ""))
	})
}
