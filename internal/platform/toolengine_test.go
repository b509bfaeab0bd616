package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/strata-inference/strata/internal/openai"
)

// toolEngine answers chat completions with tools the way vLLM's OpenAI server does with a
// tool parser (hermes) and --enable-auto-tool-choice: tool calls in message.tool_calls with
// content null and finish_reason "tool_calls"; streamed as a first delta carrying index, id,
// type and name, then the arguments in pieces. Source: vllm/entrypoints/openai/serving_chat.py
// and protocol.py (ToolCall, DeltaToolCall).
//
// Its policy: with tools, a tool_choice other than "none", and a conversation that does not
// end in a tool result (or ends in one starting with "again"), it calls the tool tool_choice
// names, else the first tool, and with parallel_tool_calls the first two tools, each with
// arguments {"city": "<last user text>"} ({"query": ...} for file_search). Otherwise it answers "Result: <tool results>" (the
// trailing tool messages joined with "+"), or "You said: <last user text>". Every call costs
// 5 completion tokens; max_tokens below 5 cuts the answer with finish_reason "length".
type toolEngine struct {
	mu  sync.Mutex
	seq int
}

type toolChatRequest struct {
	Model             string           `json:"model"`
	Messages          []openai.Message `json:"messages"`
	Tools             []chatTool       `json:"tools"`
	ToolChoice        json.RawMessage  `json:"tool_choice"`
	ParallelToolCalls *bool            `json:"parallel_tool_calls"`
	MaxTokens         *int             `json:"max_tokens"`
	Stream            bool             `json:"stream"`
}

func (f *toolEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req toolChatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"error":{"message":"bad json","type":"BadRequestError","code":400}}`, 400)
		return
	}
	var calls []chatToolCall
	text, finish := "", "stop"
	last := req.Messages[len(req.Messages)-1]
	choice := ""
	_ = json.Unmarshal(req.ToolChoice, &choice)
	if len(req.Tools) > 0 && choice != "none" && (last.Role != "tool" || strings.HasPrefix(last.ContentText(), "again")) {
		lastUser := ""
		for _, m := range req.Messages {
			if m.Role == "user" {
				lastUser = m.ContentText()
			}
		}
		names := []string{req.Tools[0].Function.Name}
		var named struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(req.ToolChoice, &named) == nil && named.Function.Name != "" {
			names = []string{named.Function.Name}
		} else if req.ParallelToolCalls != nil && *req.ParallelToolCalls && len(req.Tools) > 1 {
			names = append(names, req.Tools[1].Function.Name)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, n := range names {
			f.seq++
			key := "city"
			if n == "file_search" {
				key = "query" // the argument its schema names
			}
			args, _ := json.Marshal(map[string]string{key: lastUser})
			calls = append(calls, chatToolCall{ID: fmt.Sprintf("chatcmpl-tool-%d", f.seq), Type: "function",
				Function: chatFunction{Name: n, Arguments: string(args)}})
		}
		finish = "tool_calls"
	} else {
		var results []string
		for i := len(req.Messages) - 1; i >= 0 && req.Messages[i].Role == "tool"; i-- {
			results = append([]string{req.Messages[i].ContentText()}, results...)
		}
		if len(results) > 0 {
			text = "Result: " + strings.Join(results, "+")
		} else {
			text = "You said: " + last.ContentText()
		}
	}
	completion := 5
	if req.MaxTokens != nil && *req.MaxTokens < 5 {
		completion, finish, calls = *req.MaxTokens, "length", nil
		text = text[:min(len(text), 3)]
	}
	u := openai.Usage{PromptTokens: 10, CompletionTokens: completion, TotalTokens: 10 + completion}
	if !req.Stream {
		msg := map[string]any{"role": "assistant", "content": nil}
		if len(calls) > 0 {
			msg["tool_calls"] = calls
		} else {
			msg["content"] = text
		}
		writeTestJSON(w, map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finish}}, "usage": u})
		return
	}
	sse := openai.NewSSEWriter(w)
	delta := func(d map[string]any, fin any) {
		_ = sse.JSON(map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": d, "finish_reason": fin}}})
	}
	delta(map[string]any{"role": "assistant", "content": ""}, nil)
	for i, c := range calls {
		delta(map[string]any{"tool_calls": []any{map[string]any{"index": i, "id": c.ID, "type": "function",
			"function": map[string]any{"name": c.Function.Name, "arguments": ""}}}}, nil)
		a := c.Function.Arguments
		for _, piece := range []string{a[:len(a)/2], a[len(a)/2:]} {
			delta(map[string]any{"tool_calls": []any{map[string]any{"index": i, "function": map[string]any{"arguments": piece}}}}, nil)
		}
	}
	for _, word := range strings.SplitAfter(text, " ") {
		if word != "" {
			delta(map[string]any{"content": word}, nil)
		}
	}
	delta(map[string]any{}, finish)
	_ = sse.JSON(map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": req.Model,
		"choices": []any{}, "usage": u})
	_ = sse.Done()
}

// lookupTool is a server-side tool for the loop tests, shaped like file_search: its items are
// file_search_call items with the call's arguments as the query. It answers results[i] to the
// i-th call (the last one once they run out).
type lookupTool struct {
	results []string
	calls   int
}

var _ serverTool = (*lookupTool)(nil)

func (l *lookupTool) definition() functionTool {
	return functionTool{Type: "function", Name: "lookup", Parameters: json.RawMessage(`{"type":"object"}`)}
}

type lookupItem struct {
	Type    string   `json:"type"`
	ID      string   `json:"id"`
	Status  string   `json:"status"`
	Queries []string `json:"queries"`
}

func (i *lookupItem) itemID() string { return i.ID }

func (l *lookupTool) pending(call chatToolCall) outputItem {
	return &lookupItem{Type: "file_search_call", ID: "fs_" + call.ID, Status: "in_progress", Queries: []string{call.Function.Arguments}}
}

func (l *lookupTool) run(_ context.Context, _ chatToolCall, started outputItem) (outputItem, string) {
	done := *started.(*lookupItem)
	done.Status = "completed"
	r := l.results[min(l.calls, len(l.results)-1)]
	l.calls++
	return &done, r
}
