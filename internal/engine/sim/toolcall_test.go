package sim

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
)

const weatherTools = `[
 {"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{
   "city":{"type":"string","minLength":2},"unit":{"type":"string","enum":["celsius","fahrenheit"]},
   "days":{"type":"integer","minimum":1,"maximum":7},"detail":{"type":"boolean"}},"required":["city","unit","days"]}}},
 {"type":"function","function":{"name":"search_docs","parameters":{"type":"object","properties":{
   "query":{"type":"string"},"tags":{"type":"array","items":{"type":"string"},"minItems":2}}}}}
]`

func TestToolCallRule(t *testing.T) {
	_, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	chat := func(user, choice, lastRole string) map[string]any {
		msgs := `[{"role":"user","content":"` + user + `"}]`
		if lastRole == "tool" {
			msgs = `[{"role":"user","content":"` + user + `"},{"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"sunny"}]`
		}
		body := `{"messages":` + msgs + `,"tools":` + weatherTools + `,"max_tokens":64`
		if choice != "" {
			body += `,"tool_choice":` + choice
		}
		code, resp := postJSON(t, hs, "/v1/chat/completions", body+`}`)
		require.Equal(t, 200, code, resp)
		var out map[string]any
		require.NoError(t, json.Unmarshal([]byte(resp), &out))
		return out["choices"].([]any)[0].(map[string]any)
	}
	called := func(c map[string]any) string {
		calls := c["message"].(map[string]any)["tool_calls"].([]any)
		if len(calls) == 0 {
			return ""
		}
		require.Equal(t, "tool_calls", c["finish_reason"])
		require.Nil(t, c["message"].(map[string]any)["content"])
		return calls[0].(map[string]any)["function"].(map[string]any)["name"].(string)
	}
	require.Equal(t, "get_weather", called(chat("Use GET_WEATHER for Paris", "", "")), "the user names the tool")
	require.Equal(t, "search_docs", called(chat("please search_docs", `"auto"`, "")))
	require.Equal(t, "", called(chat("hello there", "", "")), "auto and no name: text")
	require.Equal(t, "get_weather", called(chat("hello there", `"required"`, "")), "required: the first tool")
	require.Equal(t, "search_docs", called(chat("get_weather", `{"type":"function","function":{"name":"search_docs"}}`, "")))
	require.Equal(t, "", called(chat("get_weather", `"none"`, "")))
	require.Equal(t, "", called(chat("get_weather", "", "tool")), "after a tool result: text")

	c := chat("get_weather now", "", "")
	args := c["message"].(map[string]any)["tool_calls"].([]any)[0].(map[string]any)["function"].(map[string]any)["arguments"].(string)
	require.JSONEq(t, `{"city":"example","unit":"celsius","days":1}`, args, "required properties, valid values")
	require.True(t, strings.HasPrefix(c["message"].(map[string]any)["tool_calls"].([]any)[0].(map[string]any)["id"].(string), "chatcmpl-tool-"))

	for _, tc := range []struct{ body, want string }{
		{`{"messages":[{"role":"user","content":"x"}],"tools":{}}`, "valid list"},
		{`{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]}`, "must be a function with a name"},
		{`{"messages":[{"role":"user","content":"x"}],"tools":` + weatherTools + `,"tool_choice":"sometimes"}`, "tool_choice must be"},
		{`{"messages":[{"role":"user","content":"x"}],"tools":` + weatherTools + `,"tool_choice":{"type":"function","function":{"name":"nope"}}}`, "has not been passed"},
	} {
		code, body := postJSON(t, hs, "/v1/chat/completions", tc.body)
		require.Equal(t, 400, code, body)
		require.Contains(t, body, tc.want)
	}
}

func TestExampleOfSchema(t *testing.T) {
	var schema any
	require.NoError(t, json.Unmarshal([]byte(`{"type":"object","properties":{
		"a":{"type":["null","integer"],"exclusiveMinimum":3},"b":{"const":"x"},"c":{"anyOf":[{"type":"number","maximum":-2}]},
		"d":{"type":"array","items":{"type":"boolean"},"minItems":3,"maxItems":3},"e":{"type":"string","maxLength":3},
		"f":{"properties":{"g":{"default":7}}}}}`), &schema))
	got, err := json.Marshal(exampleOf(schema, 0))
	require.NoError(t, err)
	require.JSONEq(t, `{"a":4,"b":"x","c":-2,"d":[true,true,true],"e":"exa","f":{"g":7}}`, string(got))
}

// openai-go sees a tool call, streamed or not.
func TestToolCallOpenAIClient(t *testing.T) {
	_, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	c := newClient(hs)
	params := oai.ChatCompletionNewParams{Model: testModel,
		Messages: []oai.ChatCompletionMessageParamUnion{oai.UserMessage("what does get_weather say?")},
		Tools: []oai.ChatCompletionToolUnionParam{oai.ChatCompletionFunctionTool(oai.FunctionDefinitionParam{
			Name: "get_weather", Parameters: oai.FunctionParameters{"type": "object",
				"properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}}})},
		StreamOptions: oai.ChatCompletionStreamOptionsParam{IncludeUsage: oai.Bool(true)},
	}
	stream := c.Chat.Completions.NewStreaming(context.Background(), params)
	var acc oai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	require.NoError(t, stream.Err())
	require.Len(t, acc.Choices, 1)
	require.Equal(t, "tool_calls", acc.Choices[0].FinishReason)
	require.Len(t, acc.Choices[0].Message.ToolCalls, 1)
	require.Equal(t, "get_weather", acc.Choices[0].Message.ToolCalls[0].Function.Name)
	require.JSONEq(t, `{"city":"example"}`, acc.Choices[0].Message.ToolCalls[0].Function.Arguments)
	require.Positive(t, acc.Usage.CompletionTokens)

	params.StreamOptions = oai.ChatCompletionStreamOptionsParam{}
	resp, err := c.Chat.Completions.New(context.Background(), params)
	require.NoError(t, err)
	require.Equal(t, "tool_calls", resp.Choices[0].FinishReason)
	require.Equal(t, "get_weather", resp.Choices[0].Message.ToolCalls[0].Function.Name)
	// The engine generated the call's text and EOS.
	require.Equal(t, int64(len(testTok(t).Encode(`{"name": "get_weather", "arguments": {"city":"example"}}`))+1), resp.Usage.CompletionTokens)
}

func testTok(t *testing.T) *tokenizerSet {
	tok, err := loadTokenizerFor(ModelProfile{Tokenizer: defaultTokenizer})
	require.NoError(t, err)
	return tok
}
