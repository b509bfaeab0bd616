package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
)

func msg(role, content string) openai.Message {
	return openai.Message{Role: role, Content: openai.TextContent(content)}
}

// TestChatTemplates renders conversations and compares with the output of the published Jinja
// templates (meta-llama/Meta-Llama-3-8B-Instruct and Qwen/Qwen3-8B tokenizer_config.json
// chat_template), rendered by hand from the template text.
func TestChatTemplates(t *testing.T) {
	llama, qwen := load(t, "llama-3"), load(t, "qwen2")
	parts := openai.Message{Role: "user", Content: json.RawMessage(`[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]`)}
	call := openai.Message{Role: "assistant", Content: json.RawMessage(`null`),
		ToolCalls: json.RawMessage(`[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"days\":[1,2],\"note\":\"é\\n\"}"}}]`)}
	for _, tc := range []struct {
		name   string
		tok    *Tokenizer
		msgs   []openai.Message
		addGen bool
		want   string
	}{
		{"llama empty", llama, nil, true, "<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama system user", llama, []openai.Message{msg("system", " Be brief. "), msg("user", "Hi\n")}, true,
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama no generation prompt", llama, []openai.Message{msg("user", "Hi"), msg("assistant", "Hello")}, false,
			"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"},
		{"llama text parts joined by newline", llama, []openai.Message{parts}, false,
			"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\na\nb<|eot_id|>"},
		{"qwen system user", qwen, []openai.Message{msg("system", "Be brief."), msg("user", " Hi ")}, true,
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n"},
		{"qwen multi-turn strips reasoning", qwen, []openai.Message{msg("user", "Hi"), msg("assistant", "<think>\nhmm\n</think>\n\nHello"), msg("user", "More")}, true,
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nMore<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen continuation gets an empty think block", qwen, []openai.Message{msg("user", "Hi"), msg("assistant", "Hel")}, false,
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHel<|im_end|>\n"},
		{"qwen later system message", qwen, []openai.Message{msg("user", "Hi"), msg("system", "S")}, false,
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>system\nS<|im_end|>\n"},
		{"qwen tool call and responses", qwen, []openai.Message{msg("user", "Weather?"), call, msg("tool", "sunny"), msg("tool", "warm")}, true,
			"<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n" + // not last: no think block
				"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2], \"note\": \"é\\n\"}}\n</tool_call><|im_end|>\n" +
				"<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nwarm\n</tool_response><|im_end|>\n<|im_start|>assistant\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.tok.ApplyChatTemplate(tc.msgs, tc.addGen)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.tok.EncodeSpecial(tc.want), tc.tok.EncodeChat(tc.msgs, tc.addGen))
		})
	}
}

// TestEncodeChatBOSOnce: the Llama 3 template writes BOS, EncodeChat adds no second one; Qwen
// has none.
func TestEncodeChatBOSOnce(t *testing.T) {
	llama, qwen := load(t, "llama-3"), load(t, "qwen2")
	msgs := []openai.Message{msg("user", "Hello there")}
	ids := llama.EncodeChat(msgs, true)
	require.Equal(t, []int{128000, 128006, 882, 128007, 271, 9906, 1070, 128009, 128006, 78191, 128007, 271}, ids)
	ids = qwen.EncodeChat(msgs, true)
	require.Equal(t, []int{151644, 872, 198, 9707, 1052, 151645, 198, 151644, 77091, 198}, ids)
}

// TestChatTemplatesGolden: ApplyChatTemplate equals the published Jinja templates rendered by
// jinja2 as transformers does (testdata/chat_templates.py wrote testdata/chat_templates.json),
// for every case the template accepts.
func TestChatTemplatesGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "chat_templates.json"))
	require.NoError(t, err)
	var golden struct {
		Cases []struct {
			Messages            []openai.Message   `json:"messages"`
			AddGenerationPrompt bool               `json:"add_generation_prompt"`
			Want                map[string]*string `json:"want"`
		} `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(b, &golden))
	require.NotEmpty(t, golden.Cases)
	checked := 0
	for i, c := range golden.Cases {
		for name, want := range c.Want {
			if want == nil {
				continue // the Jinja template raises on this conversation
			}
			tok := load(t, name)
			require.Equal(t, *want, tok.ApplyChatTemplate(c.Messages, c.AddGenerationPrompt), "case %d %s", i, name)
			checked++
		}
	}
	require.Greater(t, checked, 20)
}

// FuzzPyJSON: tool-call arguments from clients are re-rendered as Python's json.dumps; any input
// is handled without panic, and a valid JSON value keeps its meaning.
func FuzzPyJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"q": "<b>&</b>", "n": 1.5, "l": [true, null, {"x": "é\n\u0001"}]}`, `[1,2]`, `"s"`, `{`, `{"a":1}x`, ``} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, ok := pyJSON([]byte(s))
		if !ok {
			return
		}
		var a, b any
		require.NoError(t, json.Unmarshal([]byte(out), &b), "output %q of %q", out, s)
		require.NoError(t, json.Unmarshal([]byte(s), &a), "accepted invalid JSON %q", s)
		require.Equal(t, a, b)
	})
}
