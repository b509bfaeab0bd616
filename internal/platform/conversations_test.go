package platform

import (
	"net/http"
	"strings"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/conversations"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
)

func TestConversationsCRUD(t *testing.T) {
	env := newTestEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()

	conv, err := c.Conversations.New(ctx, conversations.ConversationNewParams{
		Metadata: map[string]string{"topic": "demo"},
		Items: []responses.ResponseInputItemUnionParam{
			responses.ResponseInputItemParamOfMessage("Be brief.", responses.EasyInputMessageRoleSystem),
			responses.ResponseInputItemParamOfMessage("Hello", responses.EasyInputMessageRoleUser),
		},
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(conv.ID, "conv_"), conv.ID)
	require.Equal(t, "conversation", string(conv.Object))
	require.Equal(t, testNow.Unix(), conv.CreatedAt)
	require.Equal(t, map[string]any{"topic": "demo"}, conv.Metadata)

	got, err := c.Conversations.Get(ctx, conv.ID)
	require.NoError(t, err)
	require.Equal(t, conv.ID, got.ID)

	upd, err := c.Conversations.Update(ctx, conv.ID, conversations.ConversationUpdateParams{Metadata: map[string]string{"topic": "new"}})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"topic": "new"}, upd.Metadata)

	added, err := c.Conversations.Items.New(ctx, conv.ID, conversations.ItemNewParams{Items: []responses.ResponseInputItemUnionParam{
		responses.ResponseInputItemParamOfMessage("Second", responses.EasyInputMessageRoleUser),
		responses.ResponseInputItemParamOfFunctionCall(`{}`, "call_1", "f"),
		responses.ResponseInputItemParamOfFunctionCallOutput("out"),
	}})
	require.Error(t, err, "a function_call_output needs its call_id")
	requireAPIError(t, err, 400, openai.CodeMissingParam)
	_ = added

	added, err = c.Conversations.Items.New(ctx, conv.ID, conversations.ItemNewParams{Items: []responses.ResponseInputItemUnionParam{
		responses.ResponseInputItemParamOfMessage("Second", responses.EasyInputMessageRoleUser),
		responses.ResponseInputItemParamOfFunctionCall(`{}`, "call_1", "f"),
	}})
	require.NoError(t, err)
	require.Len(t, added.Data, 2)
	require.Equal(t, "message", added.Data[0].Type)
	require.Equal(t, "function_call", added.Data[1].Type)
	require.Equal(t, "call_1", added.Data[1].CallID)
	require.Equal(t, added.Data[0].ID, added.FirstID)

	page, err := c.Conversations.Items.List(ctx, conv.ID, conversations.ItemListParams{})
	require.NoError(t, err)
	var types []string
	for _, it := range page.Data {
		types = append(types, it.Type+":"+it.Role)
	}
	require.Equal(t, []string{"function_call:", "message:user", "message:user", "message:system"}, types, "newest first by default")

	asc, err := c.Conversations.Items.List(ctx, conv.ID, conversations.ItemListParams{Order: conversations.ItemListParamsOrderAsc,
		Limit: oai.Int(2), After: oai.String(page.Data[3].ID)})
	require.NoError(t, err)
	require.Len(t, asc.Data, 2)
	require.Equal(t, page.Data[2].ID, asc.Data[0].ID)
	require.True(t, asc.HasMore)

	item, err := c.Conversations.Items.Get(ctx, conv.ID, page.Data[0].ID, conversations.ItemGetParams{})
	require.NoError(t, err)
	require.Equal(t, "f", item.Name)

	after, err := c.Conversations.Items.Delete(ctx, conv.ID, page.Data[0].ID)
	require.NoError(t, err)
	require.Equal(t, conv.ID, after.ID)
	_, err = c.Conversations.Items.Get(ctx, conv.ID, page.Data[0].ID, conversations.ItemGetParams{})
	requireAPIError(t, err, 404, "not_found")

	del, err := c.Conversations.Delete(ctx, conv.ID)
	require.NoError(t, err)
	require.True(t, del.Deleted)
	require.Equal(t, "conversation.deleted", string(del.Object))
	_, err = c.Conversations.Get(ctx, conv.ID)
	requireAPIError(t, err, 404, "not_found")
}

func TestConversationResponses(t *testing.T) {
	env := newToolEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	conv, err := c.Conversations.New(ctx, conversations.ConversationNewParams{Items: []responses.ResponseInputItemUnionParam{
		responses.ResponseInputItemParamOfMessage("My name is Ada.", responses.EasyInputMessageRoleUser),
	}})
	require.NoError(t, err)
	inConv := responses.ResponseNewParamsConversationUnion{OfString: oai.String(conv.ID)}

	first, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Conversation: inConv, Input: stringInput("Hi")})
	require.NoError(t, err)
	require.Equal(t, conv.ID, first.Conversation.ID)
	call := env.eng.last(t)
	require.Equal(t, []string{"user: My name is Ada.", "user: Hi"}, sentMessages(call))
	require.Equal(t, conv.ID, call.Header.Get(openai.HeaderSession), "a conversation is the session")

	// A function call round trip inside the conversation, streamed.
	evs := collect(t, c, responses.ResponseNewParams{Model: "m", Conversation: inConv, Input: stringInput("Paris"),
		Tools: []responses.ToolUnionParam{weatherTool}})
	final := evs[len(evs)-1].Response
	require.Equal(t, "function_call", final.Output[0].Type)
	third, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Conversation: inConv,
		Tools: []responses.ToolUnionParam{weatherTool},
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{CallID: oai.String(final.Output[0].CallID),
				Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: oai.String("sunny")}}},
		}}})
	require.NoError(t, err)
	require.Equal(t, "Result: sunny", third.OutputText())

	page, err := c.Conversations.Items.List(ctx, conv.ID, conversations.ItemListParams{Order: conversations.ItemListParamsOrderAsc})
	require.NoError(t, err)
	var got []string
	for _, it := range page.Data {
		got = append(got, it.Type)
	}
	require.Equal(t, []string{"message", "message", "message", "message", "function_call", "function_call_output", "message"}, got,
		"each response appends its input and output")
	require.Equal(t, first.Output[0].ID, page.Data[2].ID)

	t.Run("another owner's conversation is not found", func(t *testing.T) {
		_, err := env.client("sk-bob").Responses.New(ctx, responses.ResponseNewParams{Model: "m", Conversation: inConv, Input: stringInput("x")})
		apiErr := requireAPIError(t, err, 404, "not_found")
		require.Equal(t, "conversation", apiErr.Param)
	})
	t.Run("a repeated item id is refused", func(t *testing.T) {
		_, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Conversation: inConv,
			Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
				{OfInputMessage: &responses.ResponseInputItemMessageParam{Role: "user", Content: responses.ResponseInputMessageContentListParam{
					responses.ResponseInputContentParamOfInputText("again")}}},
			}}})
		require.NoError(t, err)
		status, _, body := env.do(t, "POST", "/v1/responses", "sk-alice",
			`{"model":"m","conversation":"`+conv.ID+`","input":[{"type":"message","id":"`+page.Data[1].ID+`","role":"user","content":"x"}]}`)
		require.Equal(t, 400, status, string(body))
		require.Equal(t, "input[0].id", envelope(t, body)["param"])
	})
}

func TestConversationOwnershipAndValidation(t *testing.T) {
	env := newTestEnv(t)
	ctx := t.Context()
	conv, err := env.client("sk-alice").Conversations.New(ctx, conversations.ConversationNewParams{Items: []responses.ResponseInputItemUnionParam{
		responses.ResponseInputItemParamOfMessage("hi", responses.EasyInputMessageRoleUser)}})
	require.NoError(t, err)
	items, err := env.client("sk-alice").Conversations.Items.List(ctx, conv.ID, conversations.ItemListParams{})
	require.NoError(t, err)
	item := items.Data[0].ID
	base := "/v1/conversations/" + conv.ID

	// Every route, with another key: 404, the same answer as an unknown id.
	for _, r := range []struct{ method, path, body string }{
		{"GET", base, ""},
		{"POST", base, `{"metadata":{}}`},
		{"DELETE", base, ""},
		{"GET", base + "/items", ""},
		{"POST", base + "/items", `{"items":[{"role":"user","content":"x"}]}`},
		{"GET", base + "/items/" + item, ""},
		{"DELETE", base + "/items/" + item, ""},
	} {
		status, _, body := env.do(t, r.method, r.path, "sk-bob", r.body)
		require.Equal(t, http.StatusNotFound, status, "%s %s: %s", r.method, r.path, body)
		require.Contains(t, envelope(t, body)["message"], conv.ID)
		status, _, body = env.do(t, r.method, r.path, "", r.body)
		require.Equal(t, http.StatusUnauthorized, status, "%s %s without a key: %s", r.method, r.path, body)
	}

	for _, tc := range []struct {
		name, method, path, body string
		param                    any
		code                     string
	}{
		{"create: unknown field", "POST", "/v1/conversations", `{"itemz":[]}`, "itemz", codeUnknownParameter},
		{"create: bad json", "POST", "/v1/conversations", `{`, nil, openai.CodeInvalidJSON},
		{"create: items type", "POST", "/v1/conversations", `{"items":{}}`, "items", codeInvalidType},
		{"create: too many items", "POST", "/v1/conversations", `{"items":[` + strings.Repeat(`{"role":"user","content":"x"},`, 20) + `{"role":"user","content":"x"}]}`, "items", codeInvalidValue},
		{"create: bad item", "POST", "/v1/conversations", `{"items":[{"role":"robot","content":"x"}]}`, "items[0].role", codeInvalidValue},
		{"create: metadata", "POST", "/v1/conversations", `{"metadata":{"k":1}}`, "metadata.k", codeInvalidType},
		{"update: no metadata", "POST", base, `{}`, "metadata", openai.CodeMissingParam},
		{"items: empty", "POST", base + "/items", `{"items":[]}`, "items", "empty_array"},
		{"items: missing", "POST", base + "/items", `{}`, "items", openai.CodeMissingParam},
		{"items: duplicate id", "POST", base + "/items", `{"items":[{"type":"message","id":"` + item + `","role":"user","content":"x"}]}`, "items", codeInvalidValue},
		{"list: limit", "GET", base + "/items?limit=0", "", "limit", codeInvalidValue},
		{"list: order", "GET", base + "/items?order=up", "", "order", codeInvalidValue},
		{"list: after", "GET", base + "/items?after=msg_nope", "", "after", codeInvalidValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := env.do(t, tc.method, tc.path, "sk-alice", tc.body)
			require.Equal(t, 400, status, string(body))
			e := envelope(t, body)
			require.Equal(t, tc.param, e["param"])
			require.Equal(t, tc.code, e["code"])
		})
	}
}
