package platform

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/strata-inference/strata/internal/openai"
)

// Stream event names of the Responses API (openai-go responses.ResponseStreamEventUnion).
const (
	evCreated         = "response.created"
	evInProgress      = "response.in_progress"
	evItemAdded       = "response.output_item.added"
	evPartAdded       = "response.content_part.added"
	evTextDelta       = "response.output_text.delta"
	evTextDone        = "response.output_text.done"
	evPartDone        = "response.content_part.done"
	evItemDone        = "response.output_item.done"
	evArgsDelta       = "response.function_call_arguments.delta"
	evArgsDone        = "response.function_call_arguments.done"
	evCompleted       = "response.completed"
	evIncomplete      = "response.incomplete"
	evFailed          = "response.failed"
	evError           = "error"
	failedCodeServer  = "server_error"
	failedMsgUpstream = "The upstream server failed while streaming the response."
)

// emitter writes Responses API events with consecutive sequence numbers, from 0. After the
// first failed write (the client went away) it writes nothing more. A nil *emitter (a plain
// JSON answer) ignores the item events the loop sends.
type emitter struct {
	w     *openai.SSEWriter
	hdr   http.Header // of the client's response: rate-limit headers go there before begin
	seq   int64
	err   error
	res   *response // the response the created and in_progress events announce
	begun bool      // response.created was sent: errors now end the stream, not the request
}

func (e *emitter) next() int64 {
	n := e.seq
	e.seq++
	return n
}

func (e *emitter) send(name string, v any) {
	if e.err == nil {
		e.err = e.w.Named(name, v)
	}
}

// begin sends response.created and response.in_progress, once.
func (e *emitter) begin() {
	if e.begun {
		return
	}
	e.begun = true
	e.send(evCreated, responseEvent{Type: evCreated, SequenceNumber: e.next(), Response: e.res})
	e.send(evInProgress, responseEvent{Type: evInProgress, SequenceNumber: e.next(), Response: e.res})
}

func (e *emitter) itemAdded(idx int, item outputItem) {
	if e != nil {
		e.send(evItemAdded, outputItemEvent{Type: evItemAdded, SequenceNumber: e.next(), OutputIndex: idx, Item: item})
	}
}

func (e *emitter) itemDone(idx int, item outputItem) {
	if e != nil {
		e.send(evItemDone, outputItemEvent{Type: evItemDone, SequenceNumber: e.next(), OutputIndex: idx, Item: item})
	}
}

// streamResponse answers POST /v1/responses with stream: true. Each inference call of the
// loop is streamed from the layer below with include_usage, and its deltas are re-emitted as
// they arrive. The event sequence is OpenAI's:
//
//	response.created, response.in_progress, then per output item
//	response.output_item.added, for a message response.content_part.added,
//	response.output_text.delta..., response.output_text.done, response.content_part.done,
//	for a function_call response.function_call_arguments.delta...,
//	response.function_call_arguments.done, then response.output_item.done; finally
//	response.completed or response.incomplete; or, when the layer below fails mid-stream,
//	error (if it sent one) and response.failed.
//
// An error before the stream starts (401, 404, 429, ...) is answered as plain JSON with its
// status, as OpenAI does. The response is stored, when asked, before response.completed is
// sent, so a client may continue from it as soon as it sees that event.
func (p *Platform) streamResponse(w http.ResponseWriter, r *http.Request, t *turn) {
	res := t.response(statusInProgress)
	e := &emitter{w: openai.NewSSEWriter(w), hdr: w.Header(), res: res}
	err := p.runLoop(r, t, res, e)
	if isCanceled(r.Context(), err) || e.err != nil {
		return // the client went away: nothing to tell, nothing to store
	}
	if err != nil && !e.begun {
		p.fail(w, err)
		return
	}
	if err != nil {
		var ue *upstreamError
		var upstream *openai.Error
		switch {
		case errors.As(err, &ue):
			upstream = ue.err
		case errors.As(err, new(*streamBroken)):
			upstream = err.(*streamBroken).upstream
		default:
			p.log.Warn("response stream failed", "err", err)
		}
		p.streamFailed(e, res, upstream)
		return
	}
	e.begin() // a loop that ended before any inference call (max_infer_iters 0 is refused)
	resJSON, err := json.Marshal(res)
	if err == nil {
		err = p.save(r.Context(), t, res, resJSON)
	}
	if err != nil {
		if isCanceled(r.Context(), err) {
			return
		}
		p.log.Error("store streamed response", "err", err)
		res.Status, res.CompletedAt, res.IncompleteDetails = statusFailed, nil, nil
		res.Error = &responseError{Code: failedCodeServer, Message: "The response could not be stored."}
		e.send(evFailed, responseEvent{Type: evFailed, SequenceNumber: e.next(), Response: res})
		return
	}
	final := evCompleted
	if res.Status == statusIncomplete {
		final = evIncomplete
	}
	e.send(final, json.RawMessage(fmt.Sprintf(`{"type":%q,"sequence_number":%d,"response":%s}`, final, e.next(), resJSON)))
}

// streamBroken is a chat stream of the layer below that failed after it started: cut short,
// unreadable, or ended by an error event (upstream, when it sent one).
type streamBroken struct {
	upstream *openai.Error
}

func (e *streamBroken) Error() string { return "platform: chat stream from the layer below broke" }

// inferStream runs one streaming inference call, emitting its items' events as the deltas
// arrive, and appends the items to res. A tool call of a server-side tool is not emitted: the
// loop announces the tool's own item.
func (p *Platform) inferStream(r *http.Request, t *turn, res *response, e *emitter) (*step, error) {
	resp, err := p.callChat(r, t, true)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if !e.begun {
		copyRateLimitHeaders(e.hdr, resp.Header)
	}
	e.begin()
	s := &streamState{t: t, res: res, e: e, byIndex: map[int]*streamCall{}}
	rd := openai.NewSSEReader(resp.Body)
	for e.err == nil {
		ev, err := rd.Next()
		if err != nil {
			if isCanceled(r.Context(), err) {
				return nil, r.Context().Err()
			}
			// A stream that ends without a finish_reason was cut short.
			if !errors.Is(err, io.EOF) || s.st.finish == "" {
				p.log.Warn("chat stream from the layer below ended early", "err", err)
				s.abort()
				return nil, &streamBroken{}
			}
			break
		}
		if ev.IsDone() {
			if s.st.finish == "" {
				s.abort()
				return nil, &streamBroken{}
			}
			break
		}
		var chunk struct {
			openai.ChatCompletionChunk
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(ev.Data, &chunk) != nil {
			p.log.Warn("unreadable chat stream chunk from the layer below", "bytes", len(ev.Data))
			s.abort()
			return nil, &streamBroken{}
		}
		if len(chunk.Error) > 0 && !isNull(chunk.Error) {
			// vLLM reports a failure after the stream started as {"error": {...}} in a data event.
			s.abort()
			return nil, &streamBroken{upstream: openai.ParseError(http.StatusInternalServerError, ev.Data)}
		}
		if chunk.Model != "" {
			s.st.model = chunk.Model
		}
		if chunk.Usage != nil {
			s.st.usage = chunk.Usage
		}
		for _, c := range chunk.Choices {
			if c.Index != 0 {
				continue // n > 1 is not a Responses API concept; the request never asks for it
			}
			if d := c.Delta.Content; d != nil && *d != "" {
				s.text(*d)
			}
			if len(c.Delta.ToolCalls) > 0 && !isNull(c.Delta.ToolCalls) {
				var calls []chatToolCall
				if json.Unmarshal(c.Delta.ToolCalls, &calls) != nil {
					p.log.Warn("unreadable tool call delta from the layer below", "bytes", len(c.Delta.ToolCalls))
					s.abort()
					return nil, &streamBroken{}
				}
				for _, d := range calls {
					s.toolDelta(d)
				}
			}
			if c.FinishReason != nil && *c.FinishReason != "" {
				s.st.finish = *c.FinishReason
			}
		}
	}
	if e.err != nil {
		return nil, e.err // the client went away
	}
	status := statusCompleted
	if s.st.finish == "length" {
		status = statusIncomplete
	}
	if len(s.st.calls) == 0 && s.msg == nil && s.open == nil && s.st.text == "" {
		s.openMessage() // an empty answer is still one (empty) message
	}
	s.closeMessage(status)
	s.closeCall(status)
	return &s.st, nil
}

// streamState assembles the output items of one streamed inference call. Items are appended
// to res.Output when they open (so output_index is their position) and completed when the next
// item opens or the stream ends.
type streamState struct {
	t   *turn
	res *response
	e   *emitter
	st  step

	msg     *outputMessage // the open message item, nil when none
	msgIdx  int
	msgText strings.Builder

	byIndex map[int]*streamCall // tool calls by the engine's delta index
	open    *streamCall         // the open tool call, nil when none
}

type streamCall struct {
	fc     *functionCall // nil for a server-side tool: no events
	idx    int
	call   chatToolCall
	closed bool
}

func (s *streamState) openMessage() {
	s.closeCall(statusCompleted)
	s.msg = &outputMessage{Type: itemMessage, ID: newID("msg_"), Status: statusInProgress, Role: "assistant", Content: []outputText{}}
	s.msgIdx = len(s.res.Output)
	s.res.Output = append(s.res.Output, s.msg)
	e := s.e
	e.itemAdded(s.msgIdx, s.msg)
	e.send(evPartAdded, contentPartEvent{Type: evPartAdded, SequenceNumber: e.next(), ItemID: s.msg.ID, OutputIndex: s.msgIdx, Part: newOutputText("")})
}

func (s *streamState) text(d string) {
	if s.msg == nil {
		s.openMessage()
	}
	s.msgText.WriteString(d)
	s.e.send(evTextDelta, textDeltaEvent{Type: evTextDelta, SequenceNumber: s.e.next(), ItemID: s.msg.ID,
		OutputIndex: s.msgIdx, Delta: d, Logprobs: []json.RawMessage{}})
}

func (s *streamState) closeMessage(status string) {
	if s.msg == nil {
		return
	}
	full, m, e := s.msgText.String(), s.msg, s.e
	m.Status, m.Content = status, []outputText{newOutputText(full)}
	e.send(evTextDone, textDoneEvent{Type: evTextDone, SequenceNumber: e.next(), ItemID: m.ID, OutputIndex: s.msgIdx, Text: full,
		Logprobs: []json.RawMessage{}})
	e.send(evPartDone, contentPartEvent{Type: evPartDone, SequenceNumber: e.next(), ItemID: m.ID, OutputIndex: s.msgIdx, Part: newOutputText(full)})
	e.itemDone(s.msgIdx, m)
	s.st.text += full
	s.msg = nil
	s.msgText.Reset()
}

// toolDelta applies one element of a delta's tool_calls: vLLM sends the id, type and name
// with the first delta of a call and the arguments in pieces after it.
func (s *streamState) toolDelta(d chatToolCall) {
	i := 0
	if d.Index != nil {
		i = *d.Index
	}
	c, ok := s.byIndex[i]
	if !ok {
		s.closeMessage(statusCompleted)
		s.closeCall(statusCompleted)
		id := d.ID
		if id == "" {
			id = newID("call_")
		}
		c = &streamCall{call: chatToolCall{ID: id, Type: "function", Function: chatFunction{Name: d.Function.Name}}}
		s.byIndex[i], s.open = c, c
		if s.t.server[d.Function.Name] == nil {
			c.fc = &functionCall{Type: itemFunctionCall, ID: newID("fc_"), CallID: id, Name: d.Function.Name, Status: statusInProgress}
			c.idx = len(s.res.Output)
			s.res.Output = append(s.res.Output, c.fc)
			s.e.itemAdded(c.idx, c.fc)
		}
	} else if c.call.Function.Name == "" && d.Function.Name != "" {
		c.call.Function.Name = d.Function.Name
		if c.fc != nil {
			c.fc.Name = d.Function.Name
		}
	}
	if d.Function.Arguments == "" || c.closed {
		return // a delta for a call already closed (vLLM never interleaves calls) is dropped
	}
	c.call.Function.Arguments += d.Function.Arguments
	if c.fc != nil {
		c.fc.Arguments = c.call.Function.Arguments
		s.e.send(evArgsDelta, argsDeltaEvent{Type: evArgsDelta, SequenceNumber: s.e.next(), ItemID: c.fc.ID,
			OutputIndex: c.idx, Delta: d.Function.Arguments})
	}
}

func (s *streamState) closeCall(status string) {
	c := s.open
	if c == nil {
		return
	}
	s.open, c.closed = nil, true
	s.st.calls = append(s.st.calls, c.call)
	if c.fc == nil {
		return
	}
	c.fc.Status = status
	s.e.send(evArgsDone, argsDoneEvent{Type: evArgsDone, SequenceNumber: s.e.next(), ItemID: c.fc.ID, OutputIndex: c.idx,
		Name: c.fc.Name, Arguments: c.fc.Arguments})
	s.e.itemDone(c.idx, c.fc)
}

// abort leaves the open items incomplete, without done events: the response fails.
func (s *streamState) abort() {
	if s.msg != nil {
		s.msg.Status, s.msg.Content = statusIncomplete, []outputText{newOutputText(s.msgText.String())}
	}
	if s.open != nil && s.open.fc != nil {
		s.open.fc.Status = statusIncomplete
	}
}

// streamFailed ends a stream whose upstream failed: an error event when the layer below sent
// one, then response.failed with the partial output. A failed response is not stored.
func (p *Platform) streamFailed(e *emitter, res *response, upstreamErr *openai.Error) {
	msg := failedMsgUpstream
	if upstreamErr != nil {
		ev := errorEvent{Type: evError, SequenceNumber: e.next(), Message: upstreamErr.Message}
		if upstreamErr.Code != "" {
			ev.Code = &upstreamErr.Code
		}
		if upstreamErr.Param != "" {
			ev.Param = &upstreamErr.Param
		}
		e.send(evError, ev)
		if upstreamErr.Message != "" {
			msg = upstreamErr.Message
		}
	}
	res.Status, res.CompletedAt, res.IncompleteDetails = statusFailed, nil, nil
	res.Error = &responseError{Code: failedCodeServer, Message: msg}
	e.send(evFailed, responseEvent{Type: evFailed, SequenceNumber: e.next(), Response: res})
}
