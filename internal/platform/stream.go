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
	evCompleted       = "response.completed"
	evIncomplete      = "response.incomplete"
	evFailed          = "response.failed"
	evError           = "error"
	failedCodeServer  = "server_error"
	failedMsgUpstream = "The upstream server failed while streaming the response."
)

// emitter writes Responses API events with consecutive sequence numbers, from 0. After the
// first failed write (the client went away) it writes nothing more.
type emitter struct {
	w   *openai.SSEWriter
	seq int64
	err error
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

// streamResponse answers POST /v1/responses with stream: true. The chat completion is
// streamed from the layer below with include_usage, and each content delta is re-emitted as
// response.output_text.delta as it arrives. The event sequence is OpenAI's:
//
//	response.created, response.in_progress, response.output_item.added,
//	response.content_part.added, response.output_text.delta..., response.output_text.done,
//	response.content_part.done, response.output_item.done, then response.completed or
//	response.incomplete (finish_reason "length"); or, when the layer below fails mid-stream,
//	error (if it sent one) and response.failed.
//
// An error before the stream starts (401, 404, 429, ...) is answered as plain JSON with its
// status, as OpenAI does. The response is stored, when asked, before response.completed is
// sent, so a client may continue from it as soon as it sees that event.
func (p *Platform) streamResponse(w http.ResponseWriter, r *http.Request, t *turn) {
	resp, err := p.callChat(r, t, true)
	if err != nil {
		p.fail(w, err)
		return
	}
	defer resp.Body.Close()
	copyRateLimitHeaders(w.Header(), resp.Header)
	e := &emitter{w: openai.NewSSEWriter(w)}

	res := t.response(statusInProgress)
	e.send(evCreated, responseEvent{Type: evCreated, SequenceNumber: e.next(), Response: res})
	e.send(evInProgress, responseEvent{Type: evInProgress, SequenceNumber: e.next(), Response: res})

	started := false
	start := func() {
		started = true
		item := &outputMessage{Type: "message", ID: t.msgID, Status: statusInProgress, Role: "assistant", Content: []outputText{}}
		e.send(evItemAdded, outputItemEvent{Type: evItemAdded, SequenceNumber: e.next(), Item: item})
		e.send(evPartAdded, contentPartEvent{Type: evPartAdded, SequenceNumber: e.next(), ItemID: t.msgID, Part: newOutputText("")})
	}

	var (
		text         strings.Builder
		finishReason string
		model        string
		u            *openai.Usage
		upstreamErr  *openai.Error // an error event the layer below sent mid-stream
		failed       bool
	)
	rd := openai.NewSSEReader(resp.Body)
	for e.err == nil {
		ev, err := rd.Next()
		if err != nil {
			if isCanceled(r.Context(), err) {
				return // the client went away: nothing to tell, nothing to store
			}
			// A stream that ends without a finish_reason was cut short.
			failed = !errors.Is(err, io.EOF) || finishReason == ""
			if failed {
				p.log.Warn("chat stream from the layer below ended early", "err", err)
			}
			break
		}
		if ev.IsDone() {
			failed = finishReason == ""
			break
		}
		var chunk struct {
			openai.ChatCompletionChunk
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(ev.Data, &chunk) != nil {
			p.log.Warn("unreadable chat stream chunk from the layer below", "bytes", len(ev.Data))
			failed = true
			break
		}
		if len(chunk.Error) > 0 && !isNull(chunk.Error) {
			// vLLM reports a failure after the stream started as {"error": {...}} in a data event.
			upstreamErr = openai.ParseError(http.StatusInternalServerError, ev.Data)
			failed = true
			break
		}
		if chunk.Model != "" {
			model = chunk.Model
		}
		if chunk.Usage != nil {
			u = chunk.Usage
		}
		for _, c := range chunk.Choices {
			if c.Index != 0 {
				continue // n > 1 is not a Responses API concept; the request never asks for it
			}
			if d := c.Delta.Content; d != nil && *d != "" {
				if !started {
					start()
				}
				text.WriteString(*d)
				e.send(evTextDelta, textDeltaEvent{Type: evTextDelta, SequenceNumber: e.next(), ItemID: t.msgID,
					Delta: *d, Logprobs: []json.RawMessage{}})
			}
			if c.FinishReason != nil && *c.FinishReason != "" {
				finishReason = *c.FinishReason
			}
		}
	}
	if e.err != nil {
		return // the client went away
	}

	if failed {
		p.streamFailed(e, t, res, started, text.String(), upstreamErr)
		return
	}
	if !started {
		start()
	}
	full := text.String()
	msg := t.finish(res, model, full, finishReason, u, p.clk.Now())
	e.send(evTextDone, textDoneEvent{Type: evTextDone, SequenceNumber: e.next(), ItemID: t.msgID, Text: full,
		Logprobs: []json.RawMessage{}})
	e.send(evPartDone, contentPartEvent{Type: evPartDone, SequenceNumber: e.next(), ItemID: t.msgID, Part: newOutputText(full)})
	e.send(evItemDone, outputItemEvent{Type: evItemDone, SequenceNumber: e.next(), Item: msg})

	resJSON, err := json.Marshal(res)
	if err == nil {
		err = p.save(r.Context(), t, resJSON, full)
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

// streamFailed ends a stream whose upstream failed: an error event when the layer below sent
// one, then response.failed with the partial output. A failed response is not stored.
func (p *Platform) streamFailed(e *emitter, t *turn, res *response, started bool, text string, upstreamErr *openai.Error) {
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
	res.Status = statusFailed
	res.Error = &responseError{Code: failedCodeServer, Message: msg}
	if started {
		res.Output = []outputItem{&outputMessage{Type: "message", ID: t.msgID, Status: statusIncomplete,
			Role: "assistant", Content: []outputText{newOutputText(text)}}}
	}
	e.send(evFailed, responseEvent{Type: evFailed, SequenceNumber: e.next(), Response: res})
}
