package router

import (
	"bytes"
	"io"
)

// usageScanner passes an engine's answer through unchanged while noting the last
// usage.prompt_tokens and usage.prompt_tokens_details.cached_tokens it carries: in the JSON body
// of a non-stream answer, or in the SSE chunks of a stream (the final usage chunk when
// stream_options.include_usage is set; every chunk with vLLM's continuous_usage_stats). OpenAI
// and vLLM put the same usage object in both (vllm/entrypoints/openai/protocol.py, UsageInfo and
// PromptTokenUsageInfo).
//
// It never buffers the answer: it matches the keys `"prompt_tokens":` and `"cached_tokens":` in
// each read, carrying the last bytes of a read over to the next so a key or number split across
// two reads is still found. Inside JSON strings quotes are escaped, so generated text cannot
// forge the keys.
type usageScanner struct {
	rc     io.ReadCloser
	window []byte // carry from the previous read + the current read
	prompt int    // -1: not seen
	cached int    // -1: not seen
}

// usageCarry is how many trailing bytes of a read are kept for the next: the longer key plus a
// number of up to 20 digits and some spaces.
const usageCarry = 48

var (
	keyPromptTokens = []byte(`"prompt_tokens":`)
	keyCachedTokens = []byte(`"cached_tokens":`)
)

func newUsageScanner(rc io.ReadCloser) *usageScanner {
	return &usageScanner{rc: rc, prompt: -1, cached: -1}
}

func (u *usageScanner) Read(p []byte) (int, error) {
	n, err := u.rc.Read(p)
	if n > 0 {
		u.scan(p[:n])
	}
	return n, err
}

func (u *usageScanner) Close() error { return u.rc.Close() }

// scan looks for the keys in the carried bytes followed by b.
func (u *usageScanner) scan(b []byte) {
	u.window = append(u.window, b...)
	w := u.window
	// Fast path: most chunks of a stream carry no usage. bytes.Index is vectorised.
	if bytes.Index(w, keyTokensSuffix) >= 0 {
		if v, ok := lastNumberAfter(w, keyPromptTokens); ok {
			u.prompt = v
		}
		if v, ok := lastNumberAfter(w, keyCachedTokens); ok {
			u.cached = v
		}
	}
	if len(w) > usageCarry {
		u.window = append(u.window[:0], w[len(w)-usageCarry:]...)
	}
}

// keyTokensSuffix ends both keys.
var keyTokensSuffix = []byte(`_tokens":`)

// lastNumberAfter returns the non-negative integer after the last complete occurrence of key in
// w (spaces allowed in between). A number running to the end of w may be cut; it is skipped, and
// found again in the next window thanks to the carry.
func lastNumberAfter(w, key []byte) (v int, found bool) {
	for off := 0; ; {
		i := bytes.Index(w[off:], key)
		if i < 0 {
			return v, found
		}
		j := off + i + len(key)
		off = j
		for j < len(w) && (w[j] == ' ' || w[j] == '\t' || w[j] == '\n' || w[j] == '\r') {
			j++
		}
		k, n := j, 0
		for k < len(w) && w[k] >= '0' && w[k] <= '9' && k-j < 18 {
			n = n*10 + int(w[k]-'0')
			k++
		}
		if k > j && k < len(w) { // null, cut or not a number: keep the previous occurrence's value
			v, found = n, true
		}
	}
}

// result returns the prompt and cached tokens seen; ok is false when the answer had no
// cached_tokens (prefix caching off, or usage not requested on a stream).
func (u *usageScanner) result() (prompt, cached int, ok bool) {
	return u.prompt, u.cached, u.cached >= 0 && u.prompt >= 0
}
