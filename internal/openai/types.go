package openai

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Paths of the inference endpoints every layer serves.
const (
	PathChatCompletions = "/v1/chat/completions"
	PathCompletions     = "/v1/completions"
	PathEmbeddings      = "/v1/embeddings"
	PathModels          = "/v1/models"
	PathResponses       = "/v1/responses"
)

// StreamOptions is the stream_options object of chat and text completions.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
	// ContinuousUsageStats is vLLM's extension: usage on every chunk.
	ContinuousUsageStats bool `json:"continuous_usage_stats,omitempty"`
}

// Message is one chat message. Content is a string or an array of content parts
// ({"type":"text","text":...}); ContentText flattens it.
type Message struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content,omitempty"`
	Name       string          `json:"name,omitempty"`
	ToolCalls  json.RawMessage `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// ContentText returns the message's text: the string content, or the text parts joined. Parts of
// other types (images, audio) are skipped.
func (m Message) ContentText() string {
	c := bytes.TrimSpace(m.Content)
	if len(c) == 0 || bytes.Equal(c, []byte("null")) {
		return ""
	}
	if c[0] == '"' {
		var s string
		_ = json.Unmarshal(c, &s)
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	_ = json.Unmarshal(c, &parts)
	var b strings.Builder
	for _, p := range parts {
		if p.Text != "" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// TextContent returns s encoded as a JSON string, for Message.Content.
func TextContent(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// InferenceRequest holds the fields of a chat completion, completion or embeddings request that
// the layers read. The body itself is forwarded unchanged; fields not named here pass through.
type InferenceRequest struct {
	Model               string          `json:"model"`
	Stream              bool            `json:"stream,omitempty"`
	StreamOptions       *StreamOptions  `json:"stream_options,omitempty"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Messages            []Message       `json:"messages,omitempty"`
	Prompt              json.RawMessage `json:"prompt,omitempty"`
	Input               json.RawMessage `json:"input,omitempty"`
	N                   *int            `json:"n,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	Seed                *int64          `json:"seed,omitempty"`
	Stop                json.RawMessage `json:"stop,omitempty"`
	User                string          `json:"user,omitempty"`
}

// OutputLimit returns the requested output token limit (max_completion_tokens, else max_tokens)
// and whether one was given.
func (r *InferenceRequest) OutputLimit() (int, bool) {
	if r.MaxCompletionTokens != nil {
		return *r.MaxCompletionTokens, true
	}
	if r.MaxTokens != nil {
		return *r.MaxTokens, true
	}
	return 0, false
}

// PromptText returns the prompt as one string for prefix hashing and token estimates: the chat
// messages as "role: content\n" lines, or the completion prompt (a string, or strings joined).
// Token-id prompts are rendered as their decimal ids.
func (r *InferenceRequest) PromptText() string {
	if len(r.Messages) > 0 {
		var b strings.Builder
		for _, m := range r.Messages {
			b.WriteString(m.Role)
			b.WriteString(": ")
			b.WriteString(m.ContentText())
			b.WriteByte('\n')
		}
		return b.String()
	}
	raw := r.Prompt
	if len(raw) == 0 {
		raw = r.Input
	}
	return rawPromptText(raw)
}

func rawPromptText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var many []json.RawMessage
	if json.Unmarshal(raw, &many) == nil {
		var b strings.Builder
		for _, m := range many {
			b.WriteString(rawPromptText(m))
			b.WriteByte(' ')
		}
		return b.String()
	}
	return string(raw) // a number: one token id
}

// ParseInferenceRequest decodes and checks the body of a request to path (PathChatCompletions,
// PathCompletions or PathEmbeddings). Errors are *Error: 400 invalid_json for malformed JSON,
// 400 missing_required_parameter naming model, messages, prompt or input.
func ParseInferenceRequest(path string, body []byte) (*InferenceRequest, error) {
	var r InferenceRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, InvalidRequest("", CodeInvalidJSON,
			"We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
	}
	if r.Model == "" {
		return nil, MissingParam("model")
	}
	switch path {
	case PathChatCompletions:
		if len(r.Messages) == 0 {
			return nil, MissingParam("messages")
		}
	case PathCompletions:
		if isEmptyJSON(r.Prompt) {
			return nil, MissingParam("prompt")
		}
	case PathEmbeddings:
		if isEmptyJSON(r.Input) {
			return nil, MissingParam("input")
		}
	}
	if n, ok := r.OutputLimit(); ok && n < 0 {
		return nil, InvalidRequest("max_tokens", "invalid_value", "max_tokens must be at least 0, got %d.", n)
	}
	return &r, nil
}

func isEmptyJSON(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// PromptTokensDetails is usage.prompt_tokens_details; vLLM fills cached_tokens when prefix
// caching is on (vllm/entrypoints/openai/protocol.py, PromptTokenUsageInfo).
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// Usage is the usage block of chat completions, completions and embeddings. The engine's usage
// block is the authority for metering.
type Usage struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// CachedTokens returns prompt_tokens_details.cached_tokens, 0 when absent.
func (u *Usage) CachedTokens() int {
	if u == nil || u.PromptTokensDetails == nil {
		return 0
	}
	return u.PromptTokensDetails.CachedTokens
}

// ChatCompletion is the non-streaming answer of /v1/chat/completions (object "chat.completion").
type ChatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []ChatChoice `json:"choices"`
	Usage             *Usage       `json:"usage,omitempty"`
	SystemFingerprint *string      `json:"system_fingerprint"`
}

// ChatChoice is one choice of a ChatCompletion.
type ChatChoice struct {
	Index        int     `json:"index"`
	Message      Message `json:"message"`
	FinishReason string  `json:"finish_reason"`
	Logprobs     any     `json:"logprobs"`
}

// ChatCompletionChunk is one streamed event of /v1/chat/completions (object
// "chat.completion.chunk"). The final usage chunk has empty Choices and a Usage.
type ChatCompletionChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []ChunkChoice `json:"choices"`
	Usage   *Usage        `json:"usage,omitempty"`
}

// ChunkChoice is one choice of a ChatCompletionChunk.
type ChunkChoice struct {
	Index        int     `json:"index"`
	Delta        Delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
	Logprobs     any     `json:"logprobs"`
}

// Delta is the incremental message of a chunk.
type Delta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	ToolCalls json.RawMessage `json:"tool_calls,omitempty"`
}

// Completion is the answer of /v1/completions, streamed or not (object "text_completion").
type Completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []CompletionChoice `json:"choices"`
	Usage   *Usage             `json:"usage,omitempty"`
}

// CompletionChoice is one choice of a Completion.
type CompletionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	FinishReason *string `json:"finish_reason"`
	Logprobs     any     `json:"logprobs"`
}

// Model is one entry of GET /v1/models.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// MaxModelLen is vLLM's extension: the context length in tokens.
	MaxModelLen int `json:"max_model_len,omitempty"`
}

// ModelList is the answer of GET /v1/models (object "list").
type ModelList struct {
	Object string  `json:"object"`
	Data   []Model `json:"data"`
}

// UsageOf extracts the usage block from a non-streaming answer body or from one SSE data
// payload. It returns nil when there is none.
func UsageOf(body []byte) *Usage {
	var v struct {
		Usage *Usage `json:"usage"`
	}
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	return v.Usage
}
