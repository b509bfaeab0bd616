package platform

import "encoding/json"

// Wire types of the OpenAI Responses API, server side. Source: the OpenAI API reference
// (https://platform.openai.com/docs/api-reference/responses) as encoded by openai-go v3
// (responses/response.go: Response, ResponseOutputMessage, ResponseOutputText, ResponseUsage,
// Response*Event), checked by round trips through that client in the tests.
//
// Only what Strata produces is modelled. Fields the API defines as nullable are pointers so
// they render as JSON null, as OpenAI sends them, rather than being left out.

// Response statuses (Response.status).
const (
	statusInProgress = "in_progress"
	statusCompleted  = "completed"
	statusIncomplete = "incomplete"
	statusFailed     = "failed"
)

// response is the Response object (object "response").
type response struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"`
	CreatedAt          int64              `json:"created_at"`
	Status             string             `json:"status"`
	Background         bool               `json:"background"`
	CompletedAt        *int64             `json:"completed_at"`
	Error              *responseError     `json:"error"`
	IncompleteDetails  *incompleteDetails `json:"incomplete_details"`
	Instructions       *string            `json:"instructions"`
	MaxOutputTokens    *int64             `json:"max_output_tokens"`
	MaxToolCalls       *int64             `json:"max_tool_calls"`
	Model              string             `json:"model"`
	Output             []outputItem       `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	PreviousResponseID *string            `json:"previous_response_id"`
	Conversation       *conversationRef   `json:"conversation"`
	Reasoning          reasoning          `json:"reasoning"`
	ServiceTier        string             `json:"service_tier"`
	Store              bool               `json:"store"`
	// Temperature and TopP are null when the request left them to the engine's defaults
	// (vLLM takes them from the model's generation config), rather than claiming OpenAI's 1.0.
	Temperature      *float64          `json:"temperature"`
	Text             textConfig        `json:"text"`
	ToolChoice       json.RawMessage   `json:"tool_choice"`
	Tools            []json.RawMessage `json:"tools"`
	TopLogprobs      int64             `json:"top_logprobs"`
	TopP             *float64          `json:"top_p"`
	Truncation       string            `json:"truncation"`
	Usage            *usage            `json:"usage"`
	User             *string           `json:"user"`
	SafetyIdentifier *string           `json:"safety_identifier"`
	PromptCacheKey   *string           `json:"prompt_cache_key"`
	Metadata         map[string]string `json:"metadata"`
}

// conversationRef is Response.conversation: the conversation the response was added to.
type conversationRef struct {
	ID string `json:"id"`
}

// responseError is Response.error, set when status is "failed". Codes are OpenAI's
// (ResponseErrorCode: "server_error", "rate_limit_exceeded", ...).
type responseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// incompleteDetails is Response.incomplete_details: reason "max_output_tokens" or
// "content_filter" (OpenAI's), or "max_infer_iters" (Strata's, as LlamaStack: the server-side
// tool loop ran its maximum number of inference calls).
type incompleteDetails struct {
	Reason string `json:"reason"`
}

type reasoning struct {
	Effort  *string `json:"effort"`
	Summary *string `json:"summary"`
}

type textConfig struct {
	Format textFormat `json:"format"`
}

type textFormat struct {
	Type string `json:"type"`
}

// usage is Response.usage, mapped from the engine's chat usage block.
type usage struct {
	InputTokens         int64               `json:"input_tokens"`
	InputTokensDetails  inputTokensDetails  `json:"input_tokens_details"`
	OutputTokens        int64               `json:"output_tokens"`
	OutputTokensDetails outputTokensDetails `json:"output_tokens_details"`
	TotalTokens         int64               `json:"total_tokens"`
}

type inputTokensDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

type outputTokensDetails struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// outputItem is one element of Response.output: a message or a function_call; server-side
// tools (file_search_call, mcp_call, ...) add further implementations.
type outputItem interface {
	itemID() string
}

var (
	_ outputItem = (*outputMessage)(nil)
	_ outputItem = (*functionCall)(nil)
)

// functionCall is a function_call item (ResponseFunctionToolCall): a call of a client-side
// function tool, returned to the client, which answers it with a function_call_output item.
// ID is the item's id ("fc_..."); CallID is the engine's tool call id, which the output names.
type functionCall struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	Status    string `json:"status"`
}

func (c *functionCall) itemID() string { return c.ID }

// functionCallOutput is a function_call_output item as input item lists render it
// (ResponseFunctionToolCallOutputItem).
type functionCallOutput struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	CallID string `json:"call_id"`
	Output string `json:"output"`
	Status string `json:"status"`
}

// outputMessage is an assistant message item (type "message", role "assistant"): in
// Response.output, and in input item lists for the turns the model answered.
type outputMessage struct {
	Type    string       `json:"type"`
	ID      string       `json:"id"`
	Status  string       `json:"status"`
	Role    string       `json:"role"`
	Content []outputText `json:"content"`
}

func (m *outputMessage) itemID() string { return m.ID }

// outputText is a content part of type "output_text". Annotations and Logprobs are always
// present (as []): clients index them without nil checks.
type outputText struct {
	Type        string            `json:"type"`
	Text        string            `json:"text"`
	Annotations []json.RawMessage `json:"annotations"`
	Logprobs    []json.RawMessage `json:"logprobs"`
}

func newOutputText(text string) outputText {
	return outputText{Type: "output_text", Text: text, Annotations: []json.RawMessage{}, Logprobs: []json.RawMessage{}}
}

// inputMessage is a user, system or developer message item as listed by
// GET /v1/responses/{id}/input_items (ResponseInputMessageItem).
type inputMessage struct {
	Type    string      `json:"type"`
	ID      string      `json:"id"`
	Status  string      `json:"status"`
	Role    string      `json:"role"`
	Content []inputText `json:"content"`
}

// inputText is a content part of type "input_text".
type inputText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// itemList is the page answered by GET /v1/responses/{id}/input_items (object "list").
type itemList struct {
	Object  string            `json:"object"`
	Data    []json.RawMessage `json:"data"`
	FirstID *string           `json:"first_id"`
	LastID  *string           `json:"last_id"`
	HasMore bool              `json:"has_more"`
}

// deletedResponse is the answer of DELETE /v1/responses/{id}.
type deletedResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

// Stream events (Server-Sent Events with an "event:" line equal to Type). Every event carries
// a sequence_number, 0 for the first of a stream, increasing by one.

type responseEvent struct { // response.created, .in_progress, .completed, .incomplete, .failed
	Type           string    `json:"type"`
	SequenceNumber int64     `json:"sequence_number"`
	Response       *response `json:"response"`
}

type outputItemEvent struct { // response.output_item.added, .done
	Type           string     `json:"type"`
	SequenceNumber int64      `json:"sequence_number"`
	OutputIndex    int        `json:"output_index"`
	Item           outputItem `json:"item"`
}

type contentPartEvent struct { // response.content_part.added, .done
	Type           string     `json:"type"`
	SequenceNumber int64      `json:"sequence_number"`
	ItemID         string     `json:"item_id"`
	OutputIndex    int        `json:"output_index"`
	ContentIndex   int        `json:"content_index"`
	Part           outputText `json:"part"`
}

type textDeltaEvent struct { // response.output_text.delta
	Type           string            `json:"type"`
	SequenceNumber int64             `json:"sequence_number"`
	ItemID         string            `json:"item_id"`
	OutputIndex    int               `json:"output_index"`
	ContentIndex   int               `json:"content_index"`
	Delta          string            `json:"delta"`
	Logprobs       []json.RawMessage `json:"logprobs"`
}

type textDoneEvent struct { // response.output_text.done
	Type           string            `json:"type"`
	SequenceNumber int64             `json:"sequence_number"`
	ItemID         string            `json:"item_id"`
	OutputIndex    int               `json:"output_index"`
	ContentIndex   int               `json:"content_index"`
	Text           string            `json:"text"`
	Logprobs       []json.RawMessage `json:"logprobs"`
}

type argsDeltaEvent struct { // response.function_call_arguments.delta
	Type           string `json:"type"`
	SequenceNumber int64  `json:"sequence_number"`
	ItemID         string `json:"item_id"`
	OutputIndex    int    `json:"output_index"`
	Delta          string `json:"delta"`
}

type argsDoneEvent struct { // response.function_call_arguments.done
	Type           string `json:"type"`
	SequenceNumber int64  `json:"sequence_number"`
	ItemID         string `json:"item_id"`
	OutputIndex    int    `json:"output_index"`
	Name           string `json:"name"`
	Arguments      string `json:"arguments"`
}

type errorEvent struct { // error
	Type           string  `json:"type"`
	SequenceNumber int64   `json:"sequence_number"`
	Code           *string `json:"code"`
	Message        string  `json:"message"`
	Param          *string `json:"param"`
}
