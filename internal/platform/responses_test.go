package platform

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func stringInput(s string) responses.ResponseNewParamsInputUnion {
	return responses.ResponseNewParamsInputUnion{OfString: oai.String(s)}
}

func requireAPIError(t *testing.T, err error, status int, code string) *oai.Error {
	t.Helper()
	var apiErr *oai.Error
	require.True(t, errors.As(err, &apiErr), "want an API error, got %v", err)
	require.Equal(t, status, apiErr.StatusCode, apiErr.Message)
	require.Equal(t, code, apiErr.Code)
	return apiErr
}

func TestResponseStringInput(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	res, err := c.Responses.New(t.Context(), responses.ResponseNewParams{
		Model:           "m",
		Input:           stringInput("hello there"),
		MaxOutputTokens: oai.Int(100),
		Temperature:     oai.Float(0.5),
		Metadata:        map[string]string{"team": "a"},
	})
	require.NoError(t, err)

	require.True(t, strings.HasPrefix(res.ID, "resp_"), res.ID)
	require.Equal(t, "response", string(res.Object))
	require.Equal(t, float64(testNow.Unix()), res.CreatedAt)
	require.Equal(t, responses.ResponseStatusCompleted, res.Status)
	require.Equal(t, "You said: hello there", res.OutputText())
	require.Len(t, res.Output, 1)
	out := res.Output[0]
	require.Equal(t, "message", out.Type)
	require.True(t, strings.HasPrefix(out.ID, "msg_"), out.ID)
	require.Equal(t, "assistant", string(out.Role))
	require.Equal(t, "completed", string(out.Status))
	require.Equal(t, "output_text", out.Content[0].Type)
	require.Empty(t, out.Content[0].Annotations)
	require.Equal(t, int64(3), res.Usage.InputTokens, "the engine's count of 'user: hello there'")
	require.Equal(t, int64(4), res.Usage.OutputTokens)
	require.Equal(t, int64(7), res.Usage.TotalTokens)
	require.Equal(t, int64(100), res.MaxOutputTokens)
	require.Equal(t, 0.5, res.Temperature)
	require.Equal(t, "a", res.Metadata["team"])
	require.Equal(t, "text", string(res.Text.Format.Type))
	require.True(t, res.ParallelToolCalls)
	require.Equal(t, "auto", string(res.ToolChoice.OfToolChoiceMode))
	require.Equal(t, "disabled", string(res.Truncation))

	// The wire form: nullable fields are present as null, lists as [].
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(res.RawJSON()), &raw))
	for field, want := range map[string]string{"error": "null", "incomplete_details": "null", "previous_response_id": "null",
		"instructions": "null", "tools": "[]", "store": "true", "background": "false", "top_p": "null",
		"completed_at": "1777636800"} {
		require.JSONEq(t, want, string(raw[field]), field)
	}

	call := env.eng.last(t)
	require.Equal(t, openai.PathChatCompletions, call.Path)
	require.Equal(t, []string{"user: hello there"}, sentMessages(call))
	require.Equal(t, "Bearer sk-alice", call.Header.Get("Authorization"), "the key is forwarded to the gateway")
	require.Equal(t, res.ID, call.Header.Get(openai.HeaderSession), "a new chain's session is its first response")
	require.False(t, call.Chat.Stream)
	n, _ := call.Chat.OutputLimit()
	require.Equal(t, 100, n)
	require.Equal(t, 0.5, *call.Chat.Temperature)
}

func TestResponseItemsInputAndInstructions(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	input := responses.ResponseInputParam{
		responses.ResponseInputItemParamOfMessage("Be terse.", responses.EasyInputMessageRoleDeveloper),
		responses.ResponseInputItemParamOfMessage("Earlier question", responses.EasyInputMessageRoleUser),
		responses.ResponseInputItemParamOfMessage("Earlier answer", responses.EasyInputMessageRoleAssistant),
		responses.ResponseInputItemParamOfInputMessage(responses.ResponseInputMessageContentListParam{
			responses.ResponseInputContentParamOfInputText("part one"),
			responses.ResponseInputContentParamOfInputText("part two"),
		}, "user"),
	}
	res, err := c.Responses.New(t.Context(), responses.ResponseNewParams{
		Model:        "m",
		Instructions: oai.String("You are a test."),
		Input:        responses.ResponseNewParamsInputUnion{OfInputItemList: input},
	})
	require.NoError(t, err)
	require.Equal(t, "You are a test.", res.Instructions.OfString)
	require.Equal(t, "You said: part onepart two", res.OutputText())
	call := env.eng.last(t)
	require.Equal(t, []string{
		"system: You are a test.",
		"system: Be terse.",
		"user: Earlier question",
		"assistant: Earlier answer",
		"user: part onepart two",
	}, sentMessages(call))
	var body struct {
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(call.Body, &body))
	require.JSONEq(t, `[{"type":"text","text":"part one"},{"type":"text","text":"part two"}]`, string(body.Messages[4].Content),
		"several parts stay parts")
}

func TestResponsePreviousResponseID(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	first, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("My name is Ada."),
		Instructions: oai.String("first instructions")})
	require.NoError(t, err)
	second, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("What is my name?"),
		PreviousResponseID: oai.String(first.ID)})
	require.NoError(t, err)
	require.Equal(t, first.ID, second.PreviousResponseID)
	call := env.eng.last(t)
	require.Equal(t, []string{"user: My name is Ada.", "assistant: You said: My name is Ada.", "user: What is my name?"},
		sentMessages(call), "the history is sent; the first turn's instructions are not carried over")
	require.Equal(t, first.ID, call.Header.Get(openai.HeaderSession))
	require.Positive(t, second.Usage.InputTokensDetails.CachedTokens)

	third, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("Again?"),
		PreviousResponseID: oai.String(second.ID), Instructions: oai.String("third instructions")})
	require.NoError(t, err)
	call = env.eng.last(t)
	require.Equal(t, first.ID, call.Header.Get(openai.HeaderSession), "every turn of a chain carries the first id")
	require.Equal(t, []string{"system: third instructions", "user: My name is Ada.", "assistant: You said: My name is Ada.",
		"user: What is my name?", "assistant: You said: What is my name?", "user: Again?"}, sentMessages(call))

	// input_items of the third turn: the whole conversation, newest first by default.
	page, err := c.Responses.InputItems.List(ctx, third.ID, responses.InputItemListParams{})
	require.NoError(t, err)
	var got []string
	for _, it := range page.Data {
		require.Equal(t, "message", it.Type)
		require.NotEmpty(t, it.ID)
		var text string
		if it.Role == "assistant" {
			for _, part := range it.Content.OfResponseOutputMessageContentArray {
				require.Equal(t, "output_text", part.Type)
				text += part.Text
			}
		} else {
			for _, part := range it.Content.OfInputItemContentList {
				require.Equal(t, "input_text", part.Type)
				text += part.Text
			}
		}
		got = append(got, it.Role+": "+text)
	}
	require.Equal(t, []string{"user: Again?", "assistant: You said: What is my name?", "user: What is my name?",
		"assistant: You said: My name is Ada.", "user: My name is Ada."}, got)
	require.False(t, page.HasMore)

	t.Run("unknown previous_response_id", func(t *testing.T) {
		_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("x"),
			PreviousResponseID: oai.String("resp_nope")})
		apiErr := requireAPIError(t, err, 404, "previous_response_not_found")
		require.Equal(t, "Previous response with id 'resp_nope' not found.", apiErr.Message)
		require.Equal(t, "previous_response_id", apiErr.Param)
	})
}

func TestResponseStoreFalse(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	res, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("secret"), Store: oai.Bool(false)})
	require.NoError(t, err)
	require.Contains(t, res.RawJSON(), `"store":false`)
	_, err = c.Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
	requireAPIError(t, err, 404, openai.CodeNotFound)
	_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("x"), PreviousResponseID: oai.String(res.ID)})
	requireAPIError(t, err, 404, "previous_response_not_found")
}

func TestResponseGetDeleteInputItems(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	input := responses.ResponseInputParam{}
	for _, s := range []string{"a", "b", "c", "d", "e"} {
		input = append(input, responses.ResponseInputItemParamOfMessage(s, responses.EasyInputMessageRoleUser))
	}
	res, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: responses.ResponseNewParamsInputUnion{OfInputItemList: input}})
	require.NoError(t, err)

	got, err := c.Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
	require.NoError(t, err)
	require.JSONEq(t, res.RawJSON(), got.RawJSON(), "GET answers the response as it was created")

	for _, tc := range []struct {
		name  string
		query string
		texts []string
		more  bool
	}{
		{"default desc", "", []string{"e", "d", "c", "b", "a"}, false},
		{"asc", "?order=asc", []string{"a", "b", "c", "d", "e"}, false},
		{"limit", "?order=asc&limit=2", []string{"a", "b"}, true},
		{"after", "?order=asc&limit=2&after=ID1", []string{"c", "d"}, true},
		{"after desc", "?after=ID1", []string{"a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			query := tc.query
			if strings.Contains(query, "ID1") {
				asc := listTexts(t, env, res.ID, "?order=asc")
				query = strings.ReplaceAll(query, "ID1", asc[1].id)
			}
			items := listTexts(t, env, res.ID, query)
			var texts []string
			for _, it := range items {
				texts = append(texts, it.text)
			}
			require.Equal(t, tc.texts, texts)
			_, _, body := env.do(t, "GET", "/v1/responses/"+res.ID+"/input_items"+query, "sk-alice", "")
			var page itemList
			require.NoError(t, json.Unmarshal(body, &page))
			require.Equal(t, tc.more, page.HasMore)
			require.Equal(t, items[0].id, *page.FirstID)
			require.Equal(t, items[len(items)-1].id, *page.LastID)
		})
	}
	for _, q := range []string{"?limit=0", "?limit=101", "?limit=x", "?order=up", "?after=msg_nope"} {
		status, _, body := env.do(t, "GET", "/v1/responses/"+res.ID+"/input_items"+q, "sk-alice", "")
		require.Equal(t, 400, status, q)
		require.NotEmpty(t, envelope(t, body)["param"], q)
	}

	status, _, body := env.do(t, "DELETE", "/v1/responses/"+res.ID, "sk-alice", "")
	require.Equal(t, 200, status)
	require.JSONEq(t, `{"id":"`+res.ID+`","object":"response","deleted":true}`, string(body))
	_, err = c.Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
	requireAPIError(t, err, 404, openai.CodeNotFound)
	require.Error(t, c.Responses.Delete(ctx, res.ID), "deleting twice is a 404")
	_, err = c.Responses.InputItems.List(ctx, res.ID, responses.InputItemListParams{})
	requireAPIError(t, err, 404, openai.CodeNotFound)
}

type listed struct{ id, text string }

func listTexts(t *testing.T, env *testEnv, id, query string) []listed {
	t.Helper()
	status, _, body := env.do(t, "GET", "/v1/responses/"+id+"/input_items"+query, "sk-alice", "")
	require.Equal(t, 200, status, string(body))
	var page struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Type    string `json:"type"`
			Role    string `json:"role"`
			Status  string `json:"status"`
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &page))
	require.Equal(t, "list", page.Object)
	var out []listed
	for _, d := range page.Data {
		require.Equal(t, "message", d.Type)
		require.Equal(t, "user", d.Role)
		require.Equal(t, "completed", d.Status)
		require.Equal(t, "input_text", d.Content[0].Type)
		out = append(out, listed{d.ID, d.Content[0].Text})
	}
	return out
}

func TestResponseOwnership(t *testing.T) {
	env := newTestEnv(t)
	ctx := t.Context()
	res, err := env.client("sk-alice").Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("mine")})
	require.NoError(t, err)
	calls := len(env.eng.recorded())

	for _, tc := range []struct {
		name, method, path, key, body string
		status                        int
		code                          string
	}{
		{"get, another key", "GET", "/v1/responses/" + res.ID, "sk-bob", "", 404, openai.CodeNotFound},
		{"delete, another key", "DELETE", "/v1/responses/" + res.ID, "sk-bob", "", 404, openai.CodeNotFound},
		{"input items, another key", "GET", "/v1/responses/" + res.ID + "/input_items", "sk-bob", "", 404, openai.CodeNotFound},
		{"continue, another key", "POST", "/v1/responses", "sk-bob", `{"model":"m","input":"x","previous_response_id":"` + res.ID + `"}`, 404, "previous_response_not_found"},
		{"get, no key", "GET", "/v1/responses/" + res.ID, "", "", 401, openai.CodeInvalidAPIKey},
		{"delete, no key", "DELETE", "/v1/responses/" + res.ID, "", "", 401, openai.CodeInvalidAPIKey},
		{"input items, no key", "GET", "/v1/responses/" + res.ID + "/input_items", "", "", 401, openai.CodeInvalidAPIKey},
		{"create, no key", "POST", "/v1/responses", "", `{"model":"m","input":"x"}`, 401, openai.CodeInvalidAPIKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := env.do(t, tc.method, tc.path, tc.key, tc.body)
			require.Equal(t, tc.status, status, string(body))
			e := envelope(t, body)
			require.Equal(t, tc.code, e["code"])
			require.NotContains(t, string(body), "sk-", "no key in answers")
		})
	}
	require.Len(t, env.eng.recorded(), calls, "nothing reached the engine")

	got, err := env.client("sk-alice").Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
	require.NoError(t, err, "the owner still sees it after the others tried")
	require.Equal(t, res.ID, got.ID)

	// The same key through x-api-key is the same owner.
	req, _ := http.NewRequestWithContext(ctx, "GET", env.srv.URL+"/v1/responses/"+res.ID, nil)
	req.Header.Set("x-api-key", "sk-alice")
	resp, err := env.srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
}

// upstreamErrors are answers of the layer below that a Responses client must see as they are.
var upstreamErrors = []struct {
	name    string
	status  int
	body    string
	headers map[string]string
	code    string
}{
	{"401", 401, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`, nil, "invalid_api_key"},
	{"404 model", 404, `{"error":{"message":"The model 'nope' does not exist or you do not have access to it.","type":"invalid_request_error","param":"model","code":"model_not_found"}}`, nil, "model_not_found"},
	{"429", 429, `{"error":{"message":"Rate limit reached for requests.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`,
		map[string]string{"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s", "retry-after": "20"}, "rate_limit_exceeded"},
}

func TestResponseRelaysUpstreamErrors(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	for _, tc := range upstreamErrors {
		for _, stream := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{false: "", true: " stream"}[stream], func(t *testing.T) {
				env.eng.setHandler(func(w http.ResponseWriter, r *http.Request) {
					for k, v := range tc.headers {
						w.Header().Set(k, v)
					}
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tc.status)
					_, _ = w.Write([]byte(tc.body))
				})
				params := responses.ResponseNewParams{Model: "m", Input: stringInput("hi")}
				var err error
				if stream {
					s := c.Responses.NewStreaming(t.Context(), params)
					for s.Next() {
					}
					err = s.Err()
					s.Close()
				} else {
					_, err = c.Responses.New(t.Context(), params)
				}
				apiErr := requireAPIError(t, err, tc.status, tc.code)
				var want struct{ Error map[string]any }
				require.NoError(t, json.Unmarshal([]byte(tc.body), &want))
				require.Equal(t, want.Error["message"], apiErr.Message)
				for k, v := range tc.headers {
					require.Equal(t, v, apiErr.Response.Header.Get(k), k)
				}
			})
		}
	}
	t.Run("rate-limit headers of a success", func(t *testing.T) {
		env.eng.setHandler(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("x-ratelimit-remaining-requests", "41")
			w.Header().Set("x-internal-detail", "replica-7")
			calls := env.eng.recorded() // the fake read the body and parsed it before calling here
			answerChat(w, calls[len(calls)-1].Chat)
		})
		for _, stream := range []string{"false", "true"} {
			status, header, body := env.do(t, "POST", "/v1/responses", "sk-alice", `{"model":"m","input":"hi","stream":`+stream+`}`)
			require.Equal(t, 200, status, string(body))
			require.Equal(t, "41", header.Get("x-ratelimit-remaining-requests"), "stream: "+stream)
			require.Empty(t, header.Get("x-internal-detail"), "only rate-limit headers are relayed")
		}
	})
	t.Run("no envelope", func(t *testing.T) {
		env.eng.setHandler(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html>bad gateway at 10.0.0.7</html>", 500)
		})
		status, _, body := env.do(t, "POST", "/v1/responses", "sk-alice", `{"model":"m","input":"hi"}`)
		require.Equal(t, 502, status)
		require.NotContains(t, string(body), "10.0.0.7", "no internal detail")
	})
	t.Run("unreachable", func(t *testing.T) {
		env.eng.srv.Close()
		status, _, body := env.do(t, "POST", "/v1/responses", "sk-alice", `{"model":"m","input":"hi"}`)
		require.Equal(t, 502, status)
		require.Equal(t, "server_error", envelope(t, body)["type"])
	})
}

func TestResponseRequestValidation(t *testing.T) {
	env := newTestEnv(t)
	for _, tc := range []struct {
		name, body string
		param      any
		code       string
	}{
		{"malformed JSON", `{"model":`, nil, openai.CodeInvalidJSON},
		{"not an object", `[1]`, nil, codeInvalidType},
		{"missing model", `{"input":"hi"}`, "model", openai.CodeMissingParam},
		{"missing input", `{"model":"m"}`, "input", openai.CodeMissingParam},
		{"empty input list", `{"model":"m","input":[]}`, "input", "empty_array"},
		{"input of a number", `{"model":"m","input":3}`, "input", codeInvalidType},
		{"temperature type", `{"model":"m","input":"x","temperature":"hot"}`, "temperature", codeInvalidType},
		{"temperature above 2", `{"model":"m","input":"x","temperature":2.5}`, "temperature", codeInvalidValue},
		{"top_p above 1", `{"model":"m","input":"x","top_p":1.5}`, "top_p", codeInvalidValue},
		{"max_output_tokens zero", `{"model":"m","input":"x","max_output_tokens":0}`, "max_output_tokens", codeInvalidValue},
		{"max_output_tokens fraction", `{"model":"m","input":"x","max_output_tokens":1.5}`, "max_output_tokens", codeInvalidType},
		{"store type", `{"model":"m","input":"x","store":"yes"}`, "store", codeInvalidType},
		{"metadata value type", `{"model":"m","input":"x","metadata":{"k":1}}`, "metadata.k", codeInvalidType},
		{"metadata too many", `{"model":"m","input":"x","metadata":{` + manyPairs(17) + `}}`, "metadata", codeInvalidValue},
		{"unknown parameter", `{"model":"m","input":"x","temprature":1}`, "temprature", codeUnknownParameter},
		{"background stream", `{"model":"m","input":"x","background":true,"stream":true}`, "stream", codeUnsupportedParameter},
		{"background without store", `{"model":"m","input":"x","background":true,"store":false}`, "store", codeInvalidValue},
		{"hosted tool", `{"model":"m","input":"x","tools":[{"type":"web_search"}]}`, "tools[0].type", codeUnsupportedValue},
		{"file_search without stores", `{"model":"m","input":"x","tools":[{"type":"file_search"}]}`, "tools[0].vector_store_ids", openai.CodeMissingParam},
		{"file_search filters", `{"model":"m","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs_1"],"filters":{"type":"eq","key":"a","value":1}}]}`, "tools[0].filters", codeUnsupportedParameter},
		{"file_search results", `{"model":"m","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs_1"],"max_num_results":51}]}`, "tools[0].max_num_results", codeInvalidValue},
		{"file_search twice", `{"model":"m","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs_1"]},{"type":"file_search","vector_store_ids":["vs_1"]}]}`, "tools[1].type", codeInvalidValue},
		{"function named file_search", `{"model":"m","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs_1"]},{"type":"function","name":"file_search"}]}`, "tools", codeInvalidValue},
		{"unknown tool type", `{"model":"m","input":"x","tools":[{"type":"robot"}]}`, "tools[0].type", codeInvalidValue},
		{"tools not a list", `{"model":"m","input":"x","tools":{"type":"function"}}`, "tools", codeInvalidType},
		{"tool without name", `{"model":"m","input":"x","tools":[{"type":"function"}]}`, "tools[0].name", openai.CodeMissingParam},
		{"tool name pattern", `{"model":"m","input":"x","tools":[{"type":"function","name":"get weather"}]}`, "tools[0].name", codeInvalidValue},
		{"tool schema not an object", `{"model":"m","input":"x","tools":[{"type":"function","name":"f","parameters":"{}"}]}`, "tools[0].parameters", codeInvalidType},
		{"tool unknown field", `{"model":"m","input":"x","tools":[{"type":"function","name":"f","function":{}}]}`, "tools[0].function", codeUnknownParameter},
		{"tool twice", `{"model":"m","input":"x","tools":[{"type":"function","name":"f"},{"type":"function","name":"f"}]}`, "tools[1].name", codeInvalidValue},
		{"tool_choice required without tools", `{"model":"m","input":"x","tool_choice":"required"}`, "tool_choice", codeInvalidValue},
		{"tool_choice mode", `{"model":"m","input":"x","tool_choice":"always"}`, "tool_choice", codeInvalidValue},
		{"tool_choice unknown function", `{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}`, "tool_choice", codeInvalidValue},
		{"tool_choice hosted", `{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"file_search"}}`, "tool_choice.type", codeUnsupportedValue},
		{"output without call", `{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":"x"}]}`, "input", codeInvalidValue},
		{"call without output", `{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"role":"user","content":"x"}]}`, "input", codeInvalidValue},
		{"output without output", `{"model":"m","input":[{"type":"function_call_output","call_id":"c"}]}`, "input[0].output", openai.CodeMissingParam},
		{"call without call_id", `{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}`, "input[0].call_id", openai.CodeMissingParam},
		{"output of an image", `{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_image"}]}]}`, "input[0].output[0].type", codeUnsupportedValue},
		{"item reference", `{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, "input[0].type", codeUnsupportedValue},
		{"max_infer_iters zero", `{"model":"m","input":"x","max_infer_iters":0}`, "max_infer_iters", codeInvalidValue},
		{"conversation and previous", `{"model":"m","input":"x","conversation":"conv_1","previous_response_id":"resp_1"}`, "conversation", codeInvalidValue},
		{"conversation type", `{"model":"m","input":"x","conversation":1}`, "conversation", codeInvalidType},
		{"json schema", `{"model":"m","input":"x","text":{"format":{"type":"json_schema"}}}`, "text.format.type", codeUnsupportedValue},
		{"truncation auto", `{"model":"m","input":"x","truncation":"auto"}`, "truncation", codeUnsupportedValue},
		{"include", `{"model":"m","input":"x","include":["message.output_text.logprobs"]}`, "include[0]", codeUnsupportedValue},
		{"item role", `{"model":"m","input":[{"role":"robot","content":"x"}]}`, "input[0].role", codeInvalidValue},
		{"item without role", `{"model":"m","input":[{"content":"x"}]}`, "input[0].role", openai.CodeMissingParam},
		{"item without content", `{"model":"m","input":[{"role":"user"}]}`, "input[0].content", openai.CodeMissingParam},
		{"image part", `{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}`, "input[0].content[0].type", codeUnsupportedValue},
		{"input_text from assistant", `{"model":"m","input":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"input_text","text":"b"}]}]}`, "input[1].content[0].type", codeInvalidValue},
		{"part without text", `{"model":"m","input":[{"role":"user","content":[{"type":"input_text"}]}]}`, "input[0].content[0].text", openai.CodeMissingParam},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := env.do(t, "POST", "/v1/responses", "sk-alice", tc.body)
			require.Equal(t, 400, status, string(body))
			e := envelope(t, body)
			require.Equal(t, "invalid_request_error", e["type"])
			require.Equal(t, tc.param, e["param"])
			require.Equal(t, tc.code, e["code"])
			require.NotEmpty(t, e["message"])
		})
	}
	require.Empty(t, env.eng.recorded(), "invalid requests never reach the engine")

	// Neutral values of unsupported parameters are accepted.
	status, _, body := env.do(t, "POST", "/v1/responses", "sk-alice",
		`{"model":"m","input":"x","tools":[],"tool_choice":"none","background":false,"conversation":null,"include":[],"truncation":"disabled","text":{"format":{"type":"text"}},"reasoning":{},"service_tier":"auto","stream_options":null,"user":"u1","top_logprobs":0}`)
	require.Equal(t, 200, status, string(body))
	var res map[string]any
	require.NoError(t, json.Unmarshal(body, &res))
	require.Equal(t, "none", res["tool_choice"])
	require.Equal(t, "u1", res["user"])
}

func manyPairs(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, `"k`+string(rune('a'+i))+`":"v"`)
	}
	return strings.Join(parts, ",")
}

func TestResponseIncomplete(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	res, err := c.Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("one two three four"), MaxOutputTokens: oai.Int(2)})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusIncomplete, res.Status)
	require.Equal(t, "max_output_tokens", res.IncompleteDetails.Reason)
	require.Equal(t, "incomplete", string(res.Output[0].Status))
	require.Equal(t, "You said:", res.OutputText())
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(res.RawJSON()), &raw))
	require.JSONEq(t, "null", string(raw["completed_at"]))
}

func TestUnknownRoute(t *testing.T) {
	env := newTestEnv(t)
	for _, tc := range []struct{ method, path string }{{"GET", "/v1/nope"}, {"GET", "/v1/chat/completions"}, {"POST", "/v1/responses/x/uncancel"}} {
		status, _, body := env.do(t, tc.method, tc.path, "sk-alice", "")
		require.Equal(t, 404, status)
		require.Equal(t, "Invalid URL ("+tc.method+" "+tc.path+")", envelope(t, body)["message"])
	}
}

func TestMetrics(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	_, err := c.Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("x")})
	require.NoError(t, err)
	env.do(t, "POST", "/v1/responses", "sk-alice", `{"model":"m"}`)
	env.do(t, "GET", "/v1/responses/resp_nope", "sk-alice", "")
	env.do(t, "GET", "/v1/models", "sk-alice", "")

	for _, tc := range []struct {
		path, code string
		want       float64
	}{
		{"/v1/responses", "200", 1},
		{"/v1/responses", "400", 1},
		{"/v1/responses/{id}", "404", 1},
		{"/v1/models", "200", 1},
	} {
		require.Equal(t, tc.want, testutil.ToFloat64(env.p.requests.WithLabelValues(tc.path, tc.code)), tc.path+" "+tc.code)
	}
	n, err := testutil.GatherAndCount(env.reg, "strata_platform_response_seconds", "strata_platform_requests_total")
	require.NoError(t, err)
	require.Equal(t, 1+4, n, "one histogram, four counter series")
	require.NoError(t, testutil.GatherAndCompare(env.reg, strings.NewReader(`
# HELP strata_platform_response_seconds Time to answer POST /v1/responses, until the last event of a stream, in seconds.
# TYPE strata_platform_response_seconds histogram
`+histogramLines(2)), "strata_platform_response_seconds"))
}

// histogramLines renders the response_seconds histogram with n observations of 0s (the fake
// clock does not move).
func histogramLines(n int) string {
	var b strings.Builder
	for _, le := range prometheus.ExponentialBuckets(0.025, 2, 13) {
		b.WriteString(`strata_platform_response_seconds_bucket{le="` + trimFloat(le) + `"} ` + itoa(n) + "\n")
	}
	b.WriteString(`strata_platform_response_seconds_bucket{le="+Inf"} ` + itoa(n) + "\n")
	b.WriteString("strata_platform_response_seconds_sum 0\n")
	b.WriteString("strata_platform_response_seconds_count " + itoa(n) + "\n")
	return b.String()
}

func trimFloat(f float64) string { b, _ := json.Marshal(f); return string(b) }
func itoa(n int) string          { b, _ := json.Marshal(n); return string(b) }

func TestNew(t *testing.T) {
	env := newTestEnv(t)
	_, err := New(config.Platform{}, nil, http.DefaultTransport, clock.RealClock{}, nil, nil)
	require.ErrorContains(t, err, "store")
	_, err = New(config.Platform{}, env.st, nil, clock.RealClock{}, nil, nil)
	require.ErrorContains(t, err, "next")
	_, err = New(config.Platform{}, env.st, http.DefaultTransport, nil, env.reg, nil)
	require.ErrorContains(t, err, "register", "metrics registered twice on one registry")
	p, err := New(config.Platform{}, env.st, http.DefaultTransport, nil, nil, nil)
	require.NoError(t, err, "nil clock, registry and logger get defaults")
	require.NotNil(t, p)
}

func TestOwnerOf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers map[string]string
		ok      bool
		same    string // key whose owner token this must equal
	}{
		{"bearer", map[string]string{"Authorization": "Bearer k1"}, true, "k1"},
		{"bearer lower case", map[string]string{"Authorization": "bearer k1"}, true, "k1"},
		{"x-api-key", map[string]string{"x-api-key": "k1"}, true, "k1"},
		{"basic is not a key", map[string]string{"Authorization": "Basic a2V5"}, false, ""},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, false, ""},
		{"none", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/", nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			got, ok := keyHash(r)
			require.Equal(t, tc.ok, ok)
			if tc.ok {
				want, _ := keyHash(&http.Request{Header: http.Header{"Authorization": {"Bearer " + tc.same}}})
				require.Equal(t, want, got)
				require.Len(t, got, 64)
				require.NotContains(t, got, tc.same)
			}
		})
	}
	a, _ := keyHash(&http.Request{Header: http.Header{"Authorization": {"Bearer k1"}}})
	b, _ := keyHash(&http.Request{Header: http.Header{"Authorization": {"Bearer k2"}}})
	require.NotEqual(t, a, b)
}
