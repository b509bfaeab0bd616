package tokenizer

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"unicode"

	"github.com/strata-inference/strata/internal/openai"
)

// contentText is a message's content as vLLM hands it to a string-format chat template: the
// string itself, or the text parts joined by "\n" (vllm/entrypoints/chat_utils.py
// _parse_chat_message_content_parts); other parts are dropped; null is "".
func contentText(m openai.Message) string {
	c := bytes.TrimSpace(m.Content)
	if len(c) == 0 || c[0] != '[' {
		return m.ContentText()
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if json.Unmarshal(c, &parts) != nil {
		return m.ContentText()
	}
	var texts []string
	for _, p := range parts {
		if p.Text != nil && (p.Type == "text" || p.Type == "") {
			texts = append(texts, *p.Text)
		}
	}
	return strings.Join(texts, "\n")
}

// llama3Template is the chat_template of meta-llama/Meta-Llama-3-8B-Instruct
// tokenizer_config.json:
//
//	{% for message in messages %}
//	  <|start_header_id|>{{role}}<|end_header_id|>\n\n{{ content | trim }}<|eot_id|>
//	  (the first message prefixed with bos_token <|begin_of_text|>)
//	{% endfor %}
//	{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}
//
// So BOS appears once, and not at all for an empty conversation. Jinja's trim is Python's
// str.strip(). (Llama 3.1's template adds a dated system header; the simulator keeps Llama 3's.)
func llama3Template(_ *Tokenizer, msgs []openai.Message, addGenerationPrompt bool) string {
	var b strings.Builder
	for i, m := range msgs {
		if i == 0 {
			b.WriteString("<|begin_of_text|>")
		}
		b.WriteString("<|start_header_id|>")
		b.WriteString(m.Role)
		b.WriteString("<|end_header_id|>\n\n")
		b.WriteString(strings.TrimFunc(contentText(m), pyIsSpace))
		b.WriteString("<|eot_id|>")
	}
	if addGenerationPrompt {
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	}
	return b.String()
}

// pyIsSpace is Python's str.isspace, which str.strip uses: Unicode White_Space plus the
// information separators U+001C..U+001F.
func pyIsSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// qwen3Template is the chat_template of Qwen/Qwen3-8B tokenizer_config.json without tools
// (request tools are not rendered into prompts by the simulator) and with thinking left to the
// model (enable_thinking unset, the default):
//
//   - a first system message: <|im_start|>system\n{content}<|im_end|>\n
//   - user, and system messages after the first: <|im_start|>{role}\n{content}<|im_end|>\n
//   - assistant: <|im_start|>assistant\n{content}, where content loses any "...</think>" reasoning
//     prefix; an assistant message after the last real user query that is the last message (a
//     continuation) or carries reasoning is written <think>\n{reasoning}\n</think>\n\n{content};
//     then each tool call as \n<tool_call>\n{"name": N, "arguments": A}\n</tool_call>, then
//     <|im_end|>\n
//   - consecutive tool messages: one <|im_start|>user turn of \n<tool_response>\n{content}\n
//     </tool_response> blocks
//   - other roles are dropped, as the template does
//   - generation prompt: <|im_start|>assistant\n
//
// Content is not trimmed (the template does not trim).
func qwen3Template(_ *Tokenizer, msgs []openai.Message, addGenerationPrompt bool) string {
	var b strings.Builder
	contents := make([]string, len(msgs))
	for i, m := range msgs {
		contents[i] = contentText(m)
	}
	if len(msgs) > 0 && msgs[0].Role == "system" {
		b.WriteString("<|im_start|>system\n" + contents[0] + "<|im_end|>\n")
	}
	lastQuery := len(msgs) - 1
	for i := len(msgs) - 1; i >= 0; i-- {
		c := contents[i]
		if msgs[i].Role == "user" && !(strings.HasPrefix(c, "<tool_response>") && strings.HasSuffix(c, "</tool_response>")) {
			lastQuery = i
			break
		}
	}
	for i, m := range msgs {
		content := contents[i]
		switch {
		case m.Role == "user" || (m.Role == "system" && i > 0):
			b.WriteString("<|im_start|>" + m.Role + "\n" + content + "<|im_end|>\n")
		case m.Role == "assistant":
			reasoning := ""
			if before, _, ok := strings.Cut(content, "</think>"); ok {
				parts := strings.Split(content, "</think>")
				content = strings.TrimLeft(parts[len(parts)-1], "\n")
				r := strings.TrimRight(before, "\n")
				if k := strings.LastIndex(r, "<think>"); k >= 0 {
					r = r[k+len("<think>"):]
				}
				reasoning = strings.TrimLeft(r, "\n")
			}
			if i > lastQuery && (i == len(msgs)-1 || reasoning != "") {
				b.WriteString("<|im_start|>assistant\n<think>\n" + strings.Trim(reasoning, "\n") + "\n</think>\n\n" + strings.TrimLeft(content, "\n"))
			} else {
				b.WriteString("<|im_start|>assistant\n" + content)
			}
			for k, call := range toolCalls(m) {
				if k > 0 || content != "" {
					b.WriteString("\n")
				}
				b.WriteString(`<tool_call>` + "\n" + `{"name": "` + call.name + `", "arguments": ` + call.arguments + "}\n</tool_call>")
			}
			b.WriteString("<|im_end|>\n")
		case m.Role == "tool":
			if i == 0 || msgs[i-1].Role != "tool" {
				b.WriteString("<|im_start|>user")
			}
			b.WriteString("\n<tool_response>\n" + content + "\n</tool_response>")
			if i == len(msgs)-1 || msgs[i+1].Role != "tool" {
				b.WriteString("<|im_end|>\n")
			}
		}
	}
	if addGenerationPrompt {
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String()
}

type renderedCall struct{ name, arguments string }

// toolCalls returns an assistant message's tool calls with their arguments as the template's
// `tojson` writes them: vLLM parses the OpenAI arguments string into a dict before rendering
// (chat_utils.py _postprocess_messages), and transformers' tojson is json.dumps with
// ensure_ascii=False and the default ", " / ": " separators, keys in their original order.
// Arguments that are not a JSON object are written as given.
func toolCalls(m openai.Message) []renderedCall {
	if len(m.ToolCalls) == 0 {
		return nil
	}
	var calls []struct {
		Function struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		} `json:"function"`
	}
	if json.Unmarshal(m.ToolCalls, &calls) != nil {
		return nil
	}
	out := make([]renderedCall, 0, len(calls))
	for _, c := range calls {
		args := string(c.Function.Arguments)
		var s string
		if json.Unmarshal(c.Function.Arguments, &s) == nil {
			args = s
			if p, ok := pyJSON([]byte(s)); ok {
				args = p
			}
		} else if p, ok := pyJSON(c.Function.Arguments); ok {
			args = p
		}
		out = append(out, renderedCall{name: c.Function.Name, arguments: args})
	}
	return out
}

// pyJSON re-renders a JSON object as Python's json.dumps(ensure_ascii=False) does.
func pyJSON(b []byte) (string, bool) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var out strings.Builder
	if !pyValue(d, &out) || d.More() {
		return "", false
	}
	if _, err := d.Token(); err != io.EOF {
		return "", false // trailing data
	}
	return out.String(), true
}

func pyValue(d *json.Decoder, out *strings.Builder) bool {
	tok, err := d.Token()
	if err != nil {
		return false
	}
	switch v := tok.(type) {
	case json.Delim:
		closer := map[json.Delim]string{'{': "}", '[': "]"}[v]
		out.WriteString(string(v))
		first := true
		for d.More() {
			if !first {
				out.WriteString(", ")
			}
			first = false
			if v == '{' {
				k, err := d.Token()
				if err != nil {
					return false
				}
				ks, _ := k.(string)
				pyString(ks, out)
				out.WriteString(": ")
			}
			if !pyValue(d, out) {
				return false
			}
		}
		if _, err := d.Token(); err != nil {
			return false
		}
		out.WriteString(closer)
	case string:
		pyString(v, out)
	case json.Number:
		out.WriteString(v.String())
	case bool:
		if v {
			out.WriteString("true")
		} else {
			out.WriteString("false")
		}
	case nil:
		out.WriteString("null")
	}
	return true
}

// pyString writes s as a JSON string the way Python's json with ensure_ascii=False does:
// only '"', '\\' and control characters are escaped.
func pyString(s string, out *strings.Builder) {
	out.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			out.WriteString(`\"`)
		case '\\':
			out.WriteString(`\\`)
		case '\n':
			out.WriteString(`\n`)
		case '\r':
			out.WriteString(`\r`)
		case '\t':
			out.WriteString(`\t`)
		case '\b':
			out.WriteString(`\b`)
		case '\f':
			out.WriteString(`\f`)
		default:
			if r < 0x20 {
				const hex = "0123456789abcdef"
				out.WriteString(`\u00`)
				out.WriteByte(hex[r>>4])
				out.WriteByte(hex[r&15])
			} else {
				out.WriteRune(r)
			}
		}
	}
	out.WriteByte('"')
}
