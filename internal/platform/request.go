package platform

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/strata-inference/strata/internal/openai"
)

// Error codes of request validation, as OpenAI sends them in error.code.
const (
	codeInvalidType          = "invalid_type"
	codeInvalidValue         = "invalid_value"
	codeUnknownParameter     = "unknown_parameter"
	codeUnsupportedParameter = "unsupported_parameter"
	codeUnsupportedValue     = "unsupported_value"
	codePreviousNotFound     = "previous_response_not_found"
)

// Metadata limits of the OpenAI API: at most 16 pairs, keys up to 64 and values up to 512
// characters.
const (
	maxMetadataPairs = 16
	maxMetadataKey   = 64
	maxMetadataValue = 512
)

// createRequest is a checked body of POST /v1/responses.
type createRequest struct {
	Model              string
	Input              []inputItem // this request's input, in order
	Instructions       *string
	MaxOutputTokens    *int64
	Temperature        *float64
	TopP               *float64
	Store              bool
	Metadata           map[string]string
	PreviousResponseID string
	// Conversation is the id of the conversation this response reads and appends to, "" for none.
	Conversation string
	// Background is background: the response is answered queued and run in a goroutine.
	Background bool
	// IncludeSearchResults is include: ["file_search_call.results"].
	IncludeSearchResults bool
	Stream               bool
	ParallelToolCalls    bool
	// Tools are the request's tools, checked; ToolChoice is tool_choice as the client sent it
	// ("none", "auto", "required" or {"type":"function","name":...}), "auto" by default.
	Tools        []functionTool
	FileSearch   *fileSearchTool  // the file_search tool, run server-side; nil when none
	MCP          []*mcpToolConfig // the mcp tools (remote MCP servers), run server-side
	ToolChoice   json.RawMessage
	MaxToolCalls *int64
	// MaxInferIters bounds the inference calls of the server-side tool loop (Strata and
	// LlamaStack extension max_infer_iters); nil means the platform's configured default.
	MaxInferIters    *int64
	User             *string
	SafetyIdentifier *string
	PromptCacheKey   *string
}

// Input item types (ResponseInputItemUnion's "type").
const (
	itemMessage            = "message"
	itemFunctionCall       = "function_call"
	itemFunctionCallOutput = "function_call_output"
)

// inputItem is one item of the input, normalized: a string input becomes one user message,
// content parts become their texts.
type inputItem struct {
	Type  string // itemMessage, itemFunctionCall or itemFunctionCallOutput
	ID    string
	Role  string   // messages: user, system, developer or assistant
	Texts []string // messages

	CallID    string // function_call and function_call_output: the call's id
	Name      string // function_call: the function's name
	Arguments string // function_call: the arguments, a JSON text as the model wrote it
	Output    string // function_call_output: the result the client computed

	ApprovalRequestID string  // mcp_approval_response: the mcp_approval_request answered
	Approve           bool    // mcp_approval_response
	Reason            *string // mcp_approval_response
}

// unsupportedParams are parameters of the OpenAI API that Strata does not implement yet. They
// are accepted only when null (or the listed neutral value), and otherwise answered with a 400
// naming them: a silently ignored parameter would change what the client gets without telling.
var unsupportedParams = []string{"prompt", "context_management", "moderation",
	"prompt_cache_retention", "prompt_cache_options", "access_programs"}

// parseCreateRequest decodes and checks a POST /v1/responses body. Errors are *openai.Error
// 400s naming the offending parameter ("input[1].content[0].type"), worded as OpenAI words
// them: invalid_json, unknown_parameter, invalid_type, invalid_value, missing_required_parameter,
// and unsupported_parameter / unsupported_value for what Strata does not implement yet.
func parseCreateRequest(body []byte) (*createRequest, error) {
	body = bytes.TrimSpace(body)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		if len(body) > 0 && body[0] != '{' && json.Valid(body) {
			return nil, openai.InvalidRequest("", codeInvalidType, "Invalid type for request body: expected an object, but got %s instead.", kind(body))
		}
		return nil, openai.InvalidRequest("", openai.CodeInvalidJSON,
			"We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
	}
	req := &createRequest{Store: true, ParallelToolCalls: true, ToolChoice: json.RawMessage(`"auto"`)}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic: the first offending parameter in name order is named
	for _, k := range keys {
		if err := req.set(k, fields[k]); err != nil {
			return nil, err
		}
	}
	if req.Model == "" {
		return nil, openai.MissingParam("model")
	}
	if isNull(fields["input"]) {
		return nil, openai.MissingParam("input")
	}
	for i, it := range req.Input {
		if it.Type == itemMCPApprovalResponse && req.PreviousResponseID == "" && req.Conversation == "" {
			return nil, openai.InvalidRequest(fmt.Sprintf("input[%d]", i), codeInvalidValue,
				"An 'mcp_approval_response' answers a request of an earlier response: give 'previous_response_id' or 'conversation'.")
		}
	}
	if err := checkToolChoice(req.ToolChoice, req.Tools, req.FileSearch != nil || len(req.MCP) > 0); err != nil {
		return nil, err
	}
	if req.Background && req.Stream {
		return nil, unsupported("stream", "Streaming a background response is not supported yet; poll GET /v1/responses/{id}.")
	}
	if req.Background && !req.Store {
		return nil, openai.InvalidRequest("store", codeInvalidValue, "Background responses must be stored: 'store' must be true with 'background': true.")
	}
	return req, nil
}

// set decodes one top-level parameter into req.
func (req *createRequest) set(name string, raw json.RawMessage) error {
	var err error
	switch name {
	case "model":
		var s *string
		if s, err = str(name, raw); err == nil && s != nil {
			req.Model = *s
		}
	case "input":
		req.Input, err = parseInput(raw)
	case "instructions":
		req.Instructions, err = str(name, raw)
	case "previous_response_id":
		var s *string
		if s, err = str(name, raw); err == nil && s != nil {
			if *s == "" {
				return openai.InvalidRequest(name, codeInvalidValue, "Invalid '%s': empty string. Expected a response id.", name)
			}
			req.PreviousResponseID = *s
		}
	case "max_output_tokens":
		if req.MaxOutputTokens, err = integer(name, raw); err == nil && req.MaxOutputTokens != nil && *req.MaxOutputTokens < 1 {
			return openai.InvalidRequest(name, codeInvalidValue, "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", name, *req.MaxOutputTokens)
		}
	case "max_tool_calls":
		if req.MaxToolCalls, err = integer(name, raw); err == nil && req.MaxToolCalls != nil && *req.MaxToolCalls < 0 {
			return openai.InvalidRequest(name, codeInvalidValue, "Invalid '%s': integer below minimum value. Expected a value >= 0, but got %d instead.", name, *req.MaxToolCalls)
		}
	case "temperature":
		req.Temperature, err = decimal(name, raw, 0, 2)
	case "top_p":
		req.TopP, err = decimal(name, raw, 0, 1)
	case "store", "stream", "parallel_tool_calls":
		var b *bool
		if b, err = boolean(name, raw); err == nil && b != nil {
			switch name {
			case "store":
				req.Store = *b
			case "stream":
				req.Stream = *b
			default:
				req.ParallelToolCalls = *b
			}
		}
	case "background":
		var b *bool
		if b, err = boolean(name, raw); err == nil && b != nil {
			req.Background = *b
		}
	case "metadata":
		req.Metadata, err = parseMetadata(raw)
	case "user":
		req.User, err = str(name, raw)
	case "safety_identifier":
		req.SafetyIdentifier, err = str(name, raw)
	case "prompt_cache_key":
		req.PromptCacheKey, err = str(name, raw)
	case "service_tier":
		var s *string
		if s, err = str(name, raw); err == nil && s != nil && *s != "auto" && *s != "default" {
			return unsupportedValue(name, *s)
		}
	case "truncation":
		var s *string
		if s, err = str(name, raw); err == nil && s != nil {
			switch *s {
			case "disabled":
			case "auto":
				return unsupportedValue(name, *s)
			default:
				return invalidValue(name, *s, "'auto' and 'disabled'")
			}
		}
	case "tools":
		req.Tools, req.FileSearch, req.MCP, err = parseTools(raw)
	case "tool_choice":
		if !isNull(raw) {
			req.ToolChoice, err = parseToolChoice(raw)
		}
	case "max_infer_iters":
		if req.MaxInferIters, err = integer(name, raw); err == nil && req.MaxInferIters != nil && *req.MaxInferIters < 1 {
			return openai.InvalidRequest(name, codeInvalidValue, "Invalid '%s': integer below minimum value. Expected a value >= 1, but got %d instead.", name, *req.MaxInferIters)
		}
	case "conversation":
		req.Conversation, err = parseConversationRef(raw)
	case "text":
		err = checkTextConfig(raw)
	case "include":
		var inc []string
		if !isNull(raw) {
			if json.Unmarshal(raw, &inc) != nil {
				return invalidType(name, "an array of strings", raw)
			}
			for i, v := range inc {
				if v != "file_search_call.results" {
					return openai.InvalidRequest(fmt.Sprintf("include[%d]", i), codeUnsupportedValue,
						"'%s' is not supported in 'include' yet; only 'file_search_call.results' is.", v)
				}
				req.IncludeSearchResults = true
			}
		}
	case "top_logprobs":
		var n *int64
		if n, err = integer(name, raw); err == nil && n != nil && *n != 0 {
			return unsupported(name, "Log probabilities ('top_logprobs') are not supported yet.")
		}
	case "reasoning":
		var r map[string]json.RawMessage
		if !isNull(raw) {
			if json.Unmarshal(raw, &r) != nil || r == nil {
				return invalidType(name, "an object", raw)
			}
			for k, v := range r {
				if !isNull(v) {
					return unsupported(name+"."+k, "Reasoning options are not supported yet.")
				}
			}
		}
	case "stream_options":
		// The one option, include_obfuscation, asks for random padding on delta events against
		// length side channels. Accepted and not applied: Strata's deltas carry no padding.
		var o map[string]json.RawMessage
		if !isNull(raw) && (json.Unmarshal(raw, &o) != nil || o == nil) {
			return invalidType(name, "an object", raw)
		}
	default:
		if slices.Contains(unsupportedParams, name) {
			if isNull(raw) {
				return nil
			}
			return unsupported(name, fmt.Sprintf("'%s' is not supported yet; send the request without it.", name))
		}
		return openai.InvalidRequest(name, codeUnknownParameter, "Unknown parameter: '%s'.", name)
	}
	return err
}

// parseInput decodes input: a string (one user message) or an array of message items.
func parseInput(raw json.RawMessage) ([]inputItem, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []inputItem{{Type: itemMessage, ID: newID("msg_"), Role: "user", Texts: []string{s}}}, nil
	}
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil {
		return nil, invalidType("input", "a string or an array", raw)
	}
	if len(elems) == 0 {
		return nil, openai.InvalidRequest("input", "empty_array", "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	items := make([]inputItem, 0, len(elems))
	for i, e := range elems {
		it, err := parseItem(fmt.Sprintf("input[%d]", i), e)
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	return items, nil
}

// parseItem decodes one input item: a message (EasyInputMessage, ResponseInputItemMessage,
// ResponseOutputMessage), a function_call (the model's call, as returned in an earlier
// output) or a function_call_output (the client's result of such a call). Other item types
// (item_reference, reasoning, file_search_call, ...) are answered with unsupported_value.
func parseItem(param string, raw json.RawMessage) (inputItem, error) {
	var it struct {
		Type    *string         `json:"type"`
		ID      *string         `json:"id"`
		Role    *string         `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if raw = bytes.TrimSpace(raw); len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &it) != nil {
		return inputItem{}, invalidType(param, "an object", raw)
	}
	if it.Type != nil {
		switch *it.Type {
		case itemMessage:
		case itemFunctionCall, itemFunctionCallOutput:
			return parseCallItem(param, *it.Type, raw)
		case itemMCPApprovalResponse:
			return parseApprovalItem(param, raw)
		default:
			return inputItem{}, openai.InvalidRequest(param+".type", codeUnsupportedValue,
				"Input items of type '%s' are not supported yet; only 'message', 'function_call', 'function_call_output' and 'mcp_approval_response' items are.", *it.Type)
		}
	}
	if it.Role == nil {
		return inputItem{}, openai.MissingParam(param + ".role")
	}
	role := *it.Role
	switch role {
	case "user", "system", "developer", "assistant":
	default:
		return inputItem{}, invalidValue(param+".role", role, "'assistant', 'system', 'developer', and 'user'")
	}
	out := inputItem{Type: itemMessage, Role: role}
	if it.ID != nil && *it.ID != "" {
		out.ID = *it.ID
	} else {
		out.ID = newID("msg_")
	}
	if isNull(it.Content) {
		return inputItem{}, openai.MissingParam(param + ".content")
	}
	var s string
	if json.Unmarshal(it.Content, &s) == nil {
		out.Texts = []string{s}
		return out, nil
	}
	var parts []json.RawMessage
	if json.Unmarshal(it.Content, &parts) != nil {
		return inputItem{}, invalidType(param+".content", "a string or an array", it.Content)
	}
	for j, p := range parts {
		pp := fmt.Sprintf("%s.content[%d]", param, j)
		var part struct {
			Type *string `json:"type"`
			Text *string `json:"text"`
		}
		if p = bytes.TrimSpace(p); len(p) == 0 || p[0] != '{' || json.Unmarshal(p, &part) != nil {
			return inputItem{}, invalidType(pp, "an object", p)
		}
		if part.Type == nil {
			return inputItem{}, openai.MissingParam(pp + ".type")
		}
		want, others := "input_text", []string{"input_image", "input_file", "input_audio"}
		supported := "'input_text', 'input_image', 'input_file' and 'input_audio'"
		if role == "assistant" {
			want, others, supported = "output_text", []string{"refusal"}, "'output_text' and 'refusal'"
		}
		switch {
		case *part.Type == want:
		case slices.Contains(others, *part.Type):
			return inputItem{}, openai.InvalidRequest(pp+".type", codeUnsupportedValue,
				"Content parts of type '%s' are not supported yet; only '%s' is.", *part.Type, want)
		default:
			return inputItem{}, invalidValue(pp+".type", *part.Type, supported)
		}
		if part.Text == nil {
			return inputItem{}, openai.MissingParam(pp + ".text")
		}
		out.Texts = append(out.Texts, *part.Text)
	}
	return out, nil
}

func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return nil, invalidType("metadata", "an object", raw)
	}
	if len(m) > maxMetadataPairs {
		return nil, openai.InvalidRequest("metadata", codeInvalidValue, "Invalid 'metadata': too many properties. Expected an object with at most %d properties, but got %d instead.", maxMetadataPairs, len(m))
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if json.Unmarshal(v, &s) != nil {
			return nil, invalidType("metadata."+k, "a string", v)
		}
		if utf8.RuneCountInString(k) > maxMetadataKey {
			return nil, openai.InvalidRequest("metadata", codeInvalidValue, "Invalid 'metadata': key longer than %d characters.", maxMetadataKey)
		}
		if utf8.RuneCountInString(s) > maxMetadataValue {
			return nil, openai.InvalidRequest("metadata."+k, codeInvalidValue, "Invalid 'metadata.%s': string too long. Expected a string with maximum length %d.", k, maxMetadataValue)
		}
		out[k] = s
	}
	return out, nil
}

// checkTextConfig accepts text.format of type "text" only; structured outputs (json_object,
// json_schema) map to response_format and come later.
func checkTextConfig(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var t map[string]json.RawMessage
	if json.Unmarshal(raw, &t) != nil || t == nil {
		return invalidType("text", "an object", raw)
	}
	for k, v := range t {
		if k != "format" {
			if isNull(v) {
				continue
			}
			return unsupported("text."+k, fmt.Sprintf("'text.%s' is not supported yet.", k))
		}
		if isNull(v) {
			continue
		}
		var f struct {
			Type *string `json:"type"`
		}
		if json.Unmarshal(v, &f) != nil {
			return invalidType("text.format", "an object", v)
		}
		if f.Type == nil {
			return openai.MissingParam("text.format.type")
		}
		switch *f.Type {
		case "text":
		case "json_object", "json_schema":
			return unsupportedValue("text.format.type", *f.Type)
		default:
			return invalidValue("text.format.type", *f.Type, "'text', 'json_schema' and 'json_object'")
		}
	}
	return nil
}

// chatMessages converts input items to chat messages for /v1/chat/completions. The developer
// role becomes system: it means the same to an open model, and not every chat template of an
// engine knows "developer". A function_call joins the assistant message before it as one of
// its tool_calls (the model wrote them in one turn; chat templates expect them together), and
// a function_call_output becomes a "tool" message.
func chatMessages(items []inputItem) []openai.Message {
	out := make([]openai.Message, 0, len(items))
	for _, it := range items {
		switch it.Type {
		case itemFunctionCall:
			call := chatToolCall{ID: it.CallID, Type: "function", Function: chatFunction{Name: it.Name, Arguments: it.Arguments}}
			if n := len(out); n > 0 && out[n-1].Role == "assistant" {
				out[n-1].ToolCalls = appendToolCall(out[n-1].ToolCalls, call)
			} else {
				out = append(out, openai.Message{Role: "assistant", ToolCalls: appendToolCall(nil, call)})
			}
			continue
		case itemFunctionCallOutput:
			out = append(out, openai.Message{Role: "tool", ToolCallID: it.CallID, Content: openai.TextContent(it.Output)})
			continue
		case itemMCPApprovalResponse:
			continue // the loop runs the approved call (mcp.go)
		}
		role := it.Role
		if role == "developer" {
			role = "system"
		}
		var content json.RawMessage
		if len(it.Texts) <= 1 || role == "assistant" {
			content = openai.TextContent(strings.Join(it.Texts, ""))
		} else {
			// Several parts stay several text parts: the engine joins them as its chat template
			// says, as it would for a chat completion with the same parts.
			parts := make([]map[string]string, len(it.Texts))
			for i, t := range it.Texts {
				parts[i] = map[string]string{"type": "text", "text": t}
			}
			content, _ = json.Marshal(parts)
		}
		out = append(out, openai.Message{Role: role, Content: content})
	}
	return out
}

// listItem renders an input item as GET /v1/responses/{id}/input_items and the conversation
// item routes list it.
func listItem(it inputItem) json.RawMessage {
	var v any
	switch {
	case it.Type == itemFunctionCall:
		v = &functionCall{Type: itemFunctionCall, ID: it.ID, CallID: it.CallID, Name: it.Name, Arguments: it.Arguments, Status: statusCompleted}
	case it.Type == itemFunctionCallOutput:
		v = &functionCallOutput{Type: itemFunctionCallOutput, ID: it.ID, CallID: it.CallID, Output: it.Output, Status: statusCompleted}
	case it.Type == itemMCPApprovalResponse:
		v = &mcpApprovalResponse{Type: itemMCPApprovalResponse, ID: it.ID, ApprovalRequestID: it.ApprovalRequestID, Approve: it.Approve, Reason: it.Reason}
	case it.Role == "assistant":
		m := &outputMessage{Type: "message", ID: it.ID, Status: statusCompleted, Role: "assistant", Content: make([]outputText, len(it.Texts))}
		for i, t := range it.Texts {
			m.Content[i] = newOutputText(t)
		}
		v = m
	default:
		m := &inputMessage{Type: "message", ID: it.ID, Status: statusCompleted, Role: it.Role, Content: make([]inputText, len(it.Texts))}
		for i, t := range it.Texts {
			m.Content[i] = inputText{Type: "input_text", Text: t}
		}
		v = m
	}
	b, _ := json.Marshal(v)
	return b
}

// newID returns prefix followed by 48 random hex digits, the shape of OpenAI's ids
// ("resp_...", "msg_...").
func newID(prefix string) string {
	var b [24]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return prefix + hex.EncodeToString(b[:])
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// kind names the JSON type of raw as OpenAI's messages do ("a string", "an object", ...).
func kind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func str(name string, raw json.RawMessage) (*string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil, invalidType(name, "a string", raw)
	}
	return &s, nil
}

func boolean(name string, raw json.RawMessage) (*bool, error) {
	if isNull(raw) {
		return nil, nil
	}
	var b bool
	if json.Unmarshal(raw, &b) != nil {
		return nil, invalidType(name, "a boolean", raw)
	}
	return &b, nil
}

func integer(name string, raw json.RawMessage) (*int64, error) {
	if isNull(raw) {
		return nil, nil
	}
	var n int64
	if json.Unmarshal(raw, &n) != nil {
		return nil, invalidType(name, "an integer", raw)
	}
	return &n, nil
}

func decimal(name string, raw json.RawMessage, lo, hi float64) (*float64, error) {
	if isNull(raw) {
		return nil, nil
	}
	var f float64
	if json.Unmarshal(raw, &f) != nil {
		return nil, invalidType(name, "a decimal", raw)
	}
	if f < lo {
		return nil, openai.InvalidRequest(name, codeInvalidValue, "Invalid '%s': decimal below minimum value. Expected a value >= %g, but got %g instead.", name, lo, f)
	}
	if f > hi {
		return nil, openai.InvalidRequest(name, codeInvalidValue, "Invalid '%s': decimal above maximum value. Expected a value <= %g, but got %g instead.", name, hi, f)
	}
	return &f, nil
}

func invalidType(param, want string, raw json.RawMessage) *openai.Error {
	return openai.InvalidRequest(param, codeInvalidType, "Invalid type for '%s': expected %s, but got %s instead.", param, want, kind(raw))
}

func invalidValue(param, got, supported string) *openai.Error {
	return openai.InvalidRequest(param, codeInvalidValue, "Invalid value: '%s'. Supported values are: %s.", got, supported)
}

func unsupported(param, msg string) *openai.Error {
	return openai.InvalidRequest(param, codeUnsupportedParameter, "%s", msg)
}

func unsupportedValue(param, got string) *openai.Error {
	return openai.InvalidRequest(param, codeUnsupportedValue, "Unsupported value: '%s' does not support '%s' yet.", param, got)
}

// parseApprovalItem decodes an mcp_approval_response input item (approval_request_id and
// approve required; id and reason optional).
func parseApprovalItem(param string, raw json.RawMessage) (inputItem, error) {
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(raw, &fields) // an object: parseItem checked
	out := inputItem{Type: itemMCPApprovalResponse}
	approve := false
	for k, v := range fields {
		var err error
		switch k {
		case "type":
		case "id", "approval_request_id":
			var s *string
			if s, err = str(param+"."+k, v); err == nil && s != nil {
				if k == "id" {
					out.ID = *s
				} else {
					out.ApprovalRequestID = *s
				}
			}
		case "approve":
			var b *bool
			if b, err = boolean(param+"."+k, v); err == nil && b != nil {
				out.Approve, approve = *b, true
			}
		case "reason":
			out.Reason, err = str(param+"."+k, v)
		default:
			return inputItem{}, openai.InvalidRequest(param+"."+k, codeUnknownParameter, "Unknown parameter: '%s.%s'.", param, k)
		}
		if err != nil {
			return inputItem{}, err
		}
	}
	if out.ApprovalRequestID == "" {
		return inputItem{}, openai.MissingParam(param + ".approval_request_id")
	}
	if !approve {
		return inputItem{}, openai.MissingParam(param + ".approve")
	}
	if out.ID == "" {
		out.ID = newID("mcpra_")
	}
	return out, nil
}
