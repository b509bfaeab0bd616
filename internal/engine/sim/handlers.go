package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/strata-inference/strata/internal/openai"
)

// job is the engine work of one HTTP request: one sequence per prompt, sharing one notify
// channel that the engine signals after every change.
type job struct {
	seqs   []*sequence
	notify chan struct{}
	plans  []outputPlan // the planned answer of each sequence (generate.go)
}

// newJob plans the answer of every prompt and builds its sequences.
func (s *Server) newJob(id string, prompts [][]int, limits []int, req *genRequest) *job {
	j := &job{notify: make(chan struct{}, 1)}
	for i, p := range prompts {
		plan := s.tok.planOutput(s.cfg.Seed, p, req.genParams(limits[i]))
		j.plans = append(j.plans, plan)
		j.seqs = append(j.seqs, newSequence(id+"-"+strconv.Itoa(i), p, plan.tokens, plan.reason, j.notify))
	}
	return j
}

// attachKVTransfer gives j's sequences the request's kv_transfer_params (nil: none).
func attachKVTransfer(req *genRequest, j *job) {
	if req.KVTransferParams == nil {
		return
	}
	for _, q := range j.seqs {
		p := *req.KVTransferParams
		q.kvx = &p
	}
}

// attachAdapter runs j's sequences with the LoRA adapter the request's model names (none for
// the base model); the adapter may have been unloaded since the model check (404).
func (s *Server) attachAdapter(req *genRequest, j *job) error {
	a, err := s.adapterFor(req)
	if err != nil || a == nil {
		return err
	}
	for _, q := range j.seqs {
		q.lora, q.loraID = a.name, a.id
	}
	return nil
}

// await waits until every sequence of j finished. When ctx ends first, the sequences are aborted.
func (s *Server) await(ctx context.Context, j *job) ([]progressView, error) {
	views := make([]progressView, len(j.seqs))
	for {
		all := true
		for i, q := range j.seqs {
			views[i] = q.progress.view()
			if views[i].err != nil {
				return nil, views[i].err
			}
			all = all && views[i].finished
		}
		if all {
			return views, nil
		}
		select {
		case <-j.notify:
		case <-ctx.Done():
			s.abort(j.seqs)
			return nil, ctx.Err()
		}
	}
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	req, err := s.readRequest(r)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	msgs, err := parseMessages(req.Messages)
	if err == nil {
		err = s.checkModel(req)
	}
	if err == nil {
		err = req.checkSampling()
	}
	if err == nil {
		_, err = parseStop(req.Stop)
	}
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	addGen := req.AddGenerationPrompt == nil || *req.AddGenerationPrompt
	prompt := s.tok.EncodeChat(msgs, addGen)
	limit, err := s.checkLength(req, len(prompt))
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	call, err := chooseToolCall(req, msgs)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	id := "chatcmpl-" + requestID(r)
	var j *job
	if call != nil {
		if toks := s.tok.toolCallTokens(call, limit); toks != nil {
			j = &job{notify: make(chan struct{}, 1), plans: []outputPlan{{tokens: toks, reason: finishStop}}}
			j.seqs = []*sequence{newSequence(id+"-0", prompt, toks, finishStop, j.notify)}
		} else {
			call = nil // does not fit in the output limit: a text answer
		}
	}
	if j == nil {
		j = s.newJob(id, [][]int{prompt}, []int{limit}, req)
	}
	attachKVTransfer(req, j)
	if err := s.attachAdapter(req, j); err != nil {
		openai.WriteError(w, err)
		return
	}
	if err := s.submit(j.seqs); err != nil {
		openai.WriteError(w, err)
		return
	}
	role := "assistant"
	if !addGen && len(msgs) > 0 {
		role = msgs[len(msgs)-1].Role // vLLM get_chat_request_role
	}
	created := s.clk.Now().Unix()
	if req.Stream {
		s.streamChat(w, r, req, j, id, created, role, call)
		return
	}
	views, err := s.await(r.Context(), j)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	q, v := j.seqs[0], views[0]
	text := j.plans[0].visibleText(v.generated, true)
	choice := chatChoice{Message: chatMessage{Role: role, Content: &text, ToolCalls: []any{}}, FinishReason: v.reason,
		StopReason: j.plans[0].finalStopReason(v.generated, v.reason)}
	if call != nil && v.reason == finishStop {
		choice.Message.Content = nil
		choice.Message.ToolCalls = []any{call.wire(nil)}
		choice.FinishReason = finishToolCalls
	}
	writeJSON(w, chatCompletion{
		ID: id, Object: "chat.completion", Created: created, Model: s.cfg.ServedModelName,
		Choices: []chatChoice{choice},
		Usage:   newUsage(q.promptLen, v.generated, v.cached),
		// vLLM: kv_transfer_params=final_res.kv_transfer_params (null unless a P/D prefill).
		KVTransferParams: kvTransferJSON(v.kvx),
	})
}

// streamChat writes a chat completion stream as vLLM's chat_completion_stream_generator does:
// a first chunk with the role (sent with the first token, after prefill), one chunk per token
// (the last one carrying finish_reason), the usage chunk when stream_options.include_usage, and
// "data: [DONE]".
//
// A tool call (call != nil) sends no content deltas: one delta with the whole call after the
// last token, then the finishing chunk with finish_reason "tool_calls".
func (s *Server) streamChat(w http.ResponseWriter, r *http.Request, req *genRequest, j *job, id string, created int64, role string, call *toolCall) {
	sse := startStream(w)
	includeUsage, continuous := req.usage()
	q := j.seqs[0]
	plan := &j.plans[0]
	chunk := func(choice any, completion int) chatChunk {
		c := chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.cfg.ServedModelName, Choices: []any{choice}}
		if continuous {
			c.Usage = &usageInfo{PromptTokens: q.promptLen, CompletionTokens: completion, TotalTokens: q.promptLen + completion}
		}
		return c
	}
	sent, sentText, started, finished := 0, 0, false, false
	var last progressView
	for !finished {
		v := q.progress.view()
		if v.err != nil {
			streamError(sse, v.err)
			return
		}
		if !started && (v.generated > 0 || v.finished) {
			started = true
			empty := ""
			if sse.JSON(chunk(chatStreamChoice{Delta: chatDelta{Role: role, Content: &empty}}, 0)) != nil {
				s.abort(j.seqs)
				return
			}
		}
		if call != nil {
			sent = v.generated
			if v.finished && v.reason == finishStop {
				zero := 0
				if sse.JSON(chunk(chatStreamChoice{Delta: chatDelta{ToolCalls: []any{call.wire(&zero)}}}, sent)) != nil {
					s.abort(j.seqs)
					return
				}
				empty, reason := "", finishToolCalls
				if sse.JSON(chunk(chatStreamFinalChoice{chatStreamChoice: chatStreamChoice{Delta: chatDelta{Content: &empty}, FinishReason: &reason}}, sent)) != nil {
					s.abort(j.seqs)
					return
				}
				finished = true
			}
		}
		for sent < v.generated || (v.finished && !finished) {
			if sent < v.generated {
				sent++
			}
			last := v.finished && sent == v.generated
			text := plan.delta(&sentText, sent, last)
			var choice any = chatStreamChoice{Delta: chatDelta{Content: &text}}
			if last {
				reason := v.reason
				choice = chatStreamFinalChoice{chatStreamChoice: chatStreamChoice{Delta: chatDelta{Content: &text}, FinishReason: &reason},
					StopReason: plan.finalStopReason(v.generated, v.reason)}
				finished = true
			}
			if sse.JSON(chunk(choice, sent)) != nil {
				s.abort(j.seqs)
				return
			}
		}
		last = v
		if finished {
			break
		}
		select {
		case <-j.notify:
		case <-r.Context().Done():
			s.abort(j.seqs)
			return
		}
	}
	if includeUsage {
		_ = sse.JSON(chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.cfg.ServedModelName,
			Choices: []any{}, Usage: newUsage(q.promptLen, last.generated, last.cached)})
	}
	_ = sse.Done()
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	req, err := s.readRequest(r)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	inputs, err := parsePrompt(req.Prompt)
	if err == nil {
		err = s.checkModel(req)
	}
	if err == nil {
		err = req.checkSampling()
	}
	if err == nil {
		_, err = parseStop(req.Stop)
	}
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	prompts := make([][]int, len(inputs))
	limits := make([]int, len(inputs))
	for i, in := range inputs {
		p := in.tokens
		if in.isText {
			p = s.tok.encodePrompt(in.text, req.addSpecialTokens())
		}
		for _, id := range p {
			if !s.tok.inVocab(id) {
				openai.WriteError(w, badRequest("", "Token id %d is out of vocabulary", id))
				return
			}
		}
		if limits[i], err = s.checkLength(req, len(p)); err != nil {
			openai.WriteError(w, err)
			return
		}
		prompts[i] = p
	}
	id := "cmpl-" + requestID(r)
	j := s.newJob(id, prompts, limits, req)
	attachKVTransfer(req, j)
	if err := s.attachAdapter(req, j); err != nil {
		openai.WriteError(w, err)
		return
	}
	if err := s.submit(j.seqs); err != nil {
		openai.WriteError(w, err)
		return
	}
	created := s.clk.Now().Unix()
	if req.Stream {
		s.streamCompletions(w, r, req, j, id, created)
		return
	}
	views, err := s.await(r.Context(), j)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	resp := completion{ID: id, Object: "text_completion", Created: created, Model: s.cfg.ServedModelName}
	var promptTokens, completionTokens, cached int
	for i, q := range j.seqs {
		v := views[i]
		reason := v.reason
		resp.Choices = append(resp.Choices, completionFinalChoice{completionChoice: completionChoice{
			Index: i, Text: j.plans[i].visibleText(v.generated, true), FinishReason: &reason,
			StopReason: j.plans[i].finalStopReason(v.generated, v.reason)}})
		promptTokens += q.promptLen
		completionTokens += v.generated
		cached += v.cached
	}
	resp.Usage = newUsage(promptTokens, completionTokens, cached)
	resp.KVTransferParams = kvTransferJSON(views[0].kvx)
	writeJSON(w, resp)
}

// streamCompletions writes a completions stream as vLLM's completion_stream_generator does: one
// chunk per token per prompt (choice index = prompt index), the last one of each prompt carrying
// finish_reason, then the usage chunk when requested, then "data: [DONE]".
func (s *Server) streamCompletions(w http.ResponseWriter, r *http.Request, req *genRequest, j *job, id string, created int64) {
	sse := startStream(w)
	includeUsage, continuous := req.usage()
	sent := make([]int, len(j.seqs))
	sentText := make([]int, len(j.seqs))
	done := make([]bool, len(j.seqs))
	views := make([]progressView, len(j.seqs))
	remaining := len(j.seqs)
	for remaining > 0 {
		for i, q := range j.seqs {
			if done[i] {
				continue
			}
			v := q.progress.view()
			views[i] = v
			if v.err != nil {
				streamError(sse, v.err)
				s.abort(j.seqs)
				return
			}
			for sent[i] < v.generated || (v.finished && !done[i]) {
				if sent[i] < v.generated {
					sent[i]++
				}
				last := v.finished && sent[i] == v.generated
				c := completionChoice{Index: i, Text: j.plans[i].delta(&sentText[i], sent[i], last)}
				if last {
					reason := v.reason
					c.FinishReason = &reason
					c.StopReason = j.plans[i].finalStopReason(v.generated, v.reason)
					done[i] = true
					remaining--
				}
				ch := completionChunk{ID: id, Object: "text_completion", Created: created, Model: s.cfg.ServedModelName,
					Choices: []completionChoice{c}}
				if continuous {
					ch.Usage = &usageInfo{PromptTokens: q.promptLen, CompletionTokens: sent[i], TotalTokens: q.promptLen + sent[i]}
				}
				if sse.JSON(ch) != nil {
					s.abort(j.seqs)
					return
				}
			}
		}
		if remaining == 0 {
			break
		}
		select {
		case <-j.notify:
		case <-r.Context().Done():
			s.abort(j.seqs)
			return
		}
	}
	if includeUsage {
		var promptTokens, completionTokens, cached int
		for i, q := range j.seqs {
			promptTokens += q.promptLen
			completionTokens += views[i].generated
			cached += views[i].cached
		}
		_ = sse.JSON(completionChunk{ID: id, Object: "text_completion", Created: created, Model: s.cfg.ServedModelName,
			Choices: []completionChoice{}, Usage: newUsage(promptTokens, completionTokens, cached)})
	}
	_ = sse.Done()
}

// handleTokenize is vLLM's POST /tokenize: {"prompt": text} or {"messages": [...]} in, then
// {"count","max_model_len","tokens","token_strs"} out.
func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request) {
	req, err := s.readRequest(r)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	var text string
	addBOS := false
	switch {
	case present(req.Messages):
		var msgs []openai.Message
		if msgs, err = parseMessages(req.Messages); err == nil {
			text = s.tok.ApplyChatTemplate(msgs, req.AddGenerationPrompt == nil || *req.AddGenerationPrompt)
		}
	case present(req.Prompt):
		if json.Unmarshal(req.Prompt, &text) != nil {
			err = validationError("string_type", "'prompt'", "Input should be a valid string")
		}
		addBOS = req.addSpecialTokens()
	default:
		err = validationError("missing", "'prompt'", "Field required")
	}
	if err == nil {
		err = s.checkModel(req)
	}
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	tokens := s.tok.encodePrompt(text, addBOS)
	resp := tokenizeResponse{Count: len(tokens), MaxModelLen: s.cfg.MaxModelLen, Tokens: tokens}
	if req.ReturnTokenStrs {
		resp.TokenStrs = make([]string, len(tokens))
		for i, id := range tokens {
			resp.TokenStrs[i] = s.tok.tokenString(id)
		}
	}
	writeJSON(w, resp)
}

// startStream sends the event-stream headers at once, as vLLM's StreamingResponse does before
// the first token, so a client sees the stream start before prefill ends.
func startStream(w http.ResponseWriter) *openai.SSEWriter {
	sse := openai.NewSSEWriter(w)
	w.WriteHeader(http.StatusOK)
	sse.Flush()
	return sse
}

// streamError ends a started stream with vLLM's error event and [DONE].
func streamError(sse *openai.SSEWriter, err error) {
	_ = sse.Data(openai.MarshalError(err))
	_ = sse.Done()
}

// kvTransferJSON is a response's kv_transfer_params: null when p is nil.
func kvTransferJSON(p *KVTransferParams) any {
	if p == nil {
		return nil
	}
	return p
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		openai.WriteError(w, fmt.Errorf("sim: encode response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
