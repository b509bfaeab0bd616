package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// continues and the ids it will carry. Issue 6's tool loop runs several inference calls per
// turn; each appends to the conversation and the turn's output items.
type turn struct {
	req       *createRequest
	owner     string
	id        string // "resp_..."
	msgID     string // id of the assistant message in the output
	session   string // id of the first response of the chain: the X-Strata-Session hint
	createdAt time.Time

	history      []openai.Message  // chat messages of the previous turns, without instructions
	historyItems []json.RawMessage // input items of the previous turns, their outputs included
}

// newTurn starts answering req for owner. With previous_response_id it reads the stored
// conversation: one read by primary key. Errors: 404 previous_response_not_found when the
// previous response does not exist for this owner, store errors.
func (p *Platform) newTurn(ctx context.Context, owner string, req *createRequest) (*turn, error) {
	t := &turn{req: req, owner: owner, id: newID("resp_"), msgID: newID("msg_"), createdAt: p.clk.Now()}
	t.session = t.id
	if req.PreviousResponseID == "" {
		return t, nil
	}
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
	}
	if err := errors.Join(json.Unmarshal(rec.Messages, &t.history), json.Unmarshal(rec.InputItems, &t.historyItems),
		json.Unmarshal(rec.Response, &prev)); err != nil {
		return nil, fmt.Errorf("platform: stored response %s: %w", rec.ID, err)
	}
	t.historyItems = append(t.historyItems, prev.Output...)
	t.session = rec.SessionID
	return t, nil
}

// chatRequest is the body sent to /v1/chat/completions for a turn.
type chatRequest struct {
	Model         string                `json:"model"`
	Messages      []openai.Message      `json:"messages"`
	MaxTokens     *int64                `json:"max_tokens,omitempty"`
	Temperature   *float64              `json:"temperature,omitempty"`
	TopP          *float64              `json:"top_p,omitempty"`
	User          *string               `json:"user,omitempty"`
	Stream        bool                  `json:"stream,omitempty"`
	StreamOptions *openai.StreamOptions `json:"stream_options,omitempty"`
}

// chatBody renders the chat completion request of the turn: instructions as a system message
// (instructions are not carried over from previous responses, as OpenAI specifies), the
// stored conversation, then this request's input. max_output_tokens becomes max_tokens, the
// spelling every OpenAI-compatible engine accepts.
func (t *turn) chatBody(stream bool) []byte {
	msgs := make([]openai.Message, 0, 1+len(t.history)+len(t.req.Input))
	if t.req.Instructions != nil {
		msgs = append(msgs, openai.Message{Role: "system", Content: openai.TextContent(*t.req.Instructions)})
	}
	msgs = append(msgs, t.history...)
	msgs = append(msgs, chatMessages(t.req.Input)...)
	cr := chatRequest{Model: t.req.Model, Messages: msgs, MaxTokens: t.req.MaxOutputTokens,
		Temperature: t.req.Temperature, TopP: t.req.TopP, User: t.req.User, Stream: stream}
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
		Tools: []json.RawMessage{}, TopP: req.TopP, Truncation: "disabled", User: req.User,
		SafetyIdentifier: req.SafetyIdentifier, PromptCacheKey: req.PromptCacheKey, Metadata: req.Metadata,
	}
	if res.Metadata == nil {
		res.Metadata = map[string]string{}
	}
	if req.PreviousResponseID != "" {
		res.PreviousResponseID = &req.PreviousResponseID
	}
	return res
}

// finish sets the final state of res from the engine's answer. finish_reason "length" makes
// the response incomplete with reason max_output_tokens (also when the engine's context
// length was the limit: the chat API does not tell the two apart), "content_filter" makes it
// incomplete with reason content_filter; anything else completes it.
func (t *turn) finish(res *response, model, text, finishReason string, u *openai.Usage, now time.Time) *outputMessage {
	if model != "" {
		res.Model = model
	}
	msg := &outputMessage{Type: "message", ID: t.msgID, Status: statusCompleted, Role: "assistant",
		Content: []outputText{newOutputText(text)}}
	res.Status = statusCompleted
	switch finishReason {
	case "length":
		res.Status, res.IncompleteDetails = statusIncomplete, &incompleteDetails{Reason: "max_output_tokens"}
	case "content_filter":
		res.Status, res.IncompleteDetails = statusIncomplete, &incompleteDetails{Reason: "content_filter"}
	}
	if res.Status == statusCompleted {
		c := now.Unix()
		res.CompletedAt = &c
	} else {
		msg.Status = statusIncomplete
	}
	res.Output = []outputItem{msg}
	res.Usage = responseUsage(u)
	return msg
}

// responseUsage maps the engine's chat usage to the Responses usage block; nil stays nil.
// Source of every number: the engine (prompt_tokens_details.cached_tokens is vLLM's prefix
// cache hit count).
func responseUsage(u *openai.Usage) *usage {
	if u == nil {
		return nil
	}
	total := u.TotalTokens
	if total == 0 {
		total = u.PromptTokens + u.CompletionTokens
	}
	return &usage{
		InputTokens:        int64(u.PromptTokens),
		InputTokensDetails: inputTokensDetails{CachedTokens: int64(u.CachedTokens())},
		OutputTokens:       int64(u.CompletionTokens), TotalTokens: int64(total),
	}
}

// save stores the finished turn when the request asked for it (store defaults to true):
// the Response as the client got it (resJSON), the conversation's input items and its chat
// messages including this answer, so a continuation is one read.
func (p *Platform) save(ctx context.Context, t *turn, resJSON []byte, text string) error {
	if !t.req.Store {
		return nil
	}
	msgs := slices.Concat(t.history, chatMessages(t.req.Input),
		[]openai.Message{{Role: "assistant", Content: openai.TextContent(text)}})
	items := slices.Clip(t.historyItems)
	for _, it := range t.req.Input {
		items = append(items, listItem(it))
	}
	mj, err := json.Marshal(msgs)
	if err != nil {
		return err
	}
	ij, err := json.Marshal(items)
	if err != nil {
		return err
	}
	return p.st.PutResponse(ctx, &store.ResponseRecord{
		ID: t.id, Owner: t.owner, PreviousResponseID: t.req.PreviousResponseID, SessionID: t.session,
		Model: t.req.Model, CreatedAt: t.createdAt, Response: resJSON, InputItems: ij, Messages: mj,
	})
}

// callChat sends the turn's chat completion to the layer below. The caller's headers go along
// (Authorization for the gateway, X-Request-Id), with X-Strata-Session set to the chain's
// first response id so the router keeps the conversation on a replica whose KV cache holds
// its prefix. A non-200 answer is returned as an *upstreamError to relay.
func (p *Platform) callChat(r *http.Request, t *turn, stream bool) (*http.Response, error) {
	body := t.chatBody(stream)
	out := openai.NewUpstreamRequest(r, bytes.NewReader(body), int64(len(body)))
	out.Method = http.MethodPost
	out.URL.Path, out.URL.RawPath, out.URL.RawQuery = openai.PathChatCompletions, "", ""
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.Header.Set("Content-Type", "application/json")
	out.Header.Del("Accept-Encoding") // the platform parses this answer: no client-chosen encoding
	out.Header.Set(openai.HeaderSession, t.session)
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
func (p *Platform) createResponse(w http.ResponseWriter, r *http.Request) {
	start := p.clk.Now()
	defer func() { p.responseSeconds.Observe(p.clk.Since(start).Seconds()) }()
	owner, ok := ownerOf(r)
	if !ok {
		p.fail(w, errNoKey)
		return
	}
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
	if req.Stream {
		p.streamResponse(w, r, t)
		return
	}
	resp, err := p.callChat(r, t, false)
	if err != nil {
		p.fail(w, err)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	resp.Body.Close()
	if err != nil {
		p.fail(w, p.transportError(r, err))
		return
	}
	var cc openai.ChatCompletion
	if err := json.Unmarshal(raw, &cc); err != nil || len(cc.Choices) == 0 {
		p.log.Warn("layer below answered an unreadable chat completion", "bytes", len(raw))
		p.fail(w, openai.ErrUpstream)
		return
	}
	text := cc.Choices[0].Message.ContentText()
	res := t.response(statusCompleted)
	t.finish(res, cc.Model, text, cc.Choices[0].FinishReason, cc.Usage, p.clk.Now())
	resJSON, err := json.Marshal(res)
	if err != nil {
		p.fail(w, err)
		return
	}
	if err := p.save(r.Context(), t, resJSON, text); err != nil {
		p.fail(w, fmt.Errorf("platform: store response: %w", err))
		return
	}
	copyRateLimitHeaders(w.Header(), resp.Header)
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
func (p *Platform) deleteResponse(w http.ResponseWriter, r *http.Request) {
	owner, ok := ownerOf(r)
	if !ok {
		p.fail(w, errNoKey)
		return
	}
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

// owned reads the response named by the path for the caller. Errors: 401 without a key, 404
// when it does not exist or belongs to another key (the same answer, so ids cannot be probed).
func (p *Platform) owned(r *http.Request) (*store.ResponseRecord, error) {
	owner, ok := ownerOf(r)
	if !ok {
		return nil, errNoKey
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
