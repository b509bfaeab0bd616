package platform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/strata-inference/strata/internal/openai"
)

// Tools of the Responses API and their translation to chat completions.
//
// A function tool of /v1/responses ({"type":"function","name","description","parameters",
// "strict"}) becomes a chat tool ({"type":"function","function":{...}}) for the engine; the
// engine's tool_calls come back as function_call output items. Source of both shapes: the
// OpenAI API reference as encoded by openai-go v3 (responses.FunctionToolParam,
// responses.ResponseFunctionToolCall, shared.ChatCompletionMessageToolCall) and vLLM's
// OpenAI server (vllm/entrypoints/openai/protocol.py: ChatCompletionToolsParam, ToolCall,
// DeltaToolCall).

// builtinToolTypes are tool types of the OpenAI API that Strata does not run yet: a request
// naming one gets unsupported_value rather than invalid_value.
var builtinToolTypes = []string{"web_search", "web_search_preview",
	"web_search_2025_08_26", "web_search_preview_2025_03_11", "computer_use_preview", "code_interpreter",
	"image_generation", "local_shell", "shell", "custom", "apply_patch"}

// maxTools bounds the tools of one request (OpenAI's chat limit is 128 functions).
const maxTools = 128

// functionTool is a function tool of a request, echoed in Response.tools as FunctionTool.
type functionTool struct {
	Type        string          `json:"type"` // "function"
	Name        string          `json:"name"`
	Description *string         `json:"description"`
	Parameters  json.RawMessage `json:"parameters"` // a JSON Schema object, or null
	Strict      bool            `json:"strict"`
}

// chatTool is a tool of a chat completion request.
type chatTool struct {
	Type     string          `json:"type"` // "function"
	Function chatFunctionDef `json:"function"`
}

type chatFunctionDef struct {
	Name        string          `json:"name"`
	Description *string         `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// chatToolCall is one element of a chat message's tool_calls (and, with Index, of a stream
// delta's tool_calls).
type chatToolCall struct {
	Index    *int         `json:"index,omitempty"` // stream deltas only
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function chatFunction `json:"function"`
}

type chatFunction struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// appendToolCall appends call to the raw tool_calls array of a chat message.
func appendToolCall(raw json.RawMessage, call chatToolCall) json.RawMessage {
	var calls []chatToolCall
	_ = json.Unmarshal(raw, &calls) // raw is nil or was written by this function
	calls = append(calls, call)
	b, _ := json.Marshal(calls)
	return b
}

// parseTools decodes and checks tools: function tools and at most one file_search tool. Errors: 400 invalid_type for a
// malformed tool or schema (parameters must be a JSON object), invalid_value for a bad or
// duplicated name or an unknown type, unsupported_value for a built-in tool type Strata does
// not run yet, unknown_parameter for a field OpenAI does not define.
func parseTools(raw json.RawMessage) ([]functionTool, *fileSearchTool, []*mcpToolConfig, error) {
	funcs, fs, mcps, err := parseToolList(raw)
	if err == nil && fs != nil && slices.ContainsFunc(funcs, func(f functionTool) bool { return f.Name == fileSearchName }) {
		err = openai.InvalidRequest("tools", codeInvalidValue, "Invalid 'tools': a function named '%s' conflicts with the file_search tool.", fileSearchName)
	}
	return funcs, fs, mcps, err
}

func parseToolList(raw json.RawMessage) (funcs []functionTool, fs *fileSearchTool, mcps []*mcpToolConfig, err error) {
	funcs, fs, err = parseToolElems(raw, func(param string, fields map[string]json.RawMessage) error {
		m, err := parseMCPTool(param, fields, nil)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(mcps, func(o *mcpToolConfig) bool { return o.ServerLabel == m.ServerLabel }) {
			return openai.InvalidRequest(param+".server_label", codeInvalidValue, "Invalid 'tools': duplicate server_label '%s'.", m.ServerLabel)
		}
		mcps = append(mcps, m)
		return nil
	})
	return funcs, fs, mcps, err
}

// parseToolElems decodes the tools array; an mcp tool is handed to mcpTool.
func parseToolElems(raw json.RawMessage, mcpTool func(param string, fields map[string]json.RawMessage) error) (funcs []functionTool, fs *fileSearchTool, err error) {
	if isNull(raw) {
		return nil, nil, nil
	}
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil {
		return nil, nil, invalidType("tools", "an array", raw)
	}
	if len(elems) > maxTools {
		return nil, nil, openai.InvalidRequest("tools", codeInvalidValue, "Invalid 'tools': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", maxTools, len(elems))
	}
	funcs = make([]functionTool, 0, len(elems))
	for i, e := range elems {
		param := fmt.Sprintf("tools[%d]", i)
		var fields map[string]json.RawMessage
		if e = bytes.TrimSpace(e); len(e) == 0 || e[0] != '{' || json.Unmarshal(e, &fields) != nil {
			return nil, nil, invalidType(param, "an object", e)
		}
		typ, err := str(param+".type", fields["type"])
		if err != nil {
			return nil, nil, err
		}
		if typ == nil {
			return nil, nil, openai.MissingParam(param + ".type")
		}
		if *typ == "file_search" {
			if fs != nil {
				return nil, nil, openai.InvalidRequest(param+".type", codeInvalidValue, "Invalid 'tools': at most one file_search tool.")
			}
			if fs, err = parseFileSearchTool(param, fields); err != nil {
				return nil, nil, err
			}
			continue
		}
		if *typ == "mcp" {
			if err := mcpTool(param, fields); err != nil {
				return nil, nil, err
			}
			continue
		}
		if *typ != "function" {
			if slices.Contains(builtinToolTypes, *typ) {
				return nil, nil, openai.InvalidRequest(param+".type", codeUnsupportedValue, "Tools of type '%s' are not supported yet; only 'function' tools are.", *typ)
			}
			return nil, nil, invalidValue(param+".type", *typ, "'function', 'file_search', 'mcp', 'web_search', 'computer_use_preview', 'code_interpreter', 'image_generation', 'local_shell', 'shell', 'custom' and 'apply_patch'")
		}
		ft := functionTool{Type: "function"}
		for k, v := range fields {
			switch k {
			case "type":
			case "name":
				var s *string
				if s, err = str(param+".name", v); err == nil && s != nil {
					ft.Name = *s
				}
			case "description":
				ft.Description, err = str(param+".description", v)
			case "parameters":
				if !isNull(v) {
					v = bytes.TrimSpace(v)
					var schema map[string]json.RawMessage
					if v[0] != '{' || json.Unmarshal(v, &schema) != nil {
						return nil, nil, invalidType(param+".parameters", "an object", v)
					}
					ft.Parameters = v
				}
			case "strict":
				var b *bool
				if b, err = boolean(param+".strict", v); err == nil && b != nil {
					ft.Strict = *b
				}
			default:
				return nil, nil, openai.InvalidRequest(param+"."+k, codeUnknownParameter, "Unknown parameter: '%s.%s'.", param, k)
			}
			if err != nil {
				return nil, nil, err
			}
		}
		if ft.Name == "" {
			return nil, nil, openai.MissingParam(param + ".name")
		}
		if !validFunctionName(ft.Name) {
			return nil, nil, openai.InvalidRequest(param+".name", codeInvalidValue, "Invalid 'tools[%d].name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", i)
		}
		if slices.ContainsFunc(funcs, func(o functionTool) bool { return o.Name == ft.Name }) {
			return nil, nil, openai.InvalidRequest(param+".name", codeInvalidValue, "Invalid 'tools': duplicate function name '%s'.", ft.Name)
		}
		funcs = append(funcs, ft)
	}
	return funcs, fs, nil
}

// validFunctionName reports whether name matches OpenAI's ^[a-zA-Z0-9_-]{1,64}$.
func validFunctionName(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// parseToolChoice decodes tool_choice: "none", "auto", "required", or {"type":"function",
// "name":...}. It returns the value normalized for the Response echo. Hosted-tool and
// allowed_tools choices are answered with unsupported_value.
func parseToolChoice(raw json.RawMessage) (json.RawMessage, error) {
	const name = "tool_choice"
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "none", "auto", "required":
			b, _ := json.Marshal(s)
			return b, nil
		}
		return nil, invalidValue(name, s, "'none', 'auto' and 'required'")
	}
	var obj struct {
		Type *string `json:"type"`
		Name *string `json:"name"`
	}
	if raw = bytes.TrimSpace(raw); len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &obj) != nil {
		return nil, invalidType(name, "a string or an object", raw)
	}
	if obj.Type == nil {
		return nil, openai.MissingParam(name + ".type")
	}
	if *obj.Type != "function" {
		return nil, openai.InvalidRequest(name+".type", codeUnsupportedValue, "A 'tool_choice' of type '%s' is not supported yet; use 'none', 'auto', 'required' or a function.", *obj.Type)
	}
	if obj.Name == nil || *obj.Name == "" {
		return nil, openai.MissingParam(name + ".name")
	}
	b, _ := json.Marshal(map[string]string{"type": "function", "name": *obj.Name})
	return b, nil
}

// checkToolChoice checks tool_choice against tools: "required" needs tools (function tools, or
// server-side ones: serverTools), a named function must be one of the function tools.
func checkToolChoice(choice json.RawMessage, tools []functionTool, serverTools bool) error {
	var s string
	if json.Unmarshal(choice, &s) == nil {
		if s == "required" && len(tools) == 0 && !serverTools {
			return openai.InvalidRequest("tool_choice", codeInvalidValue, "Tool choice 'required' must be specified with 'tools' parameter.")
		}
		return nil
	}
	var obj struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(choice, &obj) // normalized by parseToolChoice
	if !slices.ContainsFunc(tools, func(t functionTool) bool { return t.Name == obj.Name }) {
		return openai.InvalidRequest("tool_choice", codeInvalidValue, "Tool choice '%s' not found in 'tools' parameter.", obj.Name)
	}
	return nil
}

// chatToolChoice translates a Responses tool_choice to chat completions: the modes are the
// same strings; a named function becomes {"type":"function","function":{"name":...}}.
func chatToolChoice(choice json.RawMessage) json.RawMessage {
	var obj struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(choice, &obj) != nil || obj.Name == "" {
		return choice
	}
	b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": obj.Name}})
	return b
}

// chatTools translates function tools to chat tools; strict is sent only when set.
func chatTools(tools []functionTool) []chatTool {
	out := make([]chatTool, len(tools))
	for i, t := range tools {
		out[i] = chatTool{Type: "function", Function: chatFunctionDef{Name: t.Name, Description: t.Description, Parameters: t.Parameters}}
		if t.Strict {
			strict := true
			out[i].Function.Strict = &strict
		}
	}
	return out
}

// parseCallItem decodes a function_call or function_call_output input item.
func parseCallItem(param, typ string, raw json.RawMessage) (inputItem, error) {
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(raw, &fields) // an object: parseItem checked
	get := func(k string) (string, bool, error) {
		s, err := str(param+"."+k, fields[k])
		if err != nil || s == nil {
			return "", false, err
		}
		return *s, true, nil
	}
	out := inputItem{Type: typ}
	var err error
	for k, v := range fields {
		switch k {
		case "type", "status", "namespace", "caller", "async":
			// Echoes of an item the API returned, or hints for tools Strata does not run.
		case "id":
			out.ID, _, err = get(k)
		case "call_id":
			out.CallID, _, err = get(k)
		case "name", "arguments":
			if typ != itemFunctionCall {
				if k == "name" {
					continue // function_call_output.name names the tool; the call_id says it
				}
				return inputItem{}, openai.InvalidRequest(param+"."+k, codeUnknownParameter, "Unknown parameter: '%s.%s'.", param, k)
			}
			if k == "name" {
				out.Name, _, err = get(k)
			} else {
				out.Arguments, _, err = get(k)
			}
		case "output":
			if typ != itemFunctionCallOutput {
				return inputItem{}, openai.InvalidRequest(param+"."+k, codeUnknownParameter, "Unknown parameter: '%s.%s'.", param, k)
			}
			out.Output, err = parseCallOutput(param+".output", v)
		default:
			return inputItem{}, openai.InvalidRequest(param+"."+k, codeUnknownParameter, "Unknown parameter: '%s.%s'.", param, k)
		}
		if err != nil {
			return inputItem{}, err
		}
	}
	if out.CallID == "" {
		return inputItem{}, openai.MissingParam(param + ".call_id")
	}
	if typ == itemFunctionCall {
		if out.Name == "" {
			return inputItem{}, openai.MissingParam(param + ".name")
		}
		if _, ok := fields["arguments"]; !ok {
			return inputItem{}, openai.MissingParam(param + ".arguments")
		}
		if out.ID == "" {
			out.ID = newID("fc_")
		}
	} else {
		if _, ok := fields["output"]; !ok {
			return inputItem{}, openai.MissingParam(param + ".output")
		}
		if out.ID == "" {
			out.ID = newID("fco_")
		}
	}
	return out, nil
}

// parseCallOutput decodes function_call_output.output: a string, or a list of input_text
// parts (joined). Image and file parts are not supported yet.
func parseCallOutput(param string, raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type *string `json:"type"`
		Text *string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", invalidType(param, "a string or an array", raw)
	}
	var b bytes.Buffer
	for j, p := range parts {
		pp := fmt.Sprintf("%s[%d]", param, j)
		switch {
		case p.Type == nil:
			return "", openai.MissingParam(pp + ".type")
		case *p.Type != "input_text":
			return "", openai.InvalidRequest(pp+".type", codeUnsupportedValue, "Output parts of type '%s' are not supported yet; only 'input_text' is.", *p.Type)
		case p.Text == nil:
			return "", openai.MissingParam(pp + ".text")
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}

// checkToolPairs checks a conversation about to be sent to the engine: every tool call of an
// assistant message has a tool message with its id, and every tool message answers such a
// call, so the engine's chat template never sees a dangling call. Errors: 400 invalid_value, worded as OpenAI words them.
func checkToolPairs(msgs []openai.Message) error {
	calls := map[string]bool{}
	var order []string
	for _, m := range msgs {
		switch {
		case m.Role == "assistant" && len(m.ToolCalls) > 0:
			var tc []chatToolCall
			_ = json.Unmarshal(m.ToolCalls, &tc)
			for _, c := range tc {
				calls[c.ID] = false
				order = append(order, c.ID)
			}
		case m.Role == "tool":
			if _, ok := calls[m.ToolCallID]; !ok {
				return openai.InvalidRequest("input", codeInvalidValue, "No tool call found for function call output with call_id %s.", m.ToolCallID)
			}
			calls[m.ToolCallID] = true
		}
	}
	for _, id := range order {
		if !calls[id] {
			return openai.InvalidRequest("input", codeInvalidValue, "No tool output found for function call %s.", id)
		}
	}
	return nil
}

// parseConversationRef decodes conversation: an id string or {"id": ...}.
func parseConversationRef(raw json.RawMessage) (string, error) {
	const name = "conversation"
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		var obj struct {
			ID *string `json:"id"`
		}
		if raw = bytes.TrimSpace(raw); len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &obj) != nil {
			return "", invalidType(name, "a string or an object", raw)
		}
		if obj.ID == nil {
			return "", openai.MissingParam(name + ".id")
		}
		s = *obj.ID
	}
	if s == "" {
		return "", openai.InvalidRequest(name, codeInvalidValue, "Invalid 'conversation': empty string. Expected a conversation id.")
	}
	return s, nil
}
