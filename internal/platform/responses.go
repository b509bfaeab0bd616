package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// maxUpstreamBody bounds a non-streaming answer read from the layer below.
const maxUpstreamBody = 64 << 20

// maxErrorBody bounds an error answer read from the layer below.
const maxErrorBody = 1 << 20

// turn is one POST /v1/responses being answered: the checked request, the conversation it
// continues and the ids it will carry. The tool loop (loop.go) runs one or more inference
// calls per turn; each appends to convo and to the Response's output items.
type turn struct {
	req       *createRequest
	owner     string
	id        string // "resp_..."
	session   string // id of the first response of the chain: the X-Strata-Session hint
	createdAt time.Time
	maxIters  int

	history      []openai.Message  // chat messages of the previous turns, without instructions
	historyItems []json.RawMessage // input items of the previous turns, their outputs included
	conv         string            // conversation id ("conv_..."), "" when none

	// convo is the conversation as the next inference call sends it: history, this request's
	// input, then the assistant and tool messages of the loop so far.
	convo []openai.Message
	// server are the server-side tools of this turn by function name; tools the model calls
	// that are not here are client-side: the loop returns their calls to the client.
	server map[string]serverTool
	// maxTokens is max_tokens of the next inference call: what is left of max_output_tokens.
	maxTokens *int64
	// calls counts the inference calls made so far.
	calls int
	// lastHeader is the header of the last answer of the layer below (rate-limit headers).
	lastHeader http.Header
	// stored is set once the response is in the store (a queued background response): later
	// saves update it.
	stored bool
	// noMoreTools is set once max_tool_calls is reached: later calls get tool_choice "none".
	noMoreTools bool
	// mcp are the sessions with the request's MCP servers, open while the loop runs.
	mcp []*mcpServer
	// approvals are the request's mcp_approval_response items, resolved (mcp.go).
	approvals []mcpApproval
}

// newTurn starts answering req for owner. With previous_response_id it reads the stored
// conversation: one read by primary key; with conversation, the conversation's items. Errors:
// 404 previous_response_not_found / not_found when the previous response or the conversation
// does not exist for this owner, 400 when both are given or when a tool call lacks its output,
// store errors.
func (p *Platform) newTurn(ctx context.Context, owner string, req *createRequest) (*turn, error) {
	t := &turn{req: req, owner: owner, id: newID("resp_"), createdAt: p.clk.Now(), maxIters: p.cfg.InferIters()}
	if req.MaxInferIters != nil {
		t.maxIters = int(min(*req.MaxInferIters, 1<<20))
	}
	t.session = t.id
	if req.PreviousResponseID != "" && req.Conversation != "" {
		return nil, openai.InvalidRequest("conversation", codeInvalidValue, "Mutually exclusive parameters: Ensure you are only providing one of: 'previous_response_id' or 'conversation'.")
	}
	switch {
	case req.PreviousResponseID != "":
		rec, err := p.st.GetResponse(ctx, owner, req.PreviousResponseID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, &openai.Error{Status: http.StatusNotFound, Type: openai.TypeInvalidRequest,
				Param: "previous_response_id", Code: codePreviousNotFound,
				Message: fmt.Sprintf("Previous response with id '%s' not found.", req.PreviousResponseID)}
		}
		if err != nil {
			return nil, err
		}
		var prev struct {
			Output []json.RawMessage `json:"output"`
			Status string            `json:"status"`
		}
		if err := errors.Join(json.Unmarshal(rec.Messages, &t.history), json.Unmarshal(rec.InputItems, &t.historyItems),
			json.Unmarshal(rec.Response, &prev)); err != nil {
			return nil, fmt.Errorf("platform: stored response %s: %w", rec.ID, err)
		}
		if prev.Status == statusQueued || prev.Status == statusInProgress {
			return nil, openai.InvalidRequest("previous_response_id", codeInvalidValue,
				"Previous response with id '%s' is still in progress; wait for it to finish.", req.PreviousResponseID)
		}
		t.historyItems = append(t.historyItems, prev.Output...)
		t.session = rec.SessionID
	case req.Conversation != "":
		if err := p.loadConversation(ctx, t); err != nil {
			return nil, err
		}
	}
	if allowed := p.cfg.MCPAllowedURLs; len(allowed) > 0 {
		for _, m := range req.MCP {
			if !slices.ContainsFunc(allowed, func(prefix string) bool { return strings.HasPrefix(m.ServerURL, prefix) }) {
				return nil, openai.InvalidRequest("tools", codeInvalidValue, "Invalid 'tools': this server does not allow the MCP server URL of '%s'.", m.ServerLabel)
			}
		}
	}
	var err error
	if t.server, err = p.serverTools(ctx, owner, req); err != nil {
		return nil, err
	}
	if err := t.resolveApprovals(); err != nil {
		return nil, err
	}
	t.convo = slices.Concat(t.history, chatMessages(req.Input))
	if err := checkToolPairs(t.convo); err != nil {
		return nil, err
	}
	return t, nil
}

// chatRequest is the body sent to /v1/chat/completions for one inference call of a turn.
type chatRequest struct {
	Model             string                `json:"model"`
	Messages          []openai.Message      `json:"messages"`
	MaxTokens         *int64                `json:"max_tokens,omitempty"`
	Temperature       *float64              `json:"temperature,omitempty"`
	TopP              *float64              `json:"top_p,omitempty"`
	User              *string               `json:"user,omitempty"`
	Tools             []chatTool            `json:"tools,omitempty"`
	ToolChoice        json.RawMessage       `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool                 `json:"parallel_tool_calls,omitempty"`
	Stream            bool                  `json:"stream,omitempty"`
	StreamOptions     *openai.StreamOptions `json:"stream_options,omitempty"`
}

// chatBody renders the next chat completion request of the turn: instructions as a system
// message (instructions are not carried over from previous responses, as OpenAI specifies),
// then convo. max_output_tokens (what is left of it) becomes max_tokens, the spelling every
// OpenAI-compatible engine accepts. Tools are the request's function tools and the turn's
// server-side tools; tool_choice and parallel_tool_calls are sent only with tools (vLLM
// rejects tool_choice without them).
func (t *turn) chatBody(stream bool) []byte {
	msgs := make([]openai.Message, 0, 1+len(t.convo))
	if t.req.Instructions != nil {
		msgs = append(msgs, openai.Message{Role: "system", Content: openai.TextContent(*t.req.Instructions)})
	}
	msgs = append(msgs, t.convo...)
	cr := chatRequest{Model: t.req.Model, Messages: msgs, MaxTokens: t.maxTokens,
		Temperature: t.req.Temperature, TopP: t.req.TopP, User: t.req.User, Stream: stream}
	if t.maxTokens == nil {
		cr.MaxTokens = t.req.MaxOutputTokens
	}
	cr.Tools = chatTools(t.req.Tools)
	for _, name := range slices.Sorted(maps.Keys(t.server)) {
		cr.Tools = append(cr.Tools, chatTools([]functionTool{t.server[name].definition()})...)
	}
	if len(cr.Tools) > 0 {
		cr.ToolChoice = chatToolChoice(t.req.ToolChoice)
		if t.noMoreTools {
			cr.ToolChoice = json.RawMessage(`"none"`)
		}
		parallel := t.req.ParallelToolCalls
		cr.ParallelToolCalls = &parallel
	}
	if stream {
		cr.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
	}
	b, _ := json.Marshal(cr) // only marshalable types
	return b
}

// response returns the Response object of the turn in the given status, with the request's
// settings echoed and no output yet.
func (t *turn) response(status string) *response {
	req := t.req
	res := &response{
		ID: t.id, Object: "response", CreatedAt: t.createdAt.Unix(), Status: status,
		Instructions: req.Instructions, MaxOutputTokens: req.MaxOutputTokens, MaxToolCalls: req.MaxToolCalls,
		Model: req.Model, Output: []outputItem{}, ParallelToolCalls: req.ParallelToolCalls,
		ServiceTier: "default", Store: req.Store, Temperature: req.Temperature,
		Text: textConfig{Format: textFormat{Type: "text"}}, ToolChoice: req.ToolChoice,
		Tools: make([]json.RawMessage, 0, len(req.Tools)), TopP: req.TopP, Truncation: "disabled", User: req.User,
		SafetyIdentifier: req.SafetyIdentifier, PromptCacheKey: req.PromptCacheKey, Metadata: req.Metadata,
	}
	for _, tool := range req.Tools {
		b, _ := json.Marshal(tool)
		res.Tools = append(res.Tools, b)
	}
	if req.FileSearch != nil {
		b, _ := json.Marshal(req.FileSearch)
		res.Tools = append(res.Tools, b)
	}
	for _, m := range req.MCP {
		b, _ := json.Marshal(m)
		res.Tools = append(res.Tools, b)
	}
	if res.Metadata == nil {
		res.Metadata = map[string]string{}
	}
	if req.PreviousResponseID != "" {
		res.PreviousResponseID = &req.PreviousResponseID
	}
	if t.conv != "" {
		res.Conversation = &conversationRef{ID: t.conv}
	}
	return res
}

// addUsage adds the engine's chat usage of one inference call to the Response usage block
// (nil until the first call that reports usage). Source of every number: the engine
// (prompt_tokens_details.cached_tokens is vLLM's prefix cache hit count).
func addUsage(dst **usage, u *openai.Usage) {
	if u == nil {
		return
	}
	if *dst == nil {
		*dst = &usage{}
	}
	total := u.TotalTokens
	if total == 0 {
		total = u.PromptTokens + u.CompletionTokens
	}
	d := *dst
	d.InputTokens += int64(u.PromptTokens)
	d.InputTokensDetails.CachedTokens += int64(u.CachedTokens())
	d.OutputTokens += int64(u.CompletionTokens)
	d.TotalTokens += int64(total)
}

// save stores the finished turn when the request asked for it (store defaults to true):
// the Response as the client got it (resJSON), the conversation's input items and its chat
// messages including this turn's loop, so a continuation is one read. With a conversation,
// the turn's input and output items are appended to it (whatever store says, as OpenAI does).
//
// A background response is saved twice: queued (res nil: no conversation append yet), then in
// its final state, as an update.
func (p *Platform) save(ctx context.Context, t *turn, res *response, resJSON []byte) error {
	if t.conv != "" && res != nil {
		items := make([]json.RawMessage, 0, len(t.req.Input)+len(res.Output))
		for _, it := range t.req.Input {
			items = append(items, listItem(it))
		}
		for _, it := range res.Output {
			b, err := json.Marshal(it)
			if err != nil {
				return err
			}
			items = append(items, b)
		}
		if err := p.appendConversationItems(ctx, t.owner, t.conv, items); err != nil {
			return err
		}
	}
	if !t.req.Store {
		return nil
	}
	items := slices.Clip(t.historyItems)
	for _, it := range t.req.Input {
		items = append(items, listItem(it))
	}
	mj, err := json.Marshal(t.convo)
	if err != nil {
		return err
	}
	ij, err := json.Marshal(items)
	if err != nil {
		return err
	}
	rec := &store.ResponseRecord{
		ID: t.id, Owner: t.owner, PreviousResponseID: t.req.PreviousResponseID, SessionID: t.session,
		Model: t.req.Model, CreatedAt: t.createdAt, Response: resJSON, InputItems: ij, Messages: mj,
	}
	if t.stored {
		return p.st.UpdateResponse(ctx, rec)
	}
	return p.writer.put(ctx, rec)
}

// callChat sends the turn's next chat completion to the layer below. The caller's headers go
// along (Authorization for the gateway, X-Request-Id, suffixed ":1", ":2", ... from the
// loop's second call on), with X-Strata-Session set to the chain's first response id so the
// router keeps the conversation on a replica whose KV cache holds its prefix. A non-200 answer is returned as an *upstreamError to relay.
func (p *Platform) callChat(r *http.Request, t *turn, stream bool) (*http.Response, error) {
	body := t.chatBody(stream)
	out := openai.NewUpstreamRequest(r, bytes.NewReader(body), int64(len(body)))
	out.Method = http.MethodPost
	out.URL.Path, out.URL.RawPath, out.URL.RawQuery = openai.PathChatCompletions, "", ""
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.Header.Set("Content-Type", "application/json")
	out.Header.Del("Accept-Encoding") // the platform parses this answer: no client-chosen encoding
	out.Header.Set(openai.HeaderSession, t.session)
	t.calls++
	if id := out.Header.Get(openai.HeaderRequestID); id != "" && t.calls > 1 {
		// The gateway meters once per X-Request-Id (its idempotency key): every further
		// inference call of the loop gets its own derived id, or it would not be billed.
		out.Header.Set(openai.HeaderRequestID, id+":"+strconv.Itoa(t.calls-1))
	}
	resp, err := p.next.RoundTrip(out)
	if err != nil {
		return nil, p.transportError(r, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		e := openai.ParseError(resp.StatusCode, b)
		if e == nil {
			p.log.Warn("layer below answered without an error envelope", "status", resp.StatusCode)
			return nil, openai.ErrUpstream
		}
		return nil, &upstreamError{err: e, header: resp.Header}
	}
	return resp, nil
}

// upstreamError is an error answer of the layer below (401, 404 model_not_found, 429, ...),
// relayed with its status, envelope and rate-limit headers. The layer below already made its
// envelope fit for clients.
type upstreamError struct {
	err    *openai.Error
	header http.Header
}

func (e *upstreamError) Error() string { return e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

// fail answers err: the one place the Responses handlers write errors.
func (p *Platform) fail(w http.ResponseWriter, err error) {
	var ue *upstreamError
	if errors.As(err, &ue) {
		copyRateLimitHeaders(w.Header(), ue.header)
	}
	if ue == nil && openai.AsError(err).Status == http.StatusInternalServerError {
		p.log.Error("responses request failed", "err", err) // the client sees no detail
	}
	openai.WriteError(w, err)
}

// copyRateLimitHeaders copies the gateway's x-ratelimit-* and retry-after headers, which OpenAI
// clients read on every answer.
func copyRateLimitHeaders(dst, src http.Header) {
	for k, vs := range src {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-ratelimit-") || lk == openai.HeaderRetryAfter || lk == "retry-after-ms" {
			dst[k] = slices.Clone(vs)
		}
	}
}

// createResponse answers POST /v1/responses.
func (p *Platform) createResponse(w http.ResponseWriter, r *http.Request, owner string) {
	start := p.clk.Now()
	defer func() { p.responseSeconds.Observe(p.clk.Since(start).Seconds()) }()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		p.fail(w, err)
		return
	}
	req, err := parseCreateRequest(body)
	if err != nil {
		p.fail(w, err)
		return
	}
	t, err := p.newTurn(r.Context(), owner, req)
	if err != nil {
		p.fail(w, err)
		return
	}
	if req.Background {
		p.startBackground(w, r, t)
		return
	}
	if req.Stream {
		p.streamResponse(w, r, t)
		return
	}
	res := t.response(statusInProgress)
	if err := p.runLoop(r, t, res, nil); err != nil {
		p.fail(w, err)
		return
	}
	resJSON, err := json.Marshal(res)
	if err != nil {
		p.fail(w, err)
		return
	}
	if err := p.save(r.Context(), t, res, resJSON); err != nil {
		p.fail(w, fmt.Errorf("platform: store response: %w", err))
		return
	}
	copyRateLimitHeaders(w.Header(), t.lastHeader)
	writeJSON(w, resJSON)
}

// getResponse answers GET /v1/responses/{id}: the stored Response as it was returned.
func (p *Platform) getResponse(w http.ResponseWriter, r *http.Request) {
	rec, err := p.owned(r)
	if err != nil {
		p.fail(w, err)
		return
	}
	if v := r.URL.Query().Get("stream"); v != "" && v != "false" {
		p.fail(w, unsupported("stream", "Replaying a stored response as a stream is not supported yet."))
		return
	}
	writeJSON(w, rec.Response)
}

// deleteResponse answers DELETE /v1/responses/{id} with {id, object:"response", deleted:true}.
func (p *Platform) deleteResponse(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	if err := p.st.DeleteResponse(r.Context(), owner, id); err != nil {
		p.fail(w, notFound(id, err))
		return
	}
	b, _ := json.Marshal(deletedResponse{ID: id, Object: "response", Deleted: true})
	writeJSON(w, b)
}

// listInputItems answers GET /v1/responses/{id}/input_items: the input items of the whole
// conversation up to the response (previous inputs and outputs of the chain, then its own
// input), paged with limit (1..100, default 20), order (asc | desc, default desc) and after
// (an item id).
func (p *Platform) listInputItems(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			p.fail(w, openai.InvalidRequest("limit", codeInvalidValue, "Invalid 'limit': expected an integer between 1 and 100, but got '%s'.", v))
			return
		}
		limit = n
	}
	order := q.Get("order")
	switch order {
	case "":
		order = "desc"
	case "asc", "desc":
	default:
		p.fail(w, invalidValue("order", order, "'asc' and 'desc'"))
		return
	}
	rec, err := p.owned(r)
	if err != nil {
		p.fail(w, err)
		return
	}
	var items []json.RawMessage
	if err := json.Unmarshal(rec.InputItems, &items); err != nil {
		p.fail(w, fmt.Errorf("platform: stored input items of %s: %w", rec.ID, err))
		return
	}
	if order == "desc" {
		slices.Reverse(items)
	}
	if after := q.Get("after"); after != "" {
		i := slices.IndexFunc(items, func(it json.RawMessage) bool { return itemIDOf(it) == after })
		if i < 0 {
			p.fail(w, openai.InvalidRequest("after", codeInvalidValue, "Invalid 'after': no input item with id '%s' in response '%s'.", after, rec.ID))
			return
		}
		items = items[i+1:]
	}
	page := itemList{Object: "list", Data: items, HasMore: len(items) > limit}
	if page.HasMore {
		page.Data = items[:limit]
	}
	if len(page.Data) > 0 {
		first, last := itemIDOf(page.Data[0]), itemIDOf(page.Data[len(page.Data)-1])
		page.FirstID, page.LastID = &first, &last
	} else {
		page.Data = []json.RawMessage{}
	}
	b, err := json.Marshal(page)
	if err != nil {
		p.fail(w, err)
		return
	}
	writeJSON(w, b)
}

// owned reads the response named by the path for the caller. Errors: 401 without a key (or a
// refused one), 404 when it does not exist or belongs to another owner (the same answer, so
// ids cannot be probed).
func (p *Platform) owned(r *http.Request) (*store.ResponseRecord, error) {
	owner, err := p.ownerOf(r)
	if err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	rec, err := p.st.GetResponse(r.Context(), owner, id)
	if err != nil {
		return nil, notFound(id, err)
	}
	return rec, nil
}

// notFound maps store.ErrNotFound to the client's 404 and passes other errors on.
func notFound(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return openai.NotFound("Response with id '%s' not found.", id)
	}
	return err
}

func itemIDOf(raw json.RawMessage) string {
	var v struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &v)
	return v.ID
}

func writeJSON(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
