package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/strata-inference/strata/internal/openai"
)

// Request and response shapes of vLLM's OpenAI server (vllm/entrypoints/openai/protocol.py, the
// chat_completion/ and completion/ protocol and serving modules; field order as vLLM serializes
// them, vLLM v0.10-v0.11).

// genRequest holds the fields of a chat completion, completion or tokenize request the simulator
// reads. Unknown fields are ignored, as vLLM's OpenAIBaseModel (extra="allow") does.
type genRequest struct {
	Model               *string         `json:"model"`
	Messages            json.RawMessage `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	N                   *int            `json:"n"`
	Seed                *int64          `json:"seed"`
	IgnoreEOS           bool            `json:"ignore_eos"`
	MinTokens           int             `json:"min_tokens"`
	AddGenerationPrompt *bool           `json:"add_generation_prompt"`
	ReturnTokenStrs     bool            `json:"return_token_strs"`
	AddSpecialTokens    *bool           `json:"add_special_tokens"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	// Stop, StopTokenIDs and IncludeStopStrInOutput are vLLM's stop parameters
	// (vllm/entrypoints/openai/protocol.py -> SamplingParams): stop is a string or a list.
	Stop                   json.RawMessage `json:"stop"`
	StopTokenIDs           []int           `json:"stop_token_ids"`
	IncludeStopStrInOutput bool            `json:"include_stop_str_in_output"`
	// KVTransferParams is vLLM's kv_transfer_params (P/D disaggregation, kvtransfer.go).
	KVTransferParams *KVTransferParams `json:"kv_transfer_params"`
}

// addSpecialTokens is add_special_tokens of a completion or tokenize prompt: default true, so a
// text prompt starts with BOS, as Llama-3's tokenizer does it in vLLM.
func (r *genRequest) addSpecialTokens() bool { return r.AddSpecialTokens == nil || *r.AddSpecialTokens }

// streamOptions is vLLM's StreamOptions; include_usage defaults to true when the object is sent.
type streamOptions struct {
	IncludeUsage         *bool `json:"include_usage"`
	ContinuousUsageStats bool  `json:"continuous_usage_stats"`
}

// usage returns (include_usage, continuous_usage_stats) as vLLM's should_include_usage does.
func (r *genRequest) usage() (bool, bool) {
	if r.StreamOptions == nil {
		return false, false
	}
	inc := r.StreamOptions.IncludeUsage == nil || *r.StreamOptions.IncludeUsage
	return inc, inc && r.StreamOptions.ContinuousUsageStats
}

// maxTokens is the requested output limit: max_completion_tokens, else max_tokens.
func (r *genRequest) maxTokens() *int {
	if r.MaxCompletionTokens != nil {
		return r.MaxCompletionTokens
	}
	return r.MaxTokens
}

func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

// Errors. vLLM answers with ErrorResponse {"error":{"message","type","param","code":<status>}}
// (vllm/entrypoints/openai/engine/protocol.py); request-validation failures (malformed JSON, a
// missing or mistyped field) come from FastAPI's validation handler with type "Bad Request" and
// pydantic's error list as the message; engine-level checks use type "BadRequestError".

func vllmError(status int, typ, param, format string, args ...any) *openai.Error {
	return &openai.Error{Status: status, Type: typ, Param: param, Message: fmt.Sprintf(format, args...), NumericCode: true}
}

func badRequest(param, format string, args ...any) *openai.Error {
	return vllmError(http.StatusBadRequest, "BadRequestError", param, format, args...)
}

// validationError renders one pydantic error as vLLM's validation handler does.
func validationError(typ, loc, msg string) *openai.Error {
	return vllmError(http.StatusBadRequest, "Bad Request", "", "[{'type': '%s', 'loc': ('body', %s), 'msg': '%s'}]", typ, loc, msg)
}

func modelNotFound(model string) *openai.Error {
	return vllmError(http.StatusNotFound, "NotFoundError", "model", "The model `%s` does not exist.", model)
}

var (
	errNotFound      = vllmError(http.StatusNotFound, "NotFoundError", "", "Not Found")
	errMethod        = vllmError(http.StatusMethodNotAllowed, "MethodNotAllowed", "", "Method Not Allowed")
	errEngineClosed  = vllmError(http.StatusServiceUnavailable, "ServiceUnavailableError", "", "The engine is shut down.")
	errEmptyPrompt   = badRequest("", "The decoder prompt cannot be empty")
	errStreamOptions = badRequest("stream_options", "Stream options can only be defined when `stream=True`.")
)

// maxBatchPrompts bounds the prompts of one /v1/completions request.
const maxBatchPrompts = 1024

// parseRequest decodes body and checks the fields every generation endpoint shares. Errors are
// *openai.Error in vLLM's shape.
func parseRequest(body []byte) (*genRequest, error) {
	var r genRequest
	if err := json.Unmarshal(body, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			got, _, _ := strings.Cut(te.Value, " ") // "number 1e30" -> "number"
			return nil, validationError(got+"_type", "'"+te.Field+"'", "Input should be a valid "+goTypeName(te.Type.String()))
		}
		return nil, validationError("json_invalid", "0", "JSON decode error")
	}
	return &r, nil
}

func goTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "integer"
	case t == "bool":
		return "boolean"
	case t == "string":
		return "string"
	case strings.HasPrefix(t, "[]"):
		return "list"
	}
	return "dictionary"
}

// checkSampling applies vLLM's SamplingParams checks (vllm/sampling_params.py _verify_args).
func (r *genRequest) checkSampling() error {
	if r.StreamOptions != nil && !r.Stream {
		return errStreamOptions
	}
	if r.N != nil && *r.N < 1 {
		return badRequest("n", "n must be at least 1, got %d.", *r.N)
	}
	if r.N != nil && *r.N > 1 {
		return badRequest("n", "n must be 1: the simulator generates one choice per prompt, got %d.", *r.N)
	}
	if mt := r.maxTokens(); mt != nil && *mt < 1 {
		return badRequest("max_tokens", "max_tokens must be at least 1, got %d.", *mt)
	}
	if r.MinTokens < 0 {
		return badRequest("min_tokens", "min_tokens must be greater than or equal to 0, got %d.", r.MinTokens)
	}
	if mt := r.maxTokens(); mt != nil && r.MinTokens > *mt {
		return badRequest("min_tokens", "min_tokens must be less than or equal to max_tokens=%d, got %d.", *mt, r.MinTokens)
	}
	return nil
}

// parseMessages decodes the messages field of a chat request.
func parseMessages(raw json.RawMessage) ([]openai.Message, error) {
	if !present(raw) {
		return nil, validationError("missing", "'messages'", "Field required")
	}
	var msgs []openai.Message
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return nil, validationError("list_type", "'messages'", "Input should be a valid list")
	}
	for i, m := range msgs {
		if m.Role == "" {
			return nil, validationError("missing", fmt.Sprintf("'messages', %d, 'role'", i), "Field required")
		}
	}
	return msgs, nil
}

// promptInput is one completion prompt: text to tokenize, or token ids.
type promptInput struct {
	text   string
	tokens []int
	isText bool
}

// parsePrompt decodes the prompt field of /v1/completions: a string, a list of strings, a list
// of token ids, or a list of token-id lists (vLLM CompletionRequest.prompt).
func parsePrompt(raw json.RawMessage) ([]promptInput, error) {
	if !present(raw) {
		return nil, validationError("missing", "'prompt'", "Field required")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []promptInput{{text: s, isText: true}}, nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		return []promptInput{{tokens: ids}}, nil
	}
	invalid := validationError("union_type", "'prompt'",
		"Input should be a valid string, a list of strings, a list of integers or a list of lists of integers")
	var many []json.RawMessage
	if json.Unmarshal(raw, &many) != nil || len(many) == 0 {
		return nil, invalid
	}
	if len(many) > maxBatchPrompts {
		return nil, badRequest("prompt", "The simulator accepts at most %d prompts per request, got %d.", maxBatchPrompts, len(many))
	}
	var out []promptInput
	for _, m := range many {
		if json.Unmarshal(m, &s) == nil {
			out = append(out, promptInput{text: s, isText: true})
			continue
		}
		ids = nil
		if json.Unmarshal(m, &ids) != nil {
			return nil, invalid
		}
		out = append(out, promptInput{tokens: ids})
	}
	for _, p := range out[1:] {
		if p.isText != out[0].isText {
			return nil, invalid
		}
	}
	return out, nil
}

// Response shapes.

// usageInfo is vLLM's UsageInfo, prompt_tokens_details always filled.
type usageInfo struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	PromptTokensDetails *promptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

type promptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

func newUsage(prompt, completion, cached int) *usageInfo {
	return &usageInfo{PromptTokens: prompt, TotalTokens: prompt + completion, CompletionTokens: completion,
		PromptTokensDetails: &promptTokensDetails{CachedTokens: cached}}
}

type chatMessage struct {
	Role             string          `json:"role"`
	Content          *string         `json:"content"`
	Refusal          *string         `json:"refusal"`
	Annotations      json.RawMessage `json:"annotations"`
	Audio            json.RawMessage `json:"audio"`
	FunctionCall     json.RawMessage `json:"function_call"`
	ToolCalls        []any           `json:"tool_calls"`
	ReasoningContent *string         `json:"reasoning_content"`
}

type chatChoice struct {
	Index        int         `json:"index"`
	Message      chatMessage `json:"message"`
	Logprobs     any         `json:"logprobs"`
	FinishReason string      `json:"finish_reason"`
	StopReason   any         `json:"stop_reason"`
}

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	ServiceTier       *string      `json:"service_tier"`
	SystemFingerprint *string      `json:"system_fingerprint"`
	Usage             *usageInfo   `json:"usage"`
	PromptLogprobs    any          `json:"prompt_logprobs"`
	KVTransferParams  any          `json:"kv_transfer_params"`
}

type chatDelta struct {
	Role      string  `json:"role,omitempty"`
	Content   *string `json:"content,omitempty"`
	ToolCalls []any   `json:"tool_calls,omitempty"`
}

// chatStreamChoice is serialized with exclude_unset: stop_reason only on the finishing chunk.
type chatStreamChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     any       `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatStreamFinalChoice struct {
	chatStreamChoice
	StopReason any `json:"stop_reason"`
}

type chatChunk struct {
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Created int64      `json:"created"`
	Model   string     `json:"model"`
	Choices []any      `json:"choices"`
	Usage   *usageInfo `json:"usage,omitempty"`
}

type completionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
	StopReason   any     `json:"stop_reason"`
}

type completionFinalChoice struct {
	completionChoice
	PromptLogprobs any `json:"prompt_logprobs"`
}

// completion is the non-streaming CompletionResponse (model_dump: every field, nulls included).
type completion struct {
	ID                string                  `json:"id"`
	Object            string                  `json:"object"`
	Created           int64                   `json:"created"`
	Model             string                  `json:"model"`
	Choices           []completionFinalChoice `json:"choices"`
	ServiceTier       *string                 `json:"service_tier"`
	SystemFingerprint *string                 `json:"system_fingerprint"`
	Usage             *usageInfo              `json:"usage"`
	KVTransferParams  any                     `json:"kv_transfer_params"`
}

// completionChunk is one streamed CompletionStreamResponse (exclude_unset).
type completionChunk struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usageInfo         `json:"usage,omitempty"`
}

// modelCard and modelPermission are vLLM's ModelCard and ModelPermission.
type modelCard struct {
	ID          string            `json:"id"`
	Object      string            `json:"object"`
	Created     int64             `json:"created"`
	OwnedBy     string            `json:"owned_by"`
	Root        string            `json:"root"`
	Parent      *string           `json:"parent"`
	MaxModelLen int               `json:"max_model_len"`
	Permission  []modelPermission `json:"permission"`
}

type modelPermission struct {
	ID                 string  `json:"id"`
	Object             string  `json:"object"`
	Created            int64   `json:"created"`
	AllowCreateEngine  bool    `json:"allow_create_engine"`
	AllowSampling      bool    `json:"allow_sampling"`
	AllowLogprobs      bool    `json:"allow_logprobs"`
	AllowSearchIndices bool    `json:"allow_search_indices"`
	AllowView          bool    `json:"allow_view"`
	AllowFineTuning    bool    `json:"allow_fine_tuning"`
	Organization       string  `json:"organization"`
	Group              *string `json:"group"`
	IsBlocking         bool    `json:"is_blocking"`
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelCard `json:"data"`
}

// tokenizeResponse is vLLM's TokenizeResponse (vllm/entrypoints/openai/protocol.py).
type tokenizeResponse struct {
	Count       int      `json:"count"`
	MaxModelLen int      `json:"max_model_len"`
	Tokens      []int    `json:"tokens"`
	TokenStrs   []string `json:"token_strs"`
}
