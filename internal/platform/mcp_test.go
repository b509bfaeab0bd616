package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
)

// mcpTestServer is a real MCP server (the go-sdk's server behind its streamable HTTP handler)
// with two tools: weather (read-only, {"city"}) and write_note. Its tools/call answers can be
// made to misbehave: "hang" never answers, "garbage" answers 200 with a body that is not
// JSON-RPC, "drop" closes the connection. The city "boom" makes weather fail with isError.
type mcpTestServer struct {
	srv *httptest.Server

	mu      sync.Mutex
	mode    string
	headers []http.Header
	calls   int
	lists   int
}

type weatherIn struct {
	City string `json:"city"`
}

func newMCPTestServer(t *testing.T) *mcpTestServer {
	s := mcp.NewServer(&mcp.Implementation{Name: "weather", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "weather", Description: "Current weather of a city.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(_ context.Context, _ *mcp.CallToolRequest, in weatherIn) (*mcp.CallToolResult, any, error) {
			if in.City == "boom" {
				return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "no such city"}}}, nil, nil
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sunny in " + in.City}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "write_note", Description: "Writes a note."},
		func(context.Context, *mcp.CallToolRequest, weatherIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "written"}}}, nil, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	m := &mcpTestServer{}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		m.mu.Lock()
		m.headers = append(m.headers, r.Header.Clone())
		mode := m.mode
		isCall := bytes.Contains(body, []byte(`"tools/call"`))
		if isCall {
			m.calls++
		}
		if bytes.Contains(body, []byte(`"tools/list"`)) {
			m.lists++
		}
		m.mu.Unlock()
		if isCall || mode == "garbage-all" {
			switch mode {
			case "hang":
				<-r.Context().Done()
				return
			case "garbage", "garbage-all":
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`<html>not json-rpc</html>`))
				return
			case "drop":
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *mcpTestServer) setMode(mode string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mode = mode
}

func (m *mcpTestServer) callCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

func mcpTool(url string, approval string, allowed ...string) responses.ToolUnionParam {
	tool := &responses.ToolMcpParam{ServerLabel: "wx", ServerURL: oai.String(url),
		Headers: map[string]string{"X-Tenant-Token": "secret-1"}}
	if approval != "" {
		tool.RequireApproval = responses.ToolMcpRequireApprovalUnionParam{OfMcpToolApprovalSetting: oai.String(approval)}
	}
	if len(allowed) > 0 {
		tool.AllowedTools = responses.ToolMcpAllowedToolsUnionParam{OfMcpAllowedTools: allowed}
	}
	return responses.ToolUnionParam{OfMcp: tool}
}

func TestMCPToolCall(t *testing.T) {
	srv := newMCPTestServer(t) // before the platform: its cleanup runs after the platform's Close
	env := newToolEnv(t)
	c := env.client("sk-alice")

	tool := mcpTool(srv.srv.URL, "never")
	tool.OfMcp.Authorization = oai.String("oauth-token-1")
	res, err := c.Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("Paris"),
		Tools: []responses.ToolUnionParam{tool}, ParallelToolCalls: oai.Bool(false)})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCompleted, res.Status)
	require.Len(t, res.Output, 3, "mcp_list_tools, mcp_call, message")

	list := res.Output[0].AsMcpListTools()
	require.Equal(t, "mcp_list_tools", res.Output[0].Type)
	require.Equal(t, "wx", list.ServerLabel)
	require.Empty(t, list.Error)
	require.Len(t, list.Tools, 2)
	require.Equal(t, "weather", list.Tools[0].Name)
	require.Equal(t, "Current weather of a city.", list.Tools[0].Description)
	require.NotNil(t, list.Tools[0].InputSchema)

	call := res.Output[1].AsMcpCall()
	require.Equal(t, "mcp_call", res.Output[1].Type)
	require.True(t, strings.HasPrefix(call.ID, "mcp_"), call.ID)
	require.Equal(t, "weather", call.Name)
	require.Equal(t, "wx", call.ServerLabel)
	require.JSONEq(t, `{"city":"Paris"}`, call.Arguments)
	require.Equal(t, "sunny in Paris", call.Output)
	require.Equal(t, "completed", call.Status)
	require.False(t, call.JSON.Error.Valid() && call.Error.Type != "", "no error")
	require.Equal(t, "Result: sunny in Paris", res.OutputText(), "the model got the tool's result")

	// The tool echo carries no secrets; the server got the headers on every request.
	require.Len(t, res.Tools, 1)
	require.Equal(t, "mcp", string(res.Tools[0].Type))
	require.NotContains(t, res.Tools[0].RawJSON(), "secret-1")
	require.NotContains(t, res.Tools[0].RawJSON(), "oauth-token-1")
	srv.mu.Lock()
	require.NotEmpty(t, srv.headers)
	for _, h := range srv.headers {
		require.Equal(t, "secret-1", h.Get("X-Tenant-Token"))
		require.Equal(t, "Bearer oauth-token-1", h.Get("Authorization"), "authorization is sent as a Bearer token")
	}
	srv.mu.Unlock()

	// What the engine was offered: the MCP tools as functions, with their input schemas.
	calls := env.eng.recorded()
	require.Len(t, calls, 2)
	for _, call := range calls {
		require.Equal(t, res.ID, call.Header.Get("X-Strata-Session"), "both calls of the loop carry the session")
	}
	var tools []chatTool
	require.NoError(t, json.Unmarshal(sentBody(t, calls[0])["tools"], &tools))
	require.Len(t, tools, 2)
	require.Equal(t, "weather", tools[0].Function.Name)
	require.Contains(t, string(tools[0].Function.Parameters), `"city"`)

	require.Equal(t, 1.0, testutil.ToFloat64(env.p.mcpRequests.WithLabelValues("list_tools", "ok")))
	require.Equal(t, 1.0, testutil.ToFloat64(env.p.mcpRequests.WithLabelValues("call_tool", "ok")))

	// Stored: GET answers the same output.
	got, err := c.Responses.Get(t.Context(), res.ID, responses.ResponseGetParams{})
	require.NoError(t, err)
	require.Equal(t, "sunny in Paris", got.Output[1].AsMcpCall().Output)
	require.NotContains(t, got.RawJSON(), "secret-1", "headers are not stored")
	require.NotContains(t, got.RawJSON(), "oauth-token-1")
}

func TestMCPAllowedTools(t *testing.T) {
	srv := newMCPTestServer(t) // before the platform: its cleanup runs after the platform's Close
	env := newToolEnv(t)
	c := env.client("sk-alice")
	res, err := c.Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("Oslo"),
		Tools: []responses.ToolUnionParam{mcpTool(srv.srv.URL, "never", "write_note")}})
	require.NoError(t, err)
	list := res.Output[0].AsMcpListTools()
	require.Len(t, list.Tools, 1)
	require.Equal(t, "write_note", list.Tools[0].Name)
	require.Equal(t, "write_note", res.Output[1].AsMcpCall().Name)
	require.Equal(t, "Result: written", res.OutputText())
}

func TestMCPStream(t *testing.T) {
	srv := newMCPTestServer(t) // before the platform: its cleanup runs after the platform's Close
	env := newToolEnv(t)
	c := env.client("sk-alice")
	stream := c.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("Rome"),
		Tools: []responses.ToolUnionParam{mcpTool(srv.srv.URL, "never")}, ParallelToolCalls: oai.Bool(false)})
	var types []string
	var seq int64
	var final responses.Response
	for stream.Next() {
		ev := stream.Current()
		require.Equal(t, seq, ev.SequenceNumber, "consecutive sequence numbers")
		seq++
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.mcp_call_arguments.delta":
			require.JSONEq(t, `{"city":"Rome"}`, ev.Delta)
		case "response.mcp_call_arguments.done":
			require.JSONEq(t, `{"city":"Rome"}`, ev.Arguments)
		case "response.completed":
			final = ev.Response
		}
	}
	require.NoError(t, stream.Err())
	require.Equal(t, []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed", "response.output_item.done",
		"response.output_item.added", "response.mcp_call.in_progress", "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
		"response.mcp_call.completed", "response.output_item.done",
		"response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done",
		"response.completed"}, types)
	require.Len(t, final.Output, 3)
	require.Equal(t, "sunny in Rome", final.Output[1].AsMcpCall().Output)
}

func TestMCPApproval(t *testing.T) {
	srv := newMCPTestServer(t) // before the platform: its cleanup runs after the platform's Close
	env := newToolEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()

	// require_approval defaults to "always", as OpenAI's: the call waits for the client.
	first, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("Lima"),
		Tools: []responses.ToolUnionParam{mcpTool(srv.srv.URL, "")}, ParallelToolCalls: oai.Bool(false)})
	require.NoError(t, err)
	require.Equal(t, responses.ResponseStatusCompleted, first.Status)
	require.Len(t, first.Output, 2)
	req := first.Output[1].AsMcpApprovalRequest()
	require.Equal(t, "mcp_approval_request", first.Output[1].Type)
	require.True(t, strings.HasPrefix(req.ID, "mcpr_"))
	require.Equal(t, "weather", req.Name)
	require.Equal(t, "wx", req.ServerLabel)
	require.JSONEq(t, `{"city":"Lima"}`, req.Arguments)
	require.Zero(t, srv.callCount(), "nothing ran before the approval")

	approve := func(prev, id string, ok bool) *responses.Response {
		res, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", PreviousResponseID: oai.String(prev),
			Tools: []responses.ToolUnionParam{mcpTool(srv.srv.URL, "")},
			Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
				{OfMcpApprovalResponse: &responses.ResponseInputItemMcpApprovalResponseParam{ApprovalRequestID: id, Approve: ok}},
			}}})
		require.NoError(t, err)
		return res
	}
	second := approve(first.ID, req.ID, true)
	require.Equal(t, responses.ResponseStatusCompleted, second.Status)
	require.Len(t, second.Output, 3, "mcp_list_tools, the approved mcp_call, message")
	call := second.Output[1].AsMcpCall()
	require.Equal(t, req.ID, call.ApprovalRequestID)
	require.Equal(t, "sunny in Lima", call.Output)
	require.Equal(t, "Result: sunny in Lima", second.OutputText())
	require.Equal(t, 1, srv.callCount())

	// A declined call does not run; the model is told.
	third := approve(first.ID, req.ID, false)
	require.Len(t, third.Output, 2, "mcp_list_tools, message")
	require.Equal(t, "Result: The user declined this call; it did not run.", third.OutputText())
	require.Equal(t, 1, srv.callCount())

	// An unknown approval request is a 400.
	_, err = c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", PreviousResponseID: oai.String(first.ID),
		Tools: []responses.ToolUnionParam{mcpTool(srv.srv.URL, "")},
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			{OfMcpApprovalResponse: &responses.ResponseInputItemMcpApprovalResponseParam{ApprovalRequestID: "mcpr_nope", Approve: true}},
		}}})
	requireAPIError(t, err, 400, codeInvalidValue)

	// The approval response is an input item of the chain.
	status, _, body := env.do(t, "GET", "/v1/responses/"+second.ID+"/input_items?order=desc&limit=1", "sk-alice", "")
	require.Equal(t, 200, status)
	var page struct {
		Data []mcpApprovalResponse `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &page))
	require.Len(t, page.Data, 1)
	require.Equal(t, itemMCPApprovalResponse, page.Data[0].Type)
	require.Equal(t, req.ID, page.Data[0].ApprovalRequestID)
	require.True(t, page.Data[0].Approve)
}

// TestMCPBadServers: a server that is down, hangs, answers garbage or fails the tool never
// fails the response: the item carries OpenAI's error shape, the model reads the error in its
// next turn, and a stream stays well-formed.
func TestMCPBadServers(t *testing.T) {
	down := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr + "/mcp"
	}()
	cases := []struct {
		name      string
		mode      string // of the test server; "" with url set
		url       string
		city      string
		listErr   string // substring of mcp_list_tools.error; "" when the list works
		errType   string // mcp_call.error.type
		errCode   int64
		modelSees string
		op, count string // the metric counted: op and outcome
	}{
		{name: "down", url: down, listErr: "Error retrieving tool list from MCP server: 'wx'", modelSees: "You said: Paris", op: "list_tools", count: "unreachable"},
		{name: "garbage from the start", mode: "garbage-all", listErr: "Error retrieving tool list", modelSees: "You said: Paris", op: "list_tools", count: "unreachable"},
		{name: "hangs on the call", mode: "hang", errType: "http_error", errCode: 504, modelSees: "Result: Error: the MCP server 'wx' did not answer tools/call in time", op: "call_tool", count: "timeout"},
		{name: "garbage on the call", mode: "garbage", errType: "http_error", errCode: 502, modelSees: "Result: Error: the MCP server 'wx' could not be reached", op: "call_tool", count: "unreachable"},
		{name: "drops the call", mode: "drop", errType: "http_error", errCode: 502, modelSees: "Result: Error: the MCP server 'wx' could not be reached", op: "call_tool", count: "unreachable"},
		{name: "tool error", city: "boom", errType: "mcp_tool_execution_error", modelSees: "Result: Error: no such city", op: "call_tool", count: "tool_error"},
	}
	for _, tc := range cases {
		for _, stream := range []bool{false, true} {
			name := tc.name
			if stream {
				name += " stream"
			}
			t.Run(name, func(t *testing.T) {
				url := tc.url
				if url == "" {
					srv := newMCPTestServer(t) // before the platform: closed after its sessions
					srv.setMode(tc.mode)
					url = srv.srv.URL
				}
				env := newToolEnvConfig(t, config.Platform{ToolTimeout: config.Duration(300 * time.Millisecond),
					MCPListTimeout: config.Duration(2 * time.Second)})
				city := tc.city
				if city == "" {
					city = "Paris"
				}
				c := env.client("sk-alice")
				params := responses.ResponseNewParams{Model: "m", Input: stringInput(city),
					Tools: []responses.ToolUnionParam{mcpTool(url, "never")}, ParallelToolCalls: oai.Bool(false)}
				var res *responses.Response
				if stream {
					s := c.Responses.NewStreaming(t.Context(), params)
					var seq int64
					var last string
					for s.Next() {
						ev := s.Current()
						require.Equal(t, seq, ev.SequenceNumber)
						seq++
						last = ev.Type
						if ev.Type == "response.completed" {
							r := ev.Response
							res = &r
						}
					}
					require.NoError(t, s.Err())
					require.Equal(t, "response.completed", last, "the stream ends well-formed")
				} else {
					var err error
					res, err = c.Responses.New(t.Context(), params)
					require.NoError(t, err)
				}
				require.NotNil(t, res)
				require.Equal(t, responses.ResponseStatusCompleted, res.Status)
				list := res.Output[0].AsMcpListTools()
				if tc.listErr != "" {
					require.Contains(t, list.Error, tc.listErr)
					require.Len(t, res.Output, 2, "mcp_list_tools with its error, then the model's answer without the tools")
				} else {
					require.Empty(t, list.Error)
					call := res.Output[1].AsMcpCall()
					require.Equal(t, "failed", call.Status)
					require.Empty(t, call.Output)
					require.Equal(t, tc.errType, call.Error.Type, "%s", call.RawJSON())
					require.Equal(t, tc.errCode, call.Error.Code)
				}
				require.True(t, strings.HasPrefix(res.OutputText(), tc.modelSees), "model saw: %s", res.OutputText())
				require.Equal(t, 1.0, testutil.ToFloat64(env.p.mcpRequests.WithLabelValues(tc.op, tc.count)))
			})
		}
	}
}

func TestMCPToolValidation(t *testing.T) {
	env := newToolEnvConfig(t, config.Platform{MCPAllowedURLs: []string{"https://tools.example/"}})
	cases := []struct {
		tool  string
		param string
		code  string
	}{
		{`{"type":"mcp","server_url":"https://tools.example/mcp"}`, "tools[0].server_label", "missing_required_parameter"},
		{`{"type":"mcp","server_label":"wx"}`, "tools[0].server_url", "missing_required_parameter"},
		{`{"type":"mcp","server_label":"w x","server_url":"https://tools.example/mcp"}`, "tools[0].server_label", codeInvalidValue},
		{`{"type":"mcp","server_label":"wx","server_url":"ftp://tools.example/mcp"}`, "tools[0].server_url", codeInvalidValue},
		{`{"type":"mcp","server_label":"wx","server_url":"https://tools.example/mcp","bogus":1}`, "tools[0].bogus", codeUnknownParameter},
		{`{"type":"mcp","server_label":"wx","server_url":"https://tools.example/mcp","require_approval":"sometimes"}`, "tools[0].require_approval", codeInvalidValue},
		{`{"type":"mcp","server_label":"wx","server_url":"https://tools.example/mcp","headers":{"a":1}}`, "tools[0].headers", codeInvalidType},
		{`{"type":"mcp","server_label":"wx","server_url":"https://tools.example/mcp","connector_id":"connector_gmail"}`, "tools[0].connector_id", "unsupported_parameter"},
		{`{"type":"mcp","server_label":"wx","server_url":"https://tools.example/a"},{"type":"mcp","server_label":"wx","server_url":"https://tools.example/b"}`, "tools[1].server_label", codeInvalidValue},
		{`{"type":"mcp","server_label":"wx","server_url":"http://169.254.169.254/"}`, "tools", codeInvalidValue},
	}
	for _, tc := range cases {
		t.Run(tc.param, func(t *testing.T) {
			status, _, body := env.do(t, "POST", "/v1/responses", "sk-alice", `{"model":"m","input":"hi","tools":[`+tc.tool+`]}`)
			require.Equal(t, 400, status, "%s", body)
			e := envelope(t, body)
			require.Equal(t, tc.param, e["param"], "%s", body)
			require.Equal(t, tc.code, e["code"], "%s", body)
		})
	}
}

func newToolEnvConfig(t *testing.T, cfg config.Platform) *testEnv {
	env := newTestEnvConfig(t, cfg)
	env.eng.setHandler((&toolEngine{}).ServeHTTP)
	return env
}

// TestMCPApprovalInConversation: the approval round trip through a conversation instead of a
// previous_response_id chain, and tool_choice "required" with only an mcp tool.
func TestMCPApprovalInConversation(t *testing.T) {
	srv := newMCPTestServer(t) // before the platform: its cleanup runs after the platform's Close
	env := newToolEnv(t)
	c := env.client("sk-alice")
	ctx := t.Context()
	status, _, body := env.do(t, "POST", "/v1/conversations", "sk-alice", `{}`)
	require.Equal(t, 200, status)
	conv := idOf(t, body)
	params := responses.ResponseNewParams{Model: "m", Input: stringInput("Quito"), ParallelToolCalls: oai.Bool(false),
		Conversation: responses.ResponseNewParamsConversationUnion{OfString: oai.String(conv)},
		ToolChoice:   responses.ResponseNewParamsToolChoiceUnion{OfToolChoiceMode: oai.Opt(responses.ToolChoiceOptionsRequired)},
		Tools:        []responses.ToolUnionParam{mcpTool(srv.srv.URL, "", "weather")}}
	first, err := c.Responses.New(ctx, params)
	require.NoError(t, err)
	req := first.Output[1].AsMcpApprovalRequest()
	require.Equal(t, "mcp_approval_request", first.Output[1].Type)

	params.ToolChoice = responses.ResponseNewParamsToolChoiceUnion{}
	params.Input = responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
		{OfMcpApprovalResponse: &responses.ResponseInputItemMcpApprovalResponseParam{ApprovalRequestID: req.ID, Approve: true}}}}
	second, err := c.Responses.New(ctx, params)
	require.NoError(t, err)
	require.Equal(t, "sunny in Quito", second.Output[1].AsMcpCall().Output)
	require.Equal(t, req.ID, second.Output[1].AsMcpCall().ApprovalRequestID)
	require.Equal(t, "Result: sunny in Quito", second.OutputText())

	// The conversation holds every item: the list, the request, the approval, the call.
	status, _, body = env.do(t, "GET", "/v1/conversations/"+conv+"/items?order=asc&limit=100", "sk-alice", "")
	require.Equal(t, 200, status)
	for _, typ := range []string{itemMCPListTools, itemMCPApprovalRequest, itemMCPApprovalResponse, itemMCPCall} {
		require.Contains(t, string(body), `"type":"`+typ+`"`)
	}
}

// TestMCPApprovalStream: a streamed response that ends with an approval request is well-formed.
func TestMCPApprovalStream(t *testing.T) {
	srv := newMCPTestServer(t) // before the platform: its cleanup runs after the platform's Close
	env := newToolEnv(t)
	c := env.client("sk-alice")
	s := c.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("Oslo"),
		ParallelToolCalls: oai.Bool(false), Tools: []responses.ToolUnionParam{mcpTool(srv.srv.URL, "")}})
	var types []string
	var final responses.Response
	for s.Next() {
		ev := s.Current()
		types = append(types, ev.Type)
		if ev.Type == "response.completed" {
			final = ev.Response
		}
	}
	require.NoError(t, s.Err())
	require.Equal(t, []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed", "response.output_item.done",
		"response.output_item.added", "response.output_item.done", "response.completed"}, types)
	require.Equal(t, "mcp_approval_request", final.Output[1].Type)
	require.Zero(t, srv.callCount())
}

// TestMCPListOncePerResponse: two calls in one response (parallel tool calls) share one
// session and one tools/list.
func TestMCPListOncePerResponse(t *testing.T) {
	srv := newMCPTestServer(t)
	env := newToolEnv(t)
	res, err := env.client("sk-alice").Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("Lagos"),
		Tools: []responses.ToolUnionParam{mcpTool(srv.srv.URL, "never")}})
	require.NoError(t, err)
	require.Len(t, res.Output, 4, "mcp_list_tools, two mcp_calls, message")
	require.Equal(t, "weather", res.Output[1].AsMcpCall().Name)
	require.Equal(t, "write_note", res.Output[2].AsMcpCall().Name)
	require.Equal(t, "Result: sunny in Lagos+written", res.OutputText())
	srv.mu.Lock()
	defer srv.mu.Unlock()
	require.Equal(t, 1, srv.lists)
	require.Equal(t, 2, srv.calls)
}
