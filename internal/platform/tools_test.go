package platform

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"
)

var weatherTool = responses.ToolUnionParam{OfFunction: &responses.FunctionToolParam{
	Name:        "get_weather",
	Description: oai.String("Current weather of a city."),
	Parameters: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}},
		"required": []string{"city"}},
	Strict: oai.Bool(true),
}}

var timeTool = responses.ToolUnionParam{OfFunction: &responses.FunctionToolParam{Name: "get_time", Strict: oai.Bool(false),
	Parameters: map[string]any{"type": "object"}}}

func newToolEnv(t *testing.T) *testEnv {
	env := newTestEnv(t)
	env.eng.setHandler((&toolEngine{}).ServeHTTP)
	return env
}

// sentBody decodes the chat request the engine received.
func sentBody(t *testing.T, c engineCall) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(c.Body, &m))
	return m
}

func TestFunctionToolRoundTrip(t *testing.T) {
	env := newToolEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()

	first, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("Paris"),
		Tools: []responses.ToolUnionParam{weatherTool}})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCompleted, first.Status, "a client-side call due completes the response")
	require.Len(t, first.Output, 1)
	fc := first.Output[0]
	require.Equal(t, "function_call", fc.Type)
	require.True(t, strings.HasPrefix(fc.ID, "fc_"), fc.ID)
	require.Equal(t, "chatcmpl-tool-1", fc.CallID, "the engine's tool call id is the call_id")
	require.Equal(t, "get_weather", fc.Name)
	require.JSONEq(t, `{"city":"Paris"}`, fc.Arguments.OfString)
	require.Equal(t, "completed", string(fc.Status))
	require.Empty(t, first.OutputText())
	require.Len(t, first.Tools, 1)
	require.Equal(t, "get_weather", first.Tools[0].Name)
	require.True(t, first.Tools[0].Strict)
	require.Equal(t, "auto", string(first.ToolChoice.OfToolChoiceMode))

	// What the engine got: the tool as a chat tool, tool_choice and parallel_tool_calls.
	body := sentBody(t, env.eng.last(t))
	require.JSONEq(t, `[{"type":"function","function":{"name":"get_weather","description":"Current weather of a city.",
		"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}}]`, string(body["tools"]))
	require.JSONEq(t, `"auto"`, string(body["tool_choice"]))
	require.JSONEq(t, `true`, string(body["parallel_tool_calls"]))

	// The client runs the function and continues the chain with its output.
	second, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", PreviousResponseID: oai.String(first.ID),
		Tools: []responses.ToolUnionParam{weatherTool},
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{CallID: oai.String(fc.CallID),
				Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: oai.String("22C and sunny")}}},
		}}})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCompleted, second.Status)
	require.Equal(t, "Result: 22C and sunny", second.OutputText())
	call := env.eng.last(t)
	require.Equal(t, first.ID, call.Header.Get("X-Strata-Session"), "the loop's calls share the chain's session")
	msgs := call.Chat.Messages
	require.Len(t, msgs, 3)
	require.Equal(t, "user", msgs[0].Role)
	require.Equal(t, "assistant", msgs[1].Role)
	require.JSONEq(t, `[{"id":"chatcmpl-tool-1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]`, string(msgs[1].ToolCalls))
	require.Equal(t, "tool", msgs[2].Role)
	require.Equal(t, "chatcmpl-tool-1", msgs[2].ToolCallID)
	require.Equal(t, "22C and sunny", msgs[2].ContentText())

	// input_items lists the call and its output, newest first.
	page, err := c.Responses.InputItems.List(ctx, second.ID, responses.InputItemListParams{})
	require.NoError(t, err)
	var types []string
	for _, it := range page.Data {
		types = append(types, it.Type)
	}
	require.Equal(t, []string{"function_call_output", "function_call", "message"}, types)
	require.Equal(t, "chatcmpl-tool-1", page.Data[0].CallID)
	require.Equal(t, fc.ID, page.Data[1].ID, "the output item is listed as returned")

	t.Run("continuing without the output is refused", func(t *testing.T) {
		_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", PreviousResponseID: oai.String(first.ID),
			Input: stringInput("and now?")})
		apiErr := requireAPIError(t, err, 400, codeInvalidValue)
		require.Equal(t, "No tool output found for function call chatcmpl-tool-1.", apiErr.Message)
	})
	t.Run("an output for an unknown call is refused", func(t *testing.T) {
		_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", PreviousResponseID: oai.String(second.ID),
			Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
				responses.ResponseInputItemParamOfFunctionCallOutput("x"),
			}}})
		requireAPIError(t, err, 400, "missing_required_parameter")
	})
}

func TestFunctionToolClientSideHistory(t *testing.T) {
	// A client that keeps its own history (store: false) sends the call and its output back.
	env := newToolEnv(t)
	c := env.client("sk-alice")
	res, err := c.Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Store: oai.Bool(false),
		Tools: []responses.ToolUnionParam{weatherTool},
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage("Paris", responses.EasyInputMessageRoleUser),
			responses.ResponseInputItemParamOfFunctionCall(`{"city":"Paris"}`, "call_9", "get_weather"),
			{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{CallID: oai.String("call_9"),
				Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: oai.String("rain")}}},
		}}})
	require.NoError(t, err)
	require.Equal(t, "Result: rain", res.OutputText())
	msgs := env.eng.last(t).Chat.Messages
	require.Len(t, msgs, 3)
	require.Equal(t, "tool", msgs[2].Role)
	require.Equal(t, "call_9", msgs[2].ToolCallID)
}

func TestFunctionToolChoiceAndParallel(t *testing.T) {
	for _, tc := range []struct {
		name       string
		params     responses.ResponseNewParams
		wantChoice string
		wantPar    string
		wantCalls  []string
	}{
		{"parallel by default", responses.ResponseNewParams{}, `"auto"`, `true`, []string{"get_weather", "get_time"}},
		{"parallel off", responses.ResponseNewParams{ParallelToolCalls: oai.Bool(false)}, `"auto"`, `false`, []string{"get_weather"}},
		{"required", responses.ResponseNewParams{ToolChoice: responses.ResponseNewParamsToolChoiceUnion{
			OfToolChoiceMode: oai.Opt(responses.ToolChoiceOptionsRequired)}}, `"required"`, `true`, []string{"get_weather", "get_time"}},
		{"named function", responses.ResponseNewParams{ToolChoice: responses.ResponseNewParamsToolChoiceUnion{
			OfFunctionTool: &responses.ToolChoiceFunctionParam{Name: "get_time"}}},
			`{"type":"function","function":{"name":"get_time"}}`, `true`, []string{"get_time"}},
		{"none", responses.ResponseNewParams{ToolChoice: responses.ResponseNewParamsToolChoiceUnion{
			OfToolChoiceMode: oai.Opt(responses.ToolChoiceOptionsNone)}}, `"none"`, `true`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newToolEnv(t)
			params := tc.params
			params.Model, params.Input = "m", stringInput("Oslo")
			params.Tools = []responses.ToolUnionParam{weatherTool, timeTool}
			res, err := env.client("sk-alice").Responses.New(t.Context(), params)
			require.NoError(t, err)
			body := sentBody(t, env.eng.last(t))
			require.JSONEq(t, tc.wantChoice, string(body["tool_choice"]))
			require.JSONEq(t, tc.wantPar, string(body["parallel_tool_calls"]))
			var names []string
			for _, it := range res.Output {
				if it.Type == "function_call" {
					names = append(names, it.Name)
				}
			}
			require.Equal(t, tc.wantCalls, names)
			if tc.wantCalls == nil {
				require.Equal(t, "You said: Oslo", res.OutputText())
			}
			if tc.name == "named function" {
				require.Equal(t, "get_time", res.ToolChoice.Name)
				require.Equal(t, "function", string(res.ToolChoice.Type))
			}
		})
	}
}

func TestFunctionToolStream(t *testing.T) {
	env := newToolEnv(t)
	c := env.client("sk-alice")
	evs := collect(t, c, responses.ResponseNewParams{Model: "m", Input: stringInput("Lima"),
		Tools: []responses.ToolUnionParam{weatherTool, timeTool}})
	requireSequenced(t, evs)
	require.Equal(t, []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done",
		"response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
		"response.function_call_arguments.done", "response.output_item.done",
		"response.completed"}, eventTypes(evs))

	added, done := evs[2], evs[6]
	require.Equal(t, "function_call", added.Item.Type)
	require.Equal(t, "in_progress", string(added.Item.Status))
	require.Equal(t, "get_weather", added.Item.Name)
	require.Empty(t, added.Item.Arguments.OfString)
	require.Equal(t, added.Item.ID, evs[3].ItemID)
	require.Equal(t, evs[3].Delta+evs[4].Delta, evs[5].Arguments, "the deltas add up to the arguments")
	require.JSONEq(t, `{"city":"Lima"}`, evs[5].Arguments)
	require.Contains(t, evs[5].RawJSON(), `"name":"get_weather"`)
	require.Equal(t, "completed", string(done.Item.Status))
	require.Equal(t, evs[5].Arguments, done.Item.Arguments.OfString)
	require.Equal(t, int64(0), done.OutputIndex)
	require.Equal(t, int64(1), evs[7].OutputIndex)
	require.Equal(t, "get_time", evs[7].Item.Name)

	final := evs[len(evs)-1].Response
	require.Equal(t, responses.ResponseStatusCompleted, final.Status)
	require.Len(t, final.Output, 2)
	require.Equal(t, done.Item.ID, final.Output[0].ID)
	require.Equal(t, int64(5), final.Usage.OutputTokens)

	// Stream the continuation with both outputs: a text answer.
	evs = collect(t, c, responses.ResponseNewParams{Model: "m", PreviousResponseID: oai.String(final.ID),
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{CallID: oai.String(final.Output[0].CallID),
				Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: oai.String("warm")}}},
			{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{CallID: oai.String(final.Output[1].CallID),
				Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: oai.String("noon")}}},
		}}})
	requireSequenced(t, evs)
	last := evs[len(evs)-1]
	require.Equal(t, "response.completed", last.Type)
	require.Equal(t, "Result: warm+noon", last.Response.OutputText())
}

func TestAgentLoop(t *testing.T) {
	for _, tc := range []struct {
		name        string
		results     []string
		params      responses.ResponseNewParams
		wantStatus  responses.ResponseStatus
		wantReason  string
		wantItems   []string
		wantCalls   int
		wantText    string
		checkSecond func(t *testing.T, body map[string]json.RawMessage)
	}{
		{name: "tool then answer", results: []string{"sunny"}, wantStatus: responses.ResponseStatusCompleted,
			wantItems: []string{"file_search_call", "message"}, wantCalls: 2, wantText: "Result: sunny"},
		{name: "two rounds", results: []string{"again 1", "done"}, wantStatus: responses.ResponseStatusCompleted,
			wantItems: []string{"file_search_call", "file_search_call", "message"}, wantCalls: 3, wantText: "Result: done"},
		{name: "max_infer_iters", results: []string{"again"}, params: responses.ResponseNewParams{},
			wantStatus: responses.ResponseStatusIncomplete, wantReason: "max_infer_iters",
			wantItems: []string{"file_search_call", "file_search_call", "file_search_call"}, wantCalls: 3},
		{name: "max_tool_calls", results: []string{"again"}, params: responses.ResponseNewParams{MaxToolCalls: oai.Int(1)},
			wantStatus: responses.ResponseStatusCompleted, wantItems: []string{"file_search_call", "message"}, wantCalls: 2,
			wantText: "Result: again",
			checkSecond: func(t *testing.T, body map[string]json.RawMessage) {
				require.JSONEq(t, `"none"`, string(body["tool_choice"]), "no tool calls once the limit is reached")
			}},
		{name: "max_output_tokens across the loop", results: []string{"again"}, params: responses.ResponseNewParams{MaxOutputTokens: oai.Int(7)},
			wantStatus: responses.ResponseStatusIncomplete, wantReason: "max_output_tokens",
			wantItems: []string{"file_search_call", "message"}, wantCalls: 2,
			checkSecond: func(t *testing.T, body map[string]json.RawMessage) {
				require.JSONEq(t, `2`, string(body["max_tokens"]), "what is left of max_output_tokens")
			}},
	} {
		for _, stream := range []bool{false, true} {
			name := tc.name
			if stream {
				name += " stream"
			}
			t.Run(name, func(t *testing.T) {
				env := newToolEnv(t)
				env.p.builtins = []serverTool{&lookupTool{results: tc.results}}
				params := tc.params
				params.Model, params.Input = "m", stringInput("Quito")
				var body []byte
				if tc.name == "max_infer_iters" {
					params.SetExtraFields(map[string]any{"max_infer_iters": 3})
				}
				var res *responses.Response
				if stream {
					evs := collect(t, env.client("sk-alice"), params, option.WithHeader("X-Request-Id", "req-1"))
					requireSequenced(t, evs)
					last := evs[len(evs)-1]
					res = &last.Response
					var added, done int
					for _, e := range evs {
						switch {
						case e.Type == "response.output_item.added" && e.Item.Type == "file_search_call":
							added++
							require.Equal(t, "in_progress", string(e.Item.Status))
						case e.Type == "response.output_item.done" && e.Item.Type == "file_search_call":
							done++
							require.Equal(t, "completed", string(e.Item.Status))
						}
					}
					require.Equal(t, added, done)
					require.Equal(t, strings.Count(strings.Join(tc.wantItems, ","), "file_search_call"), added)
				} else {
					var err error
					res, err = env.client("sk-alice").Responses.New(t.Context(), params, option.WithHeader("X-Request-Id", "req-1"))
					require.NoError(t, err)
					body = []byte(res.RawJSON())
				}
				_ = body
				require.Equal(t, tc.wantStatus, res.Status)
				require.Equal(t, tc.wantReason, res.IncompleteDetails.Reason)
				var items []string
				for _, it := range res.Output {
					items = append(items, it.Type)
				}
				require.Equal(t, tc.wantItems, items)
				calls := env.eng.recorded()
				require.Len(t, calls, tc.wantCalls)
				require.Equal(t, int64(5*tc.wantCalls)-map[bool]int64{true: 3, false: 0}[tc.name == "max_output_tokens across the loop"],
					res.Usage.OutputTokens, "usage sums the loop's calls")
				if tc.wantText != "" {
					require.Equal(t, tc.wantText, res.OutputText())
				}
				for i, c := range calls {
					require.Equal(t, res.ID, c.Header.Get("X-Strata-Session"), "every call of the loop carries the session")
					want := "req-1"
					if i > 0 {
						want = fmt.Sprintf("req-1:%d", i)
					}
					require.Equal(t, want, c.Header.Get("X-Request-Id"), "each call is metered under its own id")
				}
				if tc.checkSecond != nil {
					tc.checkSecond(t, sentBody(t, calls[1]))
				}
				// The loop's tool results are part of the stored conversation.
				msgs := calls[len(calls)-1].Chat.Messages
				require.Equal(t, "tool", msgs[len(msgs)-1].Role)
			})
		}
	}
}
