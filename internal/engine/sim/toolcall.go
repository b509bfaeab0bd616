package sim

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/strata-inference/strata/internal/openai"
)

// Tool calls. A chat request that carries tools is answered with a call of one of them, so agent
// loops run end to end against the simulator, by this deterministic rule:
//
//  1. no call when tool_choice is "none", or when the last message is a tool result (role
//     "tool"): the loop has its answer and the model replies in text;
//  2. tool_choice {"type":"function","function":{"name":N}} calls N;
//  3. otherwise the first tool, in declaration order, whose function name appears in the last
//     user message (case-insensitive) is called;
//  4. otherwise tool_choice "required" calls the first tool; "auto" (the default) answers text.
//
// The arguments are an example of the tool's JSON schema (exampleOf): they validate against it.
// The engine generates the call's text `{"name": N, "arguments": {...}}` plus EOS as its output
// tokens, so timing and usage count them; when they do not fit in the output limit, the request
// gets a text answer instead. The response carries them as vLLM's tool parsers do: message
// content null, tool_calls [{id "chatcmpl-tool-<hex>", type "function", function {name,
// arguments as a JSON string}}], finish_reason "tool_calls"; a stream sends them in one delta
// after the last token. Tools are not rendered into the prompt (vLLM's chat templates do), so
// prompt_tokens is smaller than vLLM's for the same request.

// toolDef is one entry of a request's "tools".
type toolDef struct {
	Type     string `json:"type"`
	Function struct {
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
	} `json:"function"`
}

// toolCall is a chosen call: the function and its arguments as a JSON string.
type toolCall struct {
	ID, Name, Arguments string
}

// wire renders c as an OpenAI tool call (index is used in stream deltas only).
func (c *toolCall) wire(index *int) map[string]any {
	m := map[string]any{"id": c.ID, "type": "function",
		"function": map[string]any{"name": c.Name, "arguments": c.Arguments}}
	if index != nil {
		m["index"] = *index
	}
	return m
}

// text is what the engine generates for the call.
func (c *toolCall) text() string {
	return `{"name": "` + c.Name + `", "arguments": ` + c.Arguments + `}`
}

// chooseToolCall applies the rule above; nil means a text answer. Malformed tools or
// tool_choice are a 400.
func chooseToolCall(req *genRequest, msgs []openai.Message) (*toolCall, error) {
	if !present(req.Tools) {
		return nil, nil
	}
	var tools []toolDef
	if err := json.Unmarshal(req.Tools, &tools); err != nil {
		return nil, validationError("list_type", "'tools'", "Input should be a valid list")
	}
	for i, t := range tools {
		if t.Type != "" && t.Type != "function" || t.Function.Name == "" {
			return nil, badRequest("tools", "tools[%d] must be a function with a name", i)
		}
	}
	if len(tools) == 0 {
		return nil, nil
	}
	choice := "auto"
	forced := ""
	if present(req.ToolChoice) {
		var s string
		if json.Unmarshal(req.ToolChoice, &s) == nil {
			choice = s
		} else {
			var obj struct {
				Function struct {
					Name string `json:"name"`
				} `json:"function"`
			}
			if json.Unmarshal(req.ToolChoice, &obj) != nil || obj.Function.Name == "" {
				return nil, badRequest("tool_choice", "tool_choice must be none, auto, required or a named function")
			}
			forced = obj.Function.Name
		}
	}
	switch choice {
	case "none", "auto", "required":
	default:
		return nil, badRequest("tool_choice", "tool_choice must be none, auto, required or a named function, got %q", choice)
	}
	if choice == "none" || len(msgs) > 0 && msgs[len(msgs)-1].Role == "tool" {
		return nil, nil
	}
	pick := -1
	if forced != "" {
		pick = slices.IndexFunc(tools, func(t toolDef) bool { return t.Function.Name == forced })
		if pick < 0 {
			return nil, badRequest("tool_choice", "Tool '%s' has not been passed in `tools`.", forced)
		}
	}
	if pick < 0 {
		last := ""
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgs[i].Role == "user" {
				last = strings.ToLower(msgs[i].ContentText())
				break
			}
		}
		pick = slices.IndexFunc(tools, func(t toolDef) bool { return strings.Contains(last, strings.ToLower(t.Function.Name)) })
	}
	if pick < 0 && choice == "required" {
		pick = 0
	}
	if pick < 0 {
		return nil, nil
	}
	var schema any
	if present(tools[pick].Function.Parameters) {
		if err := json.Unmarshal(tools[pick].Function.Parameters, &schema); err != nil {
			return nil, badRequest("tools", "tools[%d].function.parameters is not a JSON schema", pick)
		}
	}
	args := exampleOf(schema, 0)
	if args == nil {
		args = map[string]any{}
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, badRequest("tools", "tools[%d].function.parameters: %v", pick, err)
	}
	return &toolCall{ID: "chatcmpl-tool-" + randomID(), Name: tools[pick].Function.Name, Arguments: string(b)}, nil
}

// exampleOf returns a value that validates against a JSON schema (the subset function
// parameters use: type, properties, required, items, enum, const, default, minimum, maximum,
// minLength, maxLength, minItems, maxItems, anyOf/oneOf): const, else default, else the first
// enum value, else by type: an object with its required properties (all properties when none is
// required, in name order), an array of minItems (at least one unless maxItems is 0) items,
// the string "example" fitted to minLength/maxLength, the number 0 moved into
// [minimum, maximum], true, or null.
func exampleOf(schema any, depth int) any {
	s, ok := schema.(map[string]any)
	if !ok || depth > 16 {
		return nil
	}
	if v, ok := s["const"]; ok {
		return v
	}
	if v, ok := s["default"]; ok {
		return v
	}
	if e, ok := s["enum"].([]any); ok && len(e) > 0 {
		return e[0]
	}
	for _, k := range []string{"anyOf", "oneOf", "allOf"} {
		if alts, ok := s[k].([]any); ok && len(alts) > 0 {
			return exampleOf(alts[0], depth+1)
		}
	}
	typ, _ := s["type"].(string)
	if ts, ok := s["type"].([]any); ok {
		for _, t := range ts {
			if t, ok := t.(string); ok && t != "null" {
				typ = t
				break
			}
		}
	}
	if typ == "" {
		if _, ok := s["properties"]; ok {
			typ = "object"
		}
	}
	num := func(key string) (float64, bool) {
		v, ok := s[key].(float64)
		return v, ok
	}
	switch typ {
	case "object":
		props, _ := s["properties"].(map[string]any)
		var names []string
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if n, ok := r.(string); ok {
					names = append(names, n)
				}
			}
		}
		if len(names) == 0 {
			for n := range props {
				names = append(names, n)
			}
			slices.Sort(names)
		}
		out := map[string]any{}
		for _, n := range names {
			out[n] = exampleOf(props[n], depth+1)
			if out[n] == nil {
				out[n] = "example" // a required property without a schema: any value
			}
		}
		return out
	case "array":
		n := 1
		if v, ok := num("minItems"); ok && v > 1 {
			n = int(min(v, 64))
		}
		if v, ok := num("maxItems"); ok && v < float64(n) {
			n = int(max(v, 0))
		}
		out := make([]any, n)
		for i := range out {
			out[i] = exampleOf(s["items"], depth+1)
			if out[i] == nil {
				out[i] = "example"
			}
		}
		return out
	case "string":
		v := "example"
		if m, ok := num("minLength"); ok && float64(len(v)) < m {
			v += strings.Repeat("x", int(min(m, 4096))-len(v))
		}
		if m, ok := num("maxLength"); ok && float64(len(v)) > m {
			v = v[:int(max(m, 0))]
		}
		return v
	case "integer", "number":
		v := 0.0
		if m, ok := num("minimum"); ok && v < m {
			v = m
		}
		if m, ok := num("exclusiveMinimum"); ok && v <= m {
			v = m + 1
		}
		if m, ok := num("maximum"); ok && v > m {
			v = m
		}
		if m, ok := num("exclusiveMaximum"); ok && v >= m {
			v = m - 1
		}
		if typ == "integer" {
			return int64(v)
		}
		return v
	case "boolean":
		return true
	}
	return nil
}

// toolCallTokens is the engine output of call c: its text's tokens and EOS, or nil when they do
// not fit in limit tokens.
func (t *tokenizerSet) toolCallTokens(c *toolCall, limit int) []int {
	toks := append(t.Encode(c.text()), t.eos)
	if len(toks) > limit {
		return nil
	}
	return toks
}
