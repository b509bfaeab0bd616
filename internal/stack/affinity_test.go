package stack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/gateway"
	"github.com/strata-inference/strata/internal/openai"
)

// Agent-loop KV affinity: how much of an agent's prompt the engines serve from their prefix
// cache, with and without the platform's X-Strata-Session hint.
//
// Setup: platform+gateway in one stack whose upstream is router+4 simulated replicas in
// another (as `strata serve --layers`), joined by a proxy that records every inference call's
// X-Strata-Session and, for the "without" runs, removes it. affinityAgents agents run at once,
// each a tool loop of affinityIters responses chained by previous_response_id: the first input
// is an MT-Bench question that names the function lookup_order (the simulator calls the tool
// the last user message names, internal/engine/sim/toolcall.go); each later input is the
// previous call's function_call_output (~250 tokens) and a user message naming the tool again.
// All agents share a system prompt (instructions), as agents of one application do.
//
//	go test -count=1 -run TestAgentLoopAffinity -v ./internal/stack/
const (
	affinityAgents = 16
	affinityIters  = 5
)

var lookupOrder = responses.ToolUnionParam{OfFunction: &responses.FunctionToolParam{Name: "lookup_order",
	Description: oai.String("Look up an order of the customer by id."),
	Parameters: map[string]any{"type": "object", "properties": map[string]any{"order_id": map[string]any{"type": "string"}},
		"required": []string{"order_id"}}}}

// affinityResult is one run's measurement.
type affinityResult struct {
	prompt, cached         int64 // all iterations
	laterPrompt, laterHits int64 // iterations 2..affinityIters: what a warm replica can serve
	sameReplica, laterN    int   // later iterations on the replica of the agent's previous one
}

func (r affinityResult) share() float64      { return float64(r.cached) / float64(r.prompt) }
func (r affinityResult) laterShare() float64 { return float64(r.laterHits) / float64(r.laterPrompt) }

// sessionProxy forwards to the lower stack, recording each request's X-Strata-Session by
// X-Request-Id, and removing it when strip is set.
type sessionProxy struct {
	mu       sync.Mutex
	sessions map[string]string
}

func startSessionProxy(t *testing.T, target string, strip bool) (*sessionProxy, string) {
	u, err := url.Parse(target)
	require.NoError(t, err)
	sp := &sessionProxy{sessions: map[string]string{}}
	rp := &httputil.ReverseProxy{FlushInterval: -1, Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		sp.mu.Lock()
		sp.sessions[pr.In.Header.Get(openai.HeaderRequestID)] = pr.In.Header.Get(openai.HeaderSession)
		sp.mu.Unlock()
		if strip {
			pr.Out.Header.Del(openai.HeaderSession)
		}
	}}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return sp, srv.URL
}

func (sp *sessionProxy) session(requestID string) string {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.sessions[requestID]
}

// runAgentLoops starts a fresh split stack (cold caches) with the router's scheduler sched
// (nil: the default profile) and measures one run.
func runAgentLoops(t *testing.T, sched *config.EndpointPickerConfig, hint bool, questions []mtbenchQuestion) affinityResult {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	zero := 0.0
	lowerCfg, err := config.Load("", func(c *config.Config) {
		c.DataDir = t.TempDir()
		c.Layers = []string{config.LayerRouter, config.LayerEngine}
		c.Sim.TimeScale = &zero
		c.Sim.Replicas = 4
		c.Router.Scheduler = sched
		c.Router.HealthInterval = config.Duration(50 * time.Millisecond)
		c.Router.ScrapeTimeout = config.Duration(10 * time.Second)
		c.Router.StaleAfter = config.Duration(time.Minute)
	})
	require.NoError(t, err)
	lower, err := New(context.Background(), lowerCfg, quiet)
	require.NoError(t, err)
	t.Cleanup(lower.Close)
	lnLower, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	lower.Serve(lnLower)
	require.Eventually(t, lower.router.Ready, 10*time.Second, 20*time.Millisecond)
	proxy, proxyURL := startSessionProxy(t, "http://"+lnLower.Addr().String(), !hint)

	t.Setenv(DevKeyEnv, devKey)
	upperCfg, err := config.Load("", func(c *config.Config) {
		c.DataDir = t.TempDir()
		c.Layers = []string{config.LayerPlatform, config.LayerGateway}
		c.Upstream = proxyURL
	})
	require.NoError(t, err)
	upper, err := New(context.Background(), upperCfg, quiet)
	require.NoError(t, err)
	t.Cleanup(upper.Close)
	lnUpper, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	upper.Serve(lnUpper)
	secret, err := gateway.LoadOrCreateSecret(upperCfg.Gateway.KeySecretFile)
	require.NoError(t, err)
	admin := gateway.NewAdmin(upper.store, secret)
	c := oai.NewClient(option.WithBaseURL("http://"+lnUpper.Addr().String()+"/v1"), option.WithAPIKey(devKey), option.WithMaxRetries(0))

	instructions := "You are the order assistant of an online shop. " + strings.Repeat("Answer briefly, cite the order id, and call lookup_order whenever the customer mentions an order. ", 12)
	toolOutput := func(agent, iter int) string {
		var b strings.Builder
		fmt.Fprintf(&b, "order %d-%d: ", agent, iter)
		for i := range 40 {
			fmt.Fprintf(&b, "item%d qty %d price %d.%02d; ", i, (agent+i)%7+1, 3+i%11, (iter*13+i)%100)
		}
		return b.String()
	}

	type step struct {
		agent, iter int
		requestID   string
		usage       responses.ResponseUsage
		sessionWant string
	}
	steps := make(chan step, affinityAgents*affinityIters)
	var wg sync.WaitGroup
	errs := make(chan error, affinityAgents)
	for a := range affinityAgents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := questions[a%len(questions)]
			var prev *responses.Response
			for it := range affinityIters {
				params := responses.ResponseNewParams{Model: lowerCfg.Sim.ServedModelName, Instructions: oai.String(instructions),
					Tools: []responses.ToolUnionParam{lookupOrder}, MaxOutputTokens: oai.Int(64)}
				if prev == nil {
					params.Input = responses.ResponseNewParamsInputUnion{OfString: oai.String(q.Turns[0] + " Use lookup_order for order 17.")}
				} else {
					call := prev.Output[len(prev.Output)-1]
					if call.Type != "function_call" {
						errs <- fmt.Errorf("agent %d iteration %d: the model did not call the tool: %s", a, it, call.RawJSON())
						return
					}
					params.PreviousResponseID = oai.String(prev.ID)
					params.Input = responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
						{OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{CallID: oai.String(call.CallID),
							Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: oai.String(toolOutput(a, it))}}},
						responses.ResponseInputItemParamOfMessage(fmt.Sprintf("Thanks. Now use lookup_order for order %d.", 17+it), responses.EasyInputMessageRoleUser),
					}}
				}
				id := fmt.Sprintf("aff-%d-%d", a, it)
				res, err := c.Responses.New(context.Background(), params, option.WithHeader(openai.HeaderRequestID, id))
				if err != nil {
					errs <- fmt.Errorf("agent %d iteration %d: %w", a, it, err)
					return
				}
				first := res.ID
				if prev != nil {
					first = ""
				}
				steps <- step{agent: a, iter: it, requestID: id, usage: res.Usage, sessionWant: first}
				prev = res
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(steps)
	for err := range errs {
		require.NoError(t, err)
	}

	// The platform sent X-Strata-Session on every call of a chain: the id of its first response.
	firstOf := map[int]string{}
	var all []step
	for s := range steps {
		all = append(all, s)
		if s.sessionWant != "" {
			firstOf[s.agent] = s.sessionWant
		}
	}
	require.Len(t, all, affinityAgents*affinityIters)
	endpoints := map[string]string{}
	recs, err := admin.Usage(context.Background(), "", 100000)
	require.NoError(t, err)
	for _, r := range recs {
		endpoints[r.RequestID] = r.Endpoint
	}
	var res affinityResult
	for _, s := range all {
		require.Equal(t, firstOf[s.agent], proxy.session(s.requestID), "agent %d iteration %d: X-Strata-Session is the chain's first response id", s.agent, s.iter)
		res.prompt += s.usage.InputTokens
		res.cached += s.usage.InputTokensDetails.CachedTokens
		if s.iter > 0 {
			res.laterPrompt += s.usage.InputTokens
			res.laterHits += s.usage.InputTokensDetails.CachedTokens
			res.laterN++
			if endpoints[s.requestID] != "" && endpoints[s.requestID] == endpoints[fmt.Sprintf("aff-%d-%d", s.agent, s.iter-1)] {
				res.sameReplica++
			}
		}
	}
	return res
}

func TestAgentLoopAffinity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 stacks")
	}
	qs := loadMTBench(t)
	three, one := 3.0, 1.0
	sessionProfile := &config.EndpointPickerConfig{
		Plugins: []config.PluginSpec{{Type: "queue-scorer"}, {Type: "session-affinity-scorer"}, {Type: "max-score-picker"}},
		SchedulingProfiles: []config.SchedulingProfile{{Name: "default", Plugins: []config.ProfilePlugin{
			{PluginRef: "queue-scorer", Weight: &one}, {PluginRef: "session-affinity-scorer", Weight: &three}, {PluginRef: "max-score-picker"}}}},
	}
	results := map[string]affinityResult{}
	for _, tc := range []struct {
		profile string
		sched   *config.EndpointPickerConfig
	}{
		{"queue+session-affinity", sessionProfile},
		{"default (queue+kv-cache+prefix)", nil},
	} {
		for _, hint := range []bool{true, false} {
			name := tc.profile + map[bool]string{true: ", with hint", false: ", without hint"}[hint]
			t.Run(name, func(t *testing.T) {
				r := runAgentLoops(t, tc.sched, hint, qs)
				results[name] = r
				t.Logf("%s: cached/prompt tokens %d/%d = %.1f%%; iterations 2-%d: %d/%d = %.1f%%, on the previous iteration's replica %d/%d",
					name, r.cached, r.prompt, 100*r.share(), affinityIters, r.laterHits, r.laterPrompt, 100*r.laterShare(), r.sameReplica, r.laterN)
			})
		}
	}
	with, without := results["queue+session-affinity, with hint"], results["queue+session-affinity, without hint"]
	require.Greater(t, with.laterShare(), without.laterShare(), "the hint keeps agent loops on warm replicas")
	require.Equal(t, with.laterN, with.sameReplica, "with the hint every iteration follows its chain's replica")
}

// TestMCPAgentLoopOnSimulator runs the mcp tool end to end: openai-go -> platform -> gateway ->
// router -> simulated replicas, with a real MCP server (the go-sdk's, streamable HTTP) on
// loopback. The simulator calls the tool the last user message names, so each of the
// affinityIters chained responses is list tools -> mcp_call -> answer, two inference calls on
// one X-Strata-Session; the second call of each response finds the first in the cache.
func TestMCPAgentLoopOnSimulator(t *testing.T) {
	srv := mcp.NewServer(&mcp.Implementation{Name: "orders", Version: "1"}, nil)
	type in struct {
		OrderID string `json:"order_id"`
	}
	var calls atomic.Int64
	mcp.AddTool(srv, &mcp.Tool{Name: "lookup_order", Description: "Look up an order by id."},
		func(_ context.Context, _ *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			calls.Add(1)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "order " + a.OrderID + ": 3 items, shipped"}}}, nil, nil
		})
	h := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(h.Close)
	ts := startStack(t, nil) // after the MCP server: the stack closes (and ends its MCP sessions) first
	tool := responses.ToolUnionParam{OfMcp: &responses.ToolMcpParam{ServerLabel: "orders", ServerURL: oai.String(h.URL),
		RequireApproval: responses.ToolMcpRequireApprovalUnionParam{OfMcpToolApprovalSetting: oai.String("never")}}}
	c := ts.client(devKey)
	var prev string
	for it := range affinityIters {
		params := responses.ResponseNewParams{Model: ts.model, Tools: []responses.ToolUnionParam{tool}, MaxOutputTokens: oai.Int(64),
			Input: responses.ResponseNewParamsInputUnion{OfString: oai.String(fmt.Sprintf("Step %d: use lookup_order for my order.", it))}}
		if prev != "" {
			params.PreviousResponseID = oai.String(prev)
		}
		var res *responses.Response
		if it%2 == 1 {
			s := c.Responses.NewStreaming(context.Background(), params)
			var seq int64
			var types []string
			for s.Next() {
				ev := s.Current()
				require.Equal(t, seq, ev.SequenceNumber)
				seq++
				types = append(types, ev.Type)
				if ev.Type == "response.completed" {
					r := ev.Response
					res = &r
				}
			}
			require.NoError(t, s.Err())
			require.Contains(t, types, "response.mcp_list_tools.completed")
			require.Contains(t, types, "response.mcp_call_arguments.done")
			require.Contains(t, types, "response.mcp_call.completed")
			require.Equal(t, "response.completed", types[len(types)-1])
		} else {
			var err error
			res, err = c.Responses.New(context.Background(), params)
			require.NoError(t, err)
		}
		require.NotNil(t, res)
		require.Equal(t, responses.ResponseStatusCompleted, res.Status)
		require.Len(t, res.Output, 3, "mcp_list_tools, mcp_call, message: %s", res.RawJSON())
		require.Equal(t, "lookup_order", res.Output[0].AsMcpListTools().Tools[0].Name)
		call := res.Output[1].AsMcpCall()
		require.Equal(t, "orders", call.ServerLabel)
		require.Equal(t, "order example: 3 items, shipped", call.Output, "the simulator's arguments are an example of the schema")
		require.Equal(t, "message", res.Output[2].Type)
		require.Positive(t, res.Usage.InputTokensDetails.CachedTokens, "iteration %d: the loop's second call hits the first's prefix", it)
		prev = res.ID
	}
	require.Equal(t, int64(affinityIters), calls.Load())
}
