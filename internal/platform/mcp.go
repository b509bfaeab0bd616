package platform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/strata-inference/strata/internal/openai"
)

// The mcp tool of /v1/responses: remote MCP servers (Model Context Protocol, streamable HTTP
// transport), run server-side with the official Go SDK (github.com/modelcontextprotocol/go-sdk).
//
// Per response, each server is connected and its tools listed once (an mcp_list_tools output
// item); its tools, filtered by allowed_tools, are offered to the model as functions. A call
// the model makes either runs at once (an mcp_call item, the result appended as a tool
// message) or, when require_approval asks for it, ends the response with an
// mcp_approval_request item; the client continues (previous_response_id or conversation) with
// an mcp_approval_response input item, and the approved call runs before the model is called
// again. A server that is down, slow (platform.mcp_list_timeout, platform.tool_timeout) or
// answers garbage never fails the response: the item carries the error and the model sees it.
//
// Wire shapes: OpenAI API reference, as encoded by openai-go v3 (responses.ToolMcpParam,
// ResponseOutputItemMcpListTools, ResponseOutputItemMcpCall with McpToolCallErrorUnion,
// ResponseOutputItemMcpApprovalRequest, ResponseInputItemMcpApprovalResponseParam,
// ResponseMcpListTools*Event, ResponseMcpCall*Event, ResponseMcpCallArguments*Event).

// Item and event types of the mcp tool.
const (
	itemMCPListTools        = "mcp_list_tools"
	itemMCPCall             = "mcp_call"
	itemMCPApprovalRequest  = "mcp_approval_request"
	itemMCPApprovalResponse = "mcp_approval_response"

	evMCPListInProgress = "response.mcp_list_tools.in_progress"
	evMCPListCompleted  = "response.mcp_list_tools.completed"
	evMCPListFailed     = "response.mcp_list_tools.failed"
	evMCPCallInProgress = "response.mcp_call.in_progress"
	evMCPCallCompleted  = "response.mcp_call.completed"
	evMCPCallFailed     = "response.mcp_call.failed"
	evMCPArgsDelta      = "response.mcp_call_arguments.delta"
	evMCPArgsDone       = "response.mcp_call_arguments.done"
)

// Bounds on what one MCP server may hand the platform.
const (
	maxMCPTools      = 128     // tools offered per server (more are dropped, with a log line)
	maxMCPListPages  = 16      // tools/list pages read per server
	maxMCPOutputText = 1 << 20 // bytes of a tool result kept (item output and model input)
)

// mcpToolConfig is a request's mcp tool, checked; it is echoed in Response.tools without
// headers and authorization (secrets are neither echoed nor stored).
type mcpToolConfig struct {
	Type              string          `json:"type"` // "mcp"
	ServerLabel       string          `json:"server_label"`
	ServerURL         string          `json:"server_url"`
	ServerDescription *string         `json:"server_description,omitempty"`
	AllowedTools      json.RawMessage `json:"allowed_tools"`
	RequireApproval   json.RawMessage `json:"require_approval"`
	Headers           json.RawMessage `json:"headers"` // always null in the echo

	headers map[string]string // sent on every HTTP request to the server
	allowed *mcpFilter        // nil: every tool
	always  *mcpFilter        // tools that need approval
	never   *mcpFilter        // tools that do not
	mode    string            // "always" or "never" for tools neither filter matches
}

// mcpFilter is McpToolFilter: tool names and/or read_only (the tool's readOnlyHint).
type mcpFilter struct {
	ToolNames []string `json:"tool_names"`
	ReadOnly  *bool    `json:"read_only"`
}

func (f *mcpFilter) matches(t *mcp.Tool) bool {
	if f == nil {
		return false
	}
	if f.ReadOnly != nil {
		ro := t.Annotations != nil && t.Annotations.ReadOnlyHint
		if ro != *f.ReadOnly {
			return false
		}
		if len(f.ToolNames) == 0 {
			return true
		}
	}
	return slices.Contains(f.ToolNames, t.Name)
}

// needsApproval applies require_approval to tool: the always filter, then the never filter,
// then the mode ("always" by default, as OpenAI asks for approval unless told otherwise).
func (c *mcpToolConfig) needsApproval(t *mcp.Tool) bool {
	switch {
	case c.always.matches(t):
		return true
	case c.never.matches(t):
		return false
	}
	return c.mode != "never"
}

// validLabel reports whether s is a usable server_label: ^[a-zA-Z0-9_-]{1,64}$, like a
// function name, since it may prefix one.
func validLabel(s string) bool { return validFunctionName(s) }

// parseMCPTool checks an mcp tool: server_label (required) and server_url (required, http or
// https, within allowedURLs when set), headers (string values), authorization (sent as a
// Bearer token), allowed_tools (names, or {tool_names, read_only}), require_approval
// ("always", "never", or {always: filter, never: filter}), server_description. connector_id
// and tunnel_id (OpenAI-hosted connectors) are unsupported.
func parseMCPTool(param string, fields map[string]json.RawMessage, allowedURLs []string) (*mcpToolConfig, error) {
	c := &mcpToolConfig{Type: "mcp", AllowedTools: json.RawMessage("null"), RequireApproval: json.RawMessage(`"always"`),
		Headers: json.RawMessage("null"), mode: "always"}
	for k, v := range fields {
		var err error
		switch k {
		case "type":
		case "server_label", "server_url", "authorization", "server_description":
			var s *string
			if s, err = str(param+"."+k, v); err != nil || s == nil {
				break
			}
			switch k {
			case "server_label":
				c.ServerLabel = *s
			case "server_url":
				c.ServerURL = *s
			case "authorization":
				if *s != "" {
					if c.headers == nil {
						c.headers = map[string]string{}
					}
					c.headers["Authorization"] = "Bearer " + *s
				}
			default:
				c.ServerDescription = s
			}
		case "headers":
			if isNull(v) {
				break
			}
			var h map[string]string
			if json.Unmarshal(v, &h) != nil {
				return nil, invalidType(param+".headers", "an object of strings", v)
			}
			if c.headers == nil {
				c.headers = map[string]string{}
			}
			for hk, hv := range h {
				c.headers[hk] = hv
			}
		case "allowed_tools":
			if isNull(v) {
				break
			}
			var names []string
			if json.Unmarshal(v, &names) == nil {
				c.allowed = &mcpFilter{ToolNames: names}
			} else {
				f, ferr := parseMCPFilter(param+".allowed_tools", v)
				if ferr != nil {
					return nil, ferr
				}
				c.allowed = f
			}
			c.AllowedTools = v
		case "require_approval":
			if isNull(v) {
				break
			}
			var mode string
			if json.Unmarshal(v, &mode) == nil {
				if mode != "always" && mode != "never" {
					return nil, invalidValue(param+".require_approval", mode, "'always' and 'never'")
				}
				c.mode = mode
			} else {
				var obj map[string]json.RawMessage
				if json.Unmarshal(v, &obj) != nil || obj == nil {
					return nil, invalidType(param+".require_approval", "a string or an object", v)
				}
				for ok, ov := range obj {
					if isNull(ov) {
						continue
					}
					f, ferr := parseMCPFilter(param+".require_approval."+ok, ov)
					if ferr != nil {
						return nil, ferr
					}
					switch ok {
					case "always":
						c.always = f
					case "never":
						c.never = f
					default:
						return nil, openai.InvalidRequest(param+".require_approval."+ok, codeUnknownParameter, "Unknown parameter: '%s.require_approval.%s'.", param, ok)
					}
				}
			}
			c.RequireApproval = v
		case "defer_loading":
			var b *bool
			if b, err = boolean(param+"."+k, v); err == nil && b != nil && *b {
				return nil, unsupported(param+"."+k, "Deferred loading of MCP tools is not supported yet.")
			}
		case "connector_id", "tunnel_id", "allowed_callers":
			if !isNull(v) {
				return nil, unsupported(param+"."+k, fmt.Sprintf("'%s' of mcp tools is not supported yet; give a server_url.", k))
			}
		default:
			return nil, openai.InvalidRequest(param+"."+k, codeUnknownParameter, "Unknown parameter: '%s.%s'.", param, k)
		}
		if err != nil {
			return nil, err
		}
	}
	if c.ServerLabel == "" {
		return nil, openai.MissingParam(param + ".server_label")
	}
	if !validLabel(c.ServerLabel) {
		return nil, openai.InvalidRequest(param+".server_label", codeInvalidValue, "Invalid '%s.server_label': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", param)
	}
	if c.ServerURL == "" {
		return nil, openai.MissingParam(param + ".server_url")
	}
	if !(strings.HasPrefix(c.ServerURL, "http://") || strings.HasPrefix(c.ServerURL, "https://")) {
		return nil, openai.InvalidRequest(param+".server_url", codeInvalidValue, "Invalid '%s.server_url': expected an http or https URL.", param)
	}
	if len(allowedURLs) > 0 && !slices.ContainsFunc(allowedURLs, func(p string) bool { return strings.HasPrefix(c.ServerURL, p) }) {
		return nil, openai.InvalidRequest(param+".server_url", codeInvalidValue, "Invalid '%s.server_url': this server does not allow MCP servers at that URL.", param)
	}
	return c, nil
}

func parseMCPFilter(param string, raw json.RawMessage) (*mcpFilter, error) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil || fields == nil {
		return nil, invalidType(param, "an object", raw)
	}
	f := &mcpFilter{}
	for k, v := range fields {
		switch k {
		case "tool_names":
			if !isNull(v) && json.Unmarshal(v, &f.ToolNames) != nil {
				return nil, invalidType(param+".tool_names", "an array of strings", v)
			}
		case "read_only":
			b, err := boolean(param+".read_only", v)
			if err != nil {
				return nil, err
			}
			f.ReadOnly = b
		default:
			return nil, openai.InvalidRequest(param+"."+k, codeUnknownParameter, "Unknown parameter: '%s.%s'.", param, k)
		}
	}
	return f, nil
}

// Output items of the mcp tool.

// mcpListTools is an mcp_list_tools item (ResponseOutputItemMcpListTools).
type mcpListTools struct {
	Type        string          `json:"type"`
	ID          string          `json:"id"`
	ServerLabel string          `json:"server_label"`
	Tools       []mcpListedTool `json:"tools"`
	Error       *string         `json:"error"`
}

func (m *mcpListTools) itemID() string { return m.ID }

// mcpListedTool is one tool of an mcp_list_tools item (ResponseOutputItemMcpListToolsTool).
type mcpListedTool struct {
	Name        string          `json:"name"`
	Description *string         `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
	Annotations json.RawMessage `json:"annotations"`
}

// mcpCall is an mcp_call item (ResponseOutputItemMcpCall). Error is null or one of OpenAI's
// McpToolCallError objects: {"type":"mcp_protocol_error","code","message"} for a JSON-RPC
// error of the server, {"type":"mcp_tool_execution_error","content"} for a result with
// isError, {"type":"http_error","code","message"} when the server could not be reached, timed
// out (504) or did not speak MCP (502).
type mcpCall struct {
	Type              string        `json:"type"`
	ID                string        `json:"id"`
	Name              string        `json:"name"`
	ServerLabel       string        `json:"server_label"`
	Arguments         string        `json:"arguments"`
	Output            *string       `json:"output"`
	Error             *mcpCallError `json:"error"`
	ApprovalRequestID *string       `json:"approval_request_id"`
	Status            string        `json:"status"` // in_progress, completed, failed
}

func (m *mcpCall) itemID() string { return m.ID }

// mcpCallError is McpToolCallErrorUnion.
type mcpCallError struct {
	Type    string          `json:"type"` // mcp_protocol_error, mcp_tool_execution_error, http_error
	Code    *int64          `json:"code,omitempty"`
	Message *string         `json:"message,omitempty"`
	Content json.RawMessage `json:"content,omitempty"`
}

// mcpApprovalRequest is an mcp_approval_request item (ResponseOutputItemMcpApprovalRequest).
type mcpApprovalRequest struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	Name        string `json:"name"`
	ServerLabel string `json:"server_label"`
	Arguments   string `json:"arguments"`
}

func (m *mcpApprovalRequest) itemID() string { return m.ID }

// mcpApprovalResponse is an mcp_approval_response item as input item lists render it.
type mcpApprovalResponse struct {
	Type              string  `json:"type"`
	ID                string  `json:"id"`
	ApprovalRequestID string  `json:"approval_request_id"`
	Approve           bool    `json:"approve"`
	Reason            *string `json:"reason"`
}

var (
	_ outputItem = (*mcpListTools)(nil)
	_ outputItem = (*mcpCall)(nil)
	_ outputItem = (*mcpApprovalRequest)(nil)
)

// mcpArgsDoneEvent is response.mcp_call_arguments.done.
type mcpArgsDoneEvent struct {
	Type           string `json:"type"`
	SequenceNumber int64  `json:"sequence_number"`
	ItemID         string `json:"item_id"`
	OutputIndex    int    `json:"output_index"`
	Arguments      string `json:"arguments"`
}

// The server side: sessions and tools.

// mcpServer is one mcp tool of a response: its session (open from listing to the end of the
// response) and the tools it offers.
type mcpServer struct {
	cfg   *mcpToolConfig
	sess  *mcp.ClientSession
	tr    *http.Transport
	tools []*mcp.Tool
	err   error // listing failed
}

// headerTransport adds the tool's headers to every request to the MCP server.
type headerTransport struct {
	base    http.RoundTripper
	headers map[string]string
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if len(h.headers) > 0 {
		r = r.Clone(r.Context())
		for k, v := range h.headers {
			r.Header.Set(k, v)
		}
	}
	return h.base.RoundTrip(r)
}

// connect opens a session with the server and lists its tools (all pages, filtered by
// allowed_tools), within ctx.
func (s *mcpServer) connect(ctx context.Context) error {
	// One transport per session, closed with it: no idle connection outlives the response.
	s.tr = &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 2, ResponseHeaderTimeout: 0,
		IdleConnTimeout: 30 * time.Second}
	client := mcp.NewClient(&mcp.Implementation{Name: "strata", Version: "1"}, nil)
	sess, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:             s.cfg.ServerURL,
		HTTPClient:           &http.Client{Transport: headerTransport{base: s.tr, headers: s.cfg.headers}},
		MaxRetries:           -1, // a broken server fails the call now; the model may try again
		DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		return err
	}
	s.sess = sess
	params := &mcp.ListToolsParams{}
	for range maxMCPListPages {
		res, err := sess.ListTools(ctx, params)
		if err != nil {
			return err
		}
		for _, t := range res.Tools {
			if t == nil || (s.cfg.allowed != nil && !s.cfg.allowed.matches(t)) {
				continue
			}
			s.tools = append(s.tools, t)
		}
		if res.NextCursor == "" {
			break
		}
		params = &mcp.ListToolsParams{Cursor: res.NextCursor}
	}
	if len(s.tools) > maxMCPTools {
		s.tools = s.tools[:maxMCPTools]
	}
	return nil
}

func (s *mcpServer) close() {
	if s.sess != nil {
		_ = s.sess.Close()
	}
	if s.tr != nil {
		s.tr.CloseIdleConnections()
	}
}

// listed renders the server's tools for the mcp_list_tools item.
func (s *mcpServer) listed() []mcpListedTool {
	out := make([]mcpListedTool, 0, len(s.tools))
	for _, t := range s.tools {
		lt := mcpListedTool{Name: t.Name, InputSchema: marshalOr(t.InputSchema, `{"type":"object"}`), Annotations: json.RawMessage("null")}
		if t.Description != "" {
			d := t.Description
			lt.Description = &d
		}
		if t.Annotations != nil {
			lt.Annotations = marshalOr(t.Annotations, "null")
		}
		out = append(out, lt)
	}
	return out
}

func marshalOr(v any, fallback string) json.RawMessage {
	if v == nil {
		return json.RawMessage(fallback)
	}
	b, err := json.Marshal(v)
	if err != nil || isNull(b) {
		return json.RawMessage(fallback)
	}
	return b
}

// mcpFunction is one tool of an MCP server as the model sees it: a server-side function.
type mcpFunction struct {
	p      *Platform
	srv    *mcpServer
	tool   *mcp.Tool
	fnName string // the function name offered to the model
}

var (
	_ serverTool    = (*mcpFunction)(nil)
	_ eventReporter = (*mcpFunction)(nil)
)

func (f *mcpFunction) definition() functionTool {
	ft := functionTool{Type: "function", Name: f.fnName, Parameters: marshalOr(f.tool.InputSchema, `{"type":"object"}`)}
	if ft.Parameters[0] != '{' {
		ft.Parameters = json.RawMessage(`{"type":"object"}`)
	}
	if f.tool.Description != "" {
		d := f.tool.Description
		ft.Description = &d
	}
	return ft
}

func (f *mcpFunction) pending(call chatToolCall) outputItem {
	return &mcpCall{Type: itemMCPCall, ID: newID("mcp_"), Name: f.tool.Name, ServerLabel: f.srv.cfg.ServerLabel,
		Arguments: call.Function.Arguments, Status: statusInProgress}
}

func (f *mcpFunction) startEvents(e *emitter, idx int, item outputItem) {
	c := item.(*mcpCall)
	e.send(evMCPCallInProgress, progressEvent{Type: evMCPCallInProgress, SequenceNumber: e.next(), ItemID: c.ID, OutputIndex: idx})
	e.send(evMCPArgsDelta, argsDeltaEvent{Type: evMCPArgsDelta, SequenceNumber: e.next(), ItemID: c.ID, OutputIndex: idx, Delta: c.Arguments})
	e.send(evMCPArgsDone, mcpArgsDoneEvent{Type: evMCPArgsDone, SequenceNumber: e.next(), ItemID: c.ID, OutputIndex: idx, Arguments: c.Arguments})
}

func (f *mcpFunction) doneEvents(e *emitter, idx int, done outputItem) {
	c := done.(*mcpCall)
	ev := evMCPCallCompleted
	if c.Status == statusFailed {
		ev = evMCPCallFailed
	}
	e.send(ev, progressEvent{Type: ev, SequenceNumber: e.next(), ItemID: c.ID, OutputIndex: idx})
}

// needsApproval reports whether a call of the tool waits for the client's approval.
func (f *mcpFunction) needsApproval() bool { return f.srv.cfg.needsApproval(f.tool) }

// approvalItem is the mcp_approval_request item of a call that needs approval.
func (f *mcpFunction) approvalItem(call chatToolCall) *mcpApprovalRequest {
	return &mcpApprovalRequest{Type: itemMCPApprovalRequest, ID: newID("mcpr_"), Name: f.tool.Name,
		ServerLabel: f.srv.cfg.ServerLabel, Arguments: call.Function.Arguments}
}

// run calls the tool on the server within ctx. Every failure is an mcp_call with an error
// and a text the model reads; none fails the response.
func (f *mcpFunction) run(ctx context.Context, call chatToolCall, started outputItem) (outputItem, string) {
	done := *started.(*mcpCall)
	args := strings.TrimSpace(call.Function.Arguments)
	if args == "" {
		args = "{}"
	}
	var obj map[string]any
	if json.Unmarshal([]byte(args), &obj) != nil {
		// JSON-RPC's "Invalid params": the model wrote arguments that are not a JSON object.
		return f.failed(&done, protocolError(-32602, "the arguments are not a JSON object"))
	}
	if f.srv.sess == nil {
		return f.failed(&done, httpError(http.StatusBadGateway, "the MCP server is not connected"))
	}
	res, err := f.srv.sess.CallTool(ctx, &mcp.CallToolParams{Name: f.tool.Name, Arguments: obj})
	if err != nil {
		ce := f.p.classifyMCPError(ctx, err, f.srv.cfg.ServerLabel, "tools/call")
		f.p.countMCP("call_tool", ce)
		return f.failed(&done, ce)
	}
	text := resultText(res)
	if res.IsError {
		f.p.mcpRequests.WithLabelValues("call_tool", "tool_error").Inc()
		content := marshalOr(res.Content, "[]")
		if string(content) == "null" {
			content = json.RawMessage("[]")
		}
		done.Status, done.Error = statusFailed, &mcpCallError{Type: "mcp_tool_execution_error", Content: content}
		return &done, "Error: " + text
	}
	f.p.mcpRequests.WithLabelValues("call_tool", "ok").Inc()
	done.Status, done.Output = statusCompleted, &text
	return &done, text
}

// countMCP counts an MCP request by its outcome: ok (e nil), protocol_error, timeout (http_error
// 504) or unreachable (other http_error).
func (p *Platform) countMCP(op string, e *mcpCallError) {
	outcome := "ok"
	switch {
	case e == nil:
	case e.Type == "mcp_protocol_error":
		outcome = "protocol_error"
	case e.Code != nil && *e.Code == http.StatusGatewayTimeout:
		outcome = "timeout"
	default:
		outcome = "unreachable"
	}
	p.mcpRequests.WithLabelValues(op, outcome).Inc()
}

func (f *mcpFunction) failed(done *mcpCall, e *mcpCallError) (outputItem, string) {
	done.Status, done.Error = statusFailed, e
	return done, "Error: " + *e.Message
}

func protocolError(code int64, msg string) *mcpCallError {
	return &mcpCallError{Type: "mcp_protocol_error", Code: &code, Message: &msg}
}

func httpError(code int64, msg string) *mcpCallError {
	return &mcpCallError{Type: "http_error", Code: &code, Message: &msg}
}

// classifyMCPError maps a failed MCP request to OpenAI's error shape: a JSON-RPC error of the
// server is a protocol error with its code and message; a timeout is http_error 504; anything
// else (refused connection, HTTP error status, a body that is not JSON-RPC) is http_error 502,
// its detail logged, not shown.
func (p *Platform) classifyMCPError(ctx context.Context, err error, label, op string) *mcpCallError {
	var wire *jsonrpc.Error
	switch {
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return httpError(http.StatusGatewayTimeout, fmt.Sprintf("the MCP server '%s' did not answer %s in time", label, op))
	case errors.As(err, &wire) && !sdkTransportCode(wire.Code):
		return protocolError(wire.Code, truncate(wire.Message, 1024))
	}
	p.log.Warn("mcp server failed", "server_label", label, "op", op, "err", err)
	return httpError(http.StatusBadGateway, fmt.Sprintf("the MCP server '%s' could not be reached or did not answer %s with MCP", label, op))
}

// sdkTransportCode reports whether a JSON-RPC error code is one the go-sdk's client produces
// itself for a broken transport or session (internal/jsonrpc2/wire.go: ErrUnknown -32001,
// ErrClientClosing -32003, ErrServerClosing -32004, ErrRejected -32005), not one the server
// sent.
func sdkTransportCode(code int64) bool {
	return code == -32001 || code == -32003 || code == -32004 || code == -32005
}

// resultText is the text of a tool result: its text contents joined by newlines; other
// content (images, resources) as its JSON; the structured content when there is nothing else.
func resultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		} else {
			b.Write(marshalOr(c, "null"))
		}
	}
	if b.Len() == 0 && res.StructuredContent != nil {
		b.Write(marshalOr(res.StructuredContent, ""))
	}
	return truncate(b.String(), maxMCPOutputText)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// listMCP connects to the turn's MCP servers and lists their tools, once per response, each
// within platform.mcp_list_timeout: one mcp_list_tools item per server, with the list or the
// error, and streamed as output_item.added, response.mcp_list_tools.in_progress,
// .completed | .failed, output_item.done. The listed tools join t.server under a function
// name unique in the request (the tool's name, else "<label>__<name>"). Errors: only the
// client going away.
func (p *Platform) listMCP(r *http.Request, t *turn, res *response, e *emitter) error {
	if len(t.req.MCP) == 0 {
		return nil
	}
	if e != nil {
		e.begin()
	}
	for _, cfg := range t.req.MCP {
		srv := &mcpServer{cfg: cfg}
		t.mcp = append(t.mcp, srv)
		item := &mcpListTools{Type: itemMCPListTools, ID: newID("mcpl_"), ServerLabel: cfg.ServerLabel, Tools: []mcpListedTool{}}
		idx := len(res.Output)
		res.Output = append(res.Output, item)
		e.itemAdded(idx, item)
		if e != nil {
			e.send(evMCPListInProgress, progressEvent{Type: evMCPListInProgress, SequenceNumber: e.next(), ItemID: item.ID, OutputIndex: idx})
		}
		ctx, cancel := context.WithTimeout(r.Context(), p.cfg.MCPListToolsTimeout())
		err := srv.connect(ctx)
		var ce *mcpCallError
		if err != nil {
			srv.err = err
			ce = p.classifyMCPError(ctx, err, cfg.ServerLabel, "tools/list")
			msg := fmt.Sprintf("Error retrieving tool list from MCP server: '%s'. %s", cfg.ServerLabel, *ce.Message)
			item.Error = &msg
		}
		p.countMCP("list_tools", ce)
		cancel()
		if err := r.Context().Err(); err != nil {
			return err
		}
		ev := evMCPListCompleted
		if srv.err != nil {
			ev = evMCPListFailed
		} else {
			item.Tools = srv.listed()
			for _, tool := range srv.tools {
				name := t.mcpFunctionName(cfg.ServerLabel, tool.Name)
				if name == "" {
					p.log.Warn("mcp tool name clashes with another tool; not offered", "server_label", cfg.ServerLabel, "tool", tool.Name)
					continue
				}
				t.server[name] = &mcpFunction{p: p, srv: srv, tool: tool, fnName: name}
			}
		}
		if e != nil {
			e.send(ev, progressEvent{Type: ev, SequenceNumber: e.next(), ItemID: item.ID, OutputIndex: idx})
		}
		e.itemDone(idx, item)
	}
	return nil
}

// mcpFunctionName picks the function name a tool is offered under: its name made to match
// ^[a-zA-Z0-9_-]{1,64}$, or "<label>__<name>" when that is taken; "" when both are.
func (t *turn) mcpFunctionName(label, tool string) string {
	clean := func(s string) string {
		b := []byte(s)
		for i, c := range b {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				b[i] = '_'
			}
		}
		if len(b) > 64 {
			b = b[:64]
		}
		return string(b)
	}
	taken := func(n string) bool {
		return n == "" || t.server[n] != nil || slices.ContainsFunc(t.req.Tools, func(f functionTool) bool { return f.Name == n })
	}
	for _, n := range []string{clean(tool), clean(label + "__" + tool)} {
		if !taken(n) {
			return n
		}
	}
	return ""
}

// closeMCP ends the turn's MCP sessions in the background: closing one sends the server a
// DELETE (bounded by the SDK at 5 s), which the response must not wait for. Platform.Close
// waits for them.
func (p *Platform) closeMCP(t *turn) {
	if len(t.mcp) == 0 {
		return
	}
	sessions := t.mcp
	t.mcp = nil
	p.mcpClosing.Add(1)
	go func() {
		defer p.mcpClosing.Done()
		for _, s := range sessions {
			s.close()
		}
	}()
}

// mcpApproval is an mcp_approval_response of the request, resolved against the approval
// request it answers (from the previous response or the conversation).
type mcpApproval struct {
	request mcpApprovalRequest
	approve bool
}

// resolveApprovals finds, for each mcp_approval_response input item, the mcp_approval_request
// it answers in the history. Errors: 400 when the request is unknown or its server is not
// among the request's mcp tools.
func (t *turn) resolveApprovals() error {
	requests := map[string]mcpApprovalRequest{}
	for _, raw := range t.historyItems {
		var it mcpApprovalRequest
		if json.Unmarshal(raw, &it) == nil && it.Type == itemMCPApprovalRequest {
			requests[it.ID] = it
		}
	}
	for i, in := range t.req.Input {
		if in.Type != itemMCPApprovalResponse {
			continue
		}
		param := fmt.Sprintf("input[%d].approval_request_id", i)
		req, ok := requests[in.ApprovalRequestID]
		if !ok {
			return openai.InvalidRequest(param, codeInvalidValue, "No mcp_approval_request found with id '%s'.", in.ApprovalRequestID)
		}
		if !slices.ContainsFunc(t.req.MCP, func(c *mcpToolConfig) bool { return c.ServerLabel == req.ServerLabel }) {
			return openai.InvalidRequest(param, codeInvalidValue, "The MCP server '%s' of approval request '%s' is not among the request's tools.", req.ServerLabel, req.ID)
		}
		t.approvals = append(t.approvals, mcpApproval{request: req, approve: in.Approve})
	}
	return nil
}

// approvedCalls runs the calls the client approved (and tells the model of those it did
// not), before the model is called: each approved call is an mcp_call item with its
// approval_request_id, and the conversation gets the call and its result as a tool exchange.
func (p *Platform) approvedCalls(r *http.Request, t *turn, res *response, e *emitter) error {
	for _, a := range t.approvals {
		call := chatToolCall{ID: newID("call_"), Type: "function", Function: chatFunction{Name: a.request.Name, Arguments: a.request.Arguments}}
		var fn *mcpFunction
		for _, st := range t.server {
			if m, ok := st.(*mcpFunction); ok && m.srv.cfg.ServerLabel == a.request.ServerLabel && m.tool.Name == a.request.Name {
				fn = m
				call.Function.Name = m.fnName
			}
		}
		t.convo = append(t.convo, openai.Message{Role: "assistant", ToolCalls: appendToolCall(nil, call)})
		if !a.approve {
			t.convo = append(t.convo, openai.Message{Role: "tool", ToolCallID: call.ID,
				Content: openai.TextContent("The user declined this call; it did not run.")})
			continue
		}
		reqID := a.request.ID
		item := &mcpCall{Type: itemMCPCall, ID: newID("mcp_"), Name: a.request.Name, ServerLabel: a.request.ServerLabel,
			Arguments: a.request.Arguments, ApprovalRequestID: &reqID, Status: statusInProgress}
		idx := len(res.Output)
		res.Output = append(res.Output, item)
		e.itemAdded(idx, item)
		var done outputItem
		var result string
		if fn == nil {
			done, result = (&mcpFunction{}).failed(item, httpError(http.StatusBadGateway,
				fmt.Sprintf("the tool '%s' is not offered by the MCP server '%s' in this response", a.request.Name, a.request.ServerLabel)))
		} else {
			if e != nil {
				fn.startEvents(e, idx, item)
			}
			ctx, cancel := context.WithTimeout(r.Context(), p.cfg.ToolCallTimeout())
			done, result = fn.run(ctx, call, item)
			cancel()
			if err := r.Context().Err(); err != nil {
				return err
			}
			if d, ok := done.(*mcpCall); ok {
				d.ApprovalRequestID = &reqID
			}
		}
		res.Output[idx] = done
		if e != nil {
			(&mcpFunction{}).doneEvents(e, idx, done)
		}
		e.itemDone(idx, done)
		t.convo = append(t.convo, openai.Message{Role: "tool", ToolCallID: call.ID, Content: openai.TextContent(result)})
	}
	return nil
}

// approvalPending is the tool message the model gets for a call waiting for approval, so the
// conversation stays well-formed (every call answered) while the client decides.
const approvalPending = "This call needs the user's approval; it has not run yet."
