package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// answer is one choice as the tests read it, from a JSON response or an accumulated stream.
type answer struct {
	text             string
	finishReason     string
	stopReason       any
	completionTokens int
}

// generateHTTP posts a chat completion ("chat") or completion request with extra JSON fields,
// streaming or not, and returns its one answer. The stream must show stop_reason only on the
// finishing chunk and its text deltas must add up to the answer.
func generateHTTP(t *testing.T, base, kind string, stream bool, extra string) answer {
	t.Helper()
	path, body := "/v1/completions", `"prompt":"Tell me about paged attention."`
	if kind == "chat" {
		path, body = "/v1/chat/completions", `"messages":[{"role":"user","content":"Tell me about paged attention."}]`
	}
	req := fmt.Sprintf(`{%s,"max_tokens":60,"seed":7,"stream":%t,"stream_options":%s%s}`, body, stream,
		map[bool]string{true: `{"include_usage":true}`, false: `null`}[stream], extra)
	resp, err := http.Post(base+path, "application/json", strings.NewReader(req))
	require.NoError(t, err)
	defer resp.Body.Close()
	rawb, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	raw := string(rawb)
	require.Equal(t, http.StatusOK, resp.StatusCode, raw)
	type choice struct {
		Text    string `json:"text"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string         `json:"finish_reason"`
		StopReason   json.RawMessage `json:"stop_reason"`
	}
	type body2 struct {
		Choices []choice `json:"choices"`
		Usage   *struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	var a answer
	decodeStop := func(r json.RawMessage) any {
		var v any
		if len(r) > 0 {
			require.NoError(t, json.Unmarshal(r, &v))
		}
		if f, ok := v.(float64); ok {
			return int(f)
		}
		return v
	}
	if !stream {
		var out body2
		require.NoError(t, json.Unmarshal([]byte(raw), &out))
		require.Len(t, out.Choices, 1)
		c := out.Choices[0]
		a.text = c.Text + c.Message.Content
		a.finishReason = *c.FinishReason
		a.stopReason = decodeStop(c.StopReason)
		a.completionTokens = out.Usage.CompletionTokens
		return a
	}
	for _, d := range sseData(t, raw) {
		if d == "[DONE]" {
			break
		}
		var out body2
		require.NoError(t, json.Unmarshal([]byte(d), &out))
		if out.Usage != nil && len(out.Choices) == 0 {
			a.completionTokens = out.Usage.CompletionTokens
			continue
		}
		c := out.Choices[0]
		a.text += c.Text + c.Delta.Content
		if c.FinishReason != nil {
			a.finishReason = *c.FinishReason
			a.stopReason = decodeStop(c.StopReason)
		} else if kind == "chat" {
			require.Nil(t, c.StopReason, "chat chunks carry stop_reason only when finishing")
		}
	}
	return a
}

// TestStopParametersHTTP: stop, stop_token_ids, include_stop_str_in_output and ignore_eos
// through the HTTP server, for chat and completions, streaming and not, against vLLM's rules
// (see planOutput). The reference is the same request without stop conditions: answers are
// deterministic in (seed, prompt).
func TestStopParametersHTTP(t *testing.T) {
	for _, f := range families {
		s, hs := startFamily(t, f.model)
		for _, kind := range []string{"chat", "completions"} {
			for _, stream := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/stream=%t", f.tokenizer, kind, stream), func(t *testing.T) {
					full := generateHTTP(t, hs.URL, kind, stream, `,"ignore_eos":true`)
					require.Equal(t, "length", full.finishReason)
					require.Nil(t, full.stopReason)
					require.Equal(t, 60, full.completionTokens)
					words := strings.Fields(full.text)
					require.Greater(t, len(words), 12)
					stop := strings.Trim(words[8], ".,")
					at := strings.Index(full.text, stop)
					require.GreaterOrEqual(t, at, 0)

					got := generateHTTP(t, hs.URL, kind, stream, `,"ignore_eos":true,"stop":"`+stop+`"`)
					require.Equal(t, "stop", got.finishReason)
					require.Equal(t, stop, got.stopReason)
					require.Equal(t, full.text[:at], got.text, "cut before the stop string")
					require.Less(t, got.completionTokens, 60)
					// Completion tokens: those whose text reaches the end of the stop string.
					require.Equal(t, len(s.tok.encode(strings.TrimRight(full.text[:at+len(stop)], " "))), got.completionTokens)

					inc := generateHTTP(t, hs.URL, kind, stream, `,"ignore_eos":true,"stop":["zzz","`+stop+`"],"include_stop_str_in_output":true`)
					require.Equal(t, full.text[:at+len(stop)], inc.text, "kept with include_stop_str_in_output")
					require.Equal(t, stop, inc.stopReason)
					require.Equal(t, got.completionTokens, inc.completionTokens)

					// stop_token_ids: the token of the 5th word (its first occurrence) ends the answer.
					ids := s.tok.encode(full.text)
					id := ids[4]
					first := indexOf(ids, id)
					byID := generateHTTP(t, hs.URL, kind, stream, fmt.Sprintf(`,"ignore_eos":true,"stop_token_ids":[%d]`, id))
					require.Equal(t, "stop", byID.finishReason)
					require.Equal(t, id, byID.stopReason)
					require.Equal(t, first+1, byID.completionTokens, "the stop token is generated and counted")
					require.Equal(t, s.tok.detokenize(ids[:first]), byID.text, "its text is not shown")

					// Masked while fewer than min_tokens tokens precede it.
					masked := generateHTTP(t, hs.URL, kind, stream, fmt.Sprintf(`,"ignore_eos":true,"min_tokens":60,"stop_token_ids":[%d]`, id))
					require.Equal(t, full, masked)

					// Without ignore_eos the natural answer ends with EOS: stop_reason null.
					natural := generateHTTP(t, hs.URL, kind, stream, `,"max_tokens":500`)
					if natural.finishReason == "stop" {
						require.Nil(t, natural.stopReason)
					}
				})
			}
		}
		code, body := postJSON(t, hs, "/v1/completions", `{"prompt":"x","stop":["a",""]}`)
		require.Equal(t, http.StatusBadRequest, code)
		require.Contains(t, body, "stop cannot contain an empty string.")
		code, body = postJSON(t, hs, "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"stop":7}`)
		require.Equal(t, http.StatusBadRequest, code, body)
	}
}
