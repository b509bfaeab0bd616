package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/strata-inference/strata/internal/openai"
)

// The agent loop of /v1/responses (after LlamaStack's / OGX's responses loop): call the model;
// when it calls server-side tools, run them, append their results to the conversation and call
// it again; stop when it answers without tool calls, when a client-side (function) call is due,
// when max_infer_iters inference calls have run (status incomplete, reason "max_infer_iters"),
// or when max_output_tokens are spent (incomplete, "max_output_tokens").

// Reasons of Response.incomplete_details.
const (
	reasonMaxOutputTokens = "max_output_tokens"
	reasonContentFilter   = "content_filter"
	reasonMaxInferIters   = "max_infer_iters"
)

// serverTool is a tool the platform runs itself inside the loop (file_search, mcp, ...). The
// model is offered it as a function; its calls never reach the client as function_call items
// but as the tool's own item type.
type serverTool interface {
	// definition is the function the model is offered for this tool.
	definition() functionTool
	// pending returns the output item announced when a call starts (status in_progress).
	pending(call chatToolCall) outputItem
	// run executes call, within ctx (bounded by the platform's tool timeout), and returns the
	// finished item (same id as pending's) and the text the model receives as the tool's
	// result. A failing tool is a result the model sees (and a failed item), never an error
	// of the response.
	run(ctx context.Context, call chatToolCall, started outputItem) (outputItem, string)
}

// progressReporter is an optional interface of a server tool: the stream event types sent
// after its item is added (started) and before it is done (finished), each as
// {type, sequence_number, item_id, output_index} (response.file_search_call.*).
type progressReporter interface {
	progress() (started []string, finished string)
}

// eventReporter is an optional interface of a server tool that streams its own events around
// a call (mcp: response.mcp_call.in_progress, response.mcp_call_arguments.delta / .done, then
// response.mcp_call.completed | .failed). It takes precedence over progressReporter. e is
// never nil.
type eventReporter interface {
	startEvents(e *emitter, idx int, item outputItem)
	doneEvents(e *emitter, idx int, done outputItem)
}

// approver is an optional interface of a server tool whose calls may wait for the client's
// approval (mcp's require_approval): such a call ends the response with an approval item.
type approver interface {
	needsApproval() bool
	approvalItem(call chatToolCall) *mcpApprovalRequest
}

// progressEvent is a response.file_search_call.in_progress / .searching / .completed event.
type progressEvent struct {
	Type           string `json:"type"`
	SequenceNumber int64  `json:"sequence_number"`
	ItemID         string `json:"item_id"`
	OutputIndex    int    `json:"output_index"`
}

// serverTools returns the server-side tools of a turn, by function name: the request's
// file_search tool (its vector stores checked to belong to the owner), and builtins (the seam
// tests use). Errors: 404 for a vector store that does not exist for the owner.
func (p *Platform) serverTools(ctx context.Context, owner string, req *createRequest) (map[string]serverTool, error) {
	out := make(map[string]serverTool, len(p.builtins)+1)
	for _, t := range p.builtins {
		out[t.definition().Name] = t
	}
	if fs := req.FileSearch; fs != nil {
		for _, id := range fs.VectorStoreIDs {
			if _, err := p.st.GetVectorStore(ctx, owner, id); err != nil {
				if e, ok := vsNotFound(id, err).(*openai.Error); ok {
					e.Param = "tools"
					return nil, e
				}
				return nil, err
			}
		}
		out[fileSearchName] = &fileSearch{p: p, owner: owner, tool: fs, include: req.IncludeSearchResults}
	}
	return out, nil
}

// step is the answer of one inference call, as the loop needs it.
type step struct {
	model  string
	text   string         // the assistant text of the call (all message items joined)
	calls  []chatToolCall // tool calls, ids set, in the engine's order
	finish string         // the engine's finish_reason
	usage  *openai.Usage
}

// message is the assistant chat message of the step, as the next call sends it back.
func (s *step) message() openai.Message {
	m := openai.Message{Role: "assistant"}
	if s.text != "" || len(s.calls) == 0 {
		m.Content = openai.TextContent(s.text)
	}
	if len(s.calls) > 0 {
		m.ToolCalls, _ = json.Marshal(s.calls)
	}
	return m
}

// runLoop answers the turn into res (output items, usage, status, model). e is nil for a
// plain JSON answer, else the stream the events go to. Errors: those of the first inference
// call (relayed as they are), and later failures (the caller turns them into a failed
// response on a stream).
func (p *Platform) runLoop(r *http.Request, t *turn, res *response, e *emitter) error {
	defer p.closeMCP(t)
	if err := p.listMCP(r, t, res, e); err != nil {
		return err
	}
	if err := p.approvedCalls(r, t, res, e); err != nil {
		return err
	}
	var toolCalls int64
	for iter := 0; ; iter++ {
		if iter >= t.maxIters {
			res.Status, res.IncompleteDetails = statusIncomplete, &incompleteDetails{Reason: reasonMaxInferIters}
			return nil
		}
		if t.req.MaxOutputTokens != nil && iter > 0 {
			var spent int64
			if res.Usage != nil {
				spent = res.Usage.OutputTokens
			}
			left := *t.req.MaxOutputTokens - spent
			if left <= 0 {
				res.Status, res.IncompleteDetails = statusIncomplete, &incompleteDetails{Reason: reasonMaxOutputTokens}
				return nil
			}
			t.maxTokens = &left
		}
		var (
			st  *step
			err error
		)
		if e == nil {
			st, err = p.infer(r, t, res)
		} else {
			st, err = p.inferStream(r, t, res, e)
		}
		if err != nil {
			return err
		}
		if st.model != "" {
			res.Model = st.model
		}
		addUsage(&res.Usage, st.usage)
		t.convo = append(t.convo, st.message())
		switch st.finish {
		case "length":
			res.Status, res.IncompleteDetails = statusIncomplete, &incompleteDetails{Reason: reasonMaxOutputTokens}
			return nil
		case "content_filter":
			res.Status, res.IncompleteDetails = statusIncomplete, &incompleteDetails{Reason: reasonContentFilter}
			return nil
		}
		clientDue, approvalDue := false, false
		for _, c := range st.calls {
			if t.server[c.Function.Name] == nil {
				clientDue = true
			}
		}
		for _, c := range st.calls {
			tool := t.server[c.Function.Name]
			if tool == nil {
				continue
			}
			if t.req.MaxToolCalls != nil && toolCalls >= *t.req.MaxToolCalls {
				// OpenAI: further calls are ignored. The model is told, so the conversation
				// stays well-formed, and is asked for an answer without tools from now on.
				t.convo = append(t.convo, openai.Message{Role: "tool", ToolCallID: c.ID,
					Content: openai.TextContent(fmt.Sprintf("Error: the limit of %d tool calls for this response is reached; answer without tools.", *t.req.MaxToolCalls))})
				t.noMoreTools = true
				continue
			}
			if a, ok := tool.(approver); ok && a.needsApproval() {
				// The call waits for the client: the response ends with the request, and the
				// model is told the call has not run (every call of the conversation answered).
				item := a.approvalItem(c)
				idx := len(res.Output)
				res.Output = append(res.Output, item)
				e.itemAdded(idx, item)
				e.itemDone(idx, item)
				t.convo = append(t.convo, openai.Message{Role: "tool", ToolCallID: c.ID, Content: openai.TextContent(approvalPending)})
				approvalDue = true
				continue
			}
			toolCalls++
			item := tool.pending(c)
			idx := len(res.Output)
			res.Output = append(res.Output, item)
			e.itemAdded(idx, item)
			er, streams := tool.(eventReporter)
			if streams && e != nil {
				er.startEvents(e, idx, item)
			}
			pr, reports := tool.(progressReporter)
			var finished string
			if reports && !streams && e != nil {
				var started []string
				started, finished = pr.progress()
				for _, ev := range started {
					e.send(ev, progressEvent{Type: ev, SequenceNumber: e.next(), ItemID: item.itemID(), OutputIndex: idx})
				}
			}
			ctx, cancel := context.WithTimeout(r.Context(), p.cfg.ToolCallTimeout())
			done, result := tool.run(ctx, c, item)
			cancel()
			if err := r.Context().Err(); err != nil {
				return err
			}
			res.Output[idx] = done
			if streams && e != nil {
				er.doneEvents(e, idx, done)
			}
			if finished != "" {
				e.send(finished, progressEvent{Type: finished, SequenceNumber: e.next(), ItemID: done.itemID(), OutputIndex: idx})
			}
			e.itemDone(idx, done)
			t.convo = append(t.convo, openai.Message{Role: "tool", ToolCallID: c.ID, Content: openai.TextContent(result)})
		}
		if t.req.MaxToolCalls != nil && toolCalls >= *t.req.MaxToolCalls {
			t.noMoreTools = true
		}
		if len(st.calls) == 0 || clientDue || approvalDue {
			res.Status = statusCompleted
			c := p.clk.Now().Unix()
			res.CompletedAt = &c
			return nil
		}
	}
}

// infer runs one non-streaming inference call and appends its output items to res: the
// assistant message (when it has text, or when there is nothing else), then one function_call
// per tool call. With finish_reason "length" the items are incomplete.
func (p *Platform) infer(r *http.Request, t *turn, res *response) (*step, error) {
	resp, err := p.callChat(r, t, false)
	if err != nil {
		return nil, err
	}
	t.lastHeader = resp.Header
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	resp.Body.Close()
	if err != nil {
		return nil, p.transportError(r, err)
	}
	var cc openai.ChatCompletion
	if err := json.Unmarshal(raw, &cc); err != nil || len(cc.Choices) == 0 {
		p.log.Warn("layer below answered an unreadable chat completion", "bytes", len(raw))
		return nil, openai.ErrUpstream
	}
	ch := cc.Choices[0]
	st := &step{model: cc.Model, text: ch.Message.ContentText(), finish: ch.FinishReason, usage: cc.Usage}
	if len(ch.Message.ToolCalls) > 0 && !isNull(ch.Message.ToolCalls) {
		if err := json.Unmarshal(ch.Message.ToolCalls, &st.calls); err != nil {
			p.log.Warn("layer below answered unreadable tool calls", "bytes", len(ch.Message.ToolCalls))
			return nil, openai.ErrUpstream
		}
	}
	status := statusCompleted
	if st.finish == "length" {
		status = statusIncomplete
	}
	if st.text != "" || len(st.calls) == 0 {
		res.Output = append(res.Output, &outputMessage{Type: itemMessage, ID: newID("msg_"), Status: status,
			Role: "assistant", Content: []outputText{newOutputText(st.text)}})
	}
	for i := range st.calls {
		c := &st.calls[i]
		c.Index, c.Type = nil, "function"
		if c.ID == "" {
			c.ID = newID("call_")
		}
		if t.server[c.Function.Name] != nil {
			continue // the loop adds the server tool's own item
		}
		res.Output = append(res.Output, &functionCall{Type: itemFunctionCall, ID: newID("fc_"), CallID: c.ID,
			Name: c.Function.Name, Arguments: c.Function.Arguments, Status: status})
	}
	return st, nil
}
