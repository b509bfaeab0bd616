package router

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// pdSchedulerConfig is an llm-d P/D EndpointPickerConfig: role filters, a prefix scorer on the
// decode profile, and the pd-profile-handler with the given threshold (tokens).
func pdSchedulerConfig(threshold int) *config.EndpointPickerConfig {
	three := 3.0
	return &config.EndpointPickerConfig{
		Plugins: []config.PluginSpec{
			{Type: "prefill-header-handler"}, {Type: "prefill-filter"}, {Type: "decode-filter"},
			{Type: "queue-scorer"}, {Type: "max-score-picker"},
			{Type: "prefix-cache-scorer", Parameters: json.RawMessage(`{"blockSize":64,"lruCapacityPerServer":1000}`)},
			{Type: "pd-profile-handler", Parameters: json.RawMessage(fmt.Sprintf(`{"threshold":%d,"hashBlockSize":64}`, threshold))},
		},
		SchedulingProfiles: []config.SchedulingProfile{
			{Name: "prefill", Plugins: []config.ProfilePlugin{{PluginRef: "prefill-filter"}, {PluginRef: "queue-scorer"}, {PluginRef: "max-score-picker"}}},
			{Name: "decode", Plugins: []config.ProfilePlugin{{PluginRef: "decode-filter"}, {PluginRef: "queue-scorer"},
				{PluginRef: "prefix-cache-scorer", Weight: &three}, {PluginRef: "max-score-picker"}}},
		},
	}
}

// pdEngines are a prefill and a decode fake engine speaking vLLM's NixlConnector protocol as the
// routing sidecar sees it: the prefiller answers with kv_transfer_params, the decoder records what
// it was sent.
type pdEngines struct {
	p, d *fakeEngine

	mu         sync.Mutex
	prefills   []map[string]any
	decodes    []map[string]any
	prefillerH []string // x-prefiller-host-port of each decode request
	prefillErr bool     // the prefiller answers 500
}

const prefillerParams = `{"do_remote_prefill":true,"do_remote_decode":false,"remote_block_ids":[1,2,3],` +
	`"remote_engine_id":"engine-p","remote_request_id":"req-1","remote_host":"10.0.0.9","remote_port":5600,"tp_size":1}`

func newPDEngines(t *testing.T) *pdEngines {
	t.Helper()
	pd := &pdEngines{p: newFakeEngine(t, "p", "m"), d: newFakeEngine(t, "d", "m")}
	pd.p.handler = func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		pd.mu.Lock()
		pd.prefills = append(pd.prefills, body)
		fail := pd.prefillErr
		pd.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"object":"error","message":"boom","type":"InternalServerError","param":null,"code":500}`)
			return
		}
		_, _ = io.WriteString(w, `{"id":"chatcmpl-p","object":"chat.completion","model":"m","choices":[{"index":0,`+
			`"message":{"role":"assistant","content":"x"},"finish_reason":"length"}],"kv_transfer_params":`+prefillerParams+`}`)
	}
	pd.d.handler = func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		pd.mu.Lock()
		pd.decodes = append(pd.decodes, body)
		pd.prefillerH = append(pd.prefillerH, r.Header.Get(headerPrefillerHostPort))
		pd.mu.Unlock()
		if body["stream"] == true {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"decoded\"}}]}\n\ndata: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"chatcmpl-d","object":"chat.completion","model":"m","choices":[{"index":0,`+
			`"message":{"role":"assistant","content":"decoded"},"finish_reason":"stop"}]}`)
	}
	return pd
}

func (pd *pdEngines) counts() (prefills, decodes int) {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	return len(pd.prefills), len(pd.decodes)
}

func TestDisaggregation(t *testing.T) {
	pd := newPDEngines(t)
	cfg := testConfig()
	cfg.Scheduler = pdSchedulerConfig(50)
	engines := []config.Engine{
		{Name: "p", URL: pd.p.srv.URL, Models: []string{"m"}, Role: "prefill"},
		{Name: "d", URL: pd.d.srv.URL, Models: []string{"m"}, Role: "decode"},
	}
	tr := newTestRouter(t, cfg, engines)
	tr.markUp("p", 0)
	tr.markUp("d", 0)
	long := strings.Repeat("A long document to summarise, sentence after sentence. ", 20) // ~280 tokens

	// A long uncached prompt: prefill on p, then decode on d with p's kv_transfer_params.
	body := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":%q}],"max_tokens":20,"stream":true,"stream_options":{"include_usage":true}}`, long)
	req, w := tr.newPost(body)
	req.Header.Set(openai.HeaderRequestID, "rid-1")
	tr.ServeHTTP(w, req)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "data: {\"choices\":[{\"delta\":{\"content\":\"decoded\"}}]}\n\ndata: [DONE]\n\n", w.Body.String(), "the client sees the decode answer only")
	require.Equal(t, "d", w.Header().Get(openai.HeaderEndpointServed))

	pre, dec := pd.prefills[0], pd.decodes[0]
	require.Equal(t, false, pre["stream"])
	require.NotContains(t, pre, "stream_options")
	require.EqualValues(t, 1, pre["max_tokens"])
	require.EqualValues(t, 1, pre["max_completion_tokens"])
	require.Equal(t, map[string]any{"do_remote_decode": true, "do_remote_prefill": false, "remote_engine_id": nil,
		"remote_block_ids": nil, "remote_host": nil, "remote_port": nil}, pre["kv_transfer_params"])
	require.Equal(t, pre["messages"], dec["messages"])

	var want map[string]any
	require.NoError(t, json.Unmarshal([]byte(prefillerParams), &want))
	require.Equal(t, want, dec["kv_transfer_params"], "the prefiller's params reach the decoder verbatim")
	require.Equal(t, true, dec["stream"])
	require.Equal(t, map[string]any{"include_usage": true}, dec["stream_options"])
	require.EqualValues(t, 20, dec["max_tokens"])
	require.NotContains(t, dec, "max_completion_tokens")
	u, _ := url.Parse(pd.p.srv.URL)
	require.Equal(t, u.Host, pd.prefillerH[0])
	for _, name := range []string{"p", "d"} {
		require.Zero(t, tr.snapshotOne(tr.ep(name), tr.clk.Now()).InFlight, name)
	}

	// The same prompt again: the decode endpoint holds it, so nothing is left to prefill remotely.
	require.Equal(t, http.StatusOK, tr.post(openai.PathChatCompletions, fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":%q}]}`, long)).Code)
	prefills, decodes := pd.counts()
	require.Equal(t, 1, prefills)
	require.Equal(t, 2, decodes)
	require.NotContains(t, pd.decodes[1], "kv_transfer_params")
	require.Empty(t, pd.prefillerH[1])

	// A short prompt stays below the threshold: decode only.
	require.Equal(t, http.StatusOK, tr.post(openai.PathChatCompletions, chatBody("m", "hi")).Code)
	prefills, _ = pd.counts()
	require.Equal(t, 1, prefills)

	// A failed prefill leg: the decoder prefills locally.
	pd.mu.Lock()
	pd.prefillErr = true
	pd.mu.Unlock()
	w = tr.post(openai.PathChatCompletions, fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":%q}]}`, "Another long text. "+long))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	prefills, decodes = pd.counts()
	require.Equal(t, 2, prefills)
	require.Equal(t, 4, decodes)
	require.NotContains(t, pd.decodes[3], "kv_transfer_params")

	require.Equal(t, 2.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("decode", reasonDisaggregated)))
	require.Equal(t, 2.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("prefill", reasonDisaggregated)))
	require.Equal(t, 2.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("decode", reasonDecodeOnly)))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("prefill", reasonPrefillFailed)))
}

// Without P/D profiles, a prefill-only endpoint never takes a whole request.
func TestPrefillOnlyEndpointsServeNoWholeRequest(t *testing.T) {
	p := newFakeEngine(t, "p", "m")
	d := newFakeEngine(t, "d", "m")
	engines := []config.Engine{
		{Name: "p", URL: p.srv.URL, Models: []string{"m"}, Role: "prefill"},
		{Name: "d", URL: d.srv.URL, Models: []string{"m"}, Role: "both"},
	}
	tr := newTestRouter(t, testConfig(), engines)
	tr.markUp("p", 0)
	tr.markUp("d", 9)
	for range 5 {
		require.Equal(t, "d", tr.post(openai.PathChatCompletions, chatBody("m", "hi")).Header().Get(openai.HeaderEndpointServed))
	}
	require.Zero(t, p.received())
}

// P/D configuration errors name the offending part.
func TestDisaggregationConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*config.EndpointPickerConfig)
		want   string
	}{
		{"missing decode profile", func(c *config.EndpointPickerConfig) { c.SchedulingProfiles = c.SchedulingProfiles[:1] },
			`router.scheduler: schedulingProfiles: the pd-profile-handler needs a profile named "decode"`},
		{"extra profile", func(c *config.EndpointPickerConfig) {
			c.SchedulingProfiles = append(c.SchedulingProfiles, config.SchedulingProfile{Name: "other"})
		}, `router.scheduler: schedulingProfiles: profile "other" is neither the decode profile "decode" nor the prefill profile "prefill" of the pd-profile-handler`},
		{"negative threshold", func(c *config.EndpointPickerConfig) { c.Plugins[6].Parameters = json.RawMessage(`{"threshold":-1}`) },
			`router.scheduler: plugins[6] "pd-profile-handler" (pd-profile-handler): parameters.threshold: must not be negative, got -1`},
		{"unknown parameter", func(c *config.EndpointPickerConfig) { c.Plugins[6].Parameters = json.RawMessage(`{"treshold":1}`) },
			`router.scheduler: plugins[6] "pd-profile-handler" (pd-profile-handler): parameters: unknown field "treshold"`},
		{"unknown prefix plugin", func(c *config.EndpointPickerConfig) {
			c.Plugins[6].Parameters = json.RawMessage(`{"prefixPluginName":"nope"}`)
		}, `router.scheduler: profile "decode": pd-profile-handler: parameters.prefixPluginName: no prefix-cache-scorer or precise-prefix-cache-scorer named "nope"`},
		{"bad plugin in a profile", func(c *config.EndpointPickerConfig) {
			c.SchedulingProfiles[0].Plugins = append(c.SchedulingProfiles[0].Plugins, config.ProfilePlugin{PluginRef: "nope"})
		}, `router.scheduler: profile "prefill": schedulingProfiles[0].plugins[3].pluginRef: unknown plugin "nope" (declare it under plugins)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Scheduler = pdSchedulerConfig(10)
			tc.mutate(cfg.Scheduler)
			_, err := New(cfg, []config.Engine{{URL: "http://a:1"}}, nil, nil, prometheus.NewRegistry(), nil)
			require.EqualError(t, err, tc.want)
		})
	}
}

// newPost builds a chat POST of body and its recorder.
func (tr *testRouter) newPost(body string) (*http.Request, *httptest.ResponseRecorder) {
	return httptest.NewRequest(http.MethodPost, openai.PathChatCompletions, strings.NewReader(body)), httptest.NewRecorder()
}

// A client cannot send kv_transfer_params of its own: they would make the engine fetch KV blocks
// from a host the client names.
func TestClientKVTransferParamsDropped(t *testing.T) {
	a := newFakeEngine(t, "a", "m")
	tr := newTestRouter(t, testConfig(), engineConfigs(a))
	tr.markUp("a", 0)
	w := tr.post(openai.PathChatCompletions, `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3,`+
		`"kv_transfer_params":{"do_remote_prefill":true,"remote_host":"169.254.169.254","remote_port":80,"remote_block_ids":[1]}}`)
	require.Equal(t, http.StatusOK, w.Code)
	a.mu.Lock()
	defer a.mu.Unlock()
	var got map[string]any
	require.NoError(t, json.Unmarshal(a.bodies[0], &got))
	require.NotContains(t, got, "kv_transfer_params")
	require.EqualValues(t, 3, got["max_tokens"])

	// Bodies without the key are forwarded byte for byte.
	body := `{"model":"m",  "messages":[{"role":"user","content":"hi"}]}`
	a.mu.Unlock()
	require.Equal(t, http.StatusOK, tr.post(openai.PathChatCompletions, body).Code)
	a.mu.Lock()
	require.Equal(t, body, string(a.bodies[1]))
}

// x-prefiller-host-port always names a port, as llm-d's sidecar expects host:port.
func TestHostPort(t *testing.T) {
	for url, want := range map[string]string{
		"http://10.0.0.7:8000":        "10.0.0.7:8000",
		"http://prefill-0.svc":        "prefill-0.svc:80",
		"https://prefill-0.svc/base":  "prefill-0.svc:443",
		"http://[fd00::7]:8200/":      "[fd00::7]:8200",
		"http://[fd00::7]/v1-compat/": "[fd00::7]:80",
	} {
		ep, err := newEndpoint(config.Engine{URL: url}, 0)
		require.NoError(t, err)
		require.Equal(t, want, ep.hostPort(), url)
	}
	_, err := newEndpoint(config.Engine{Name: "x", URL: "http://a:1", Role: "encode"}, 0)
	require.EqualError(t, err, `engine "x": role "encode" is not prefill, decode or both`)
}

// With a precise prefix-cache scorer (KV events) on the decode profile, the P/D threshold uses its
// estimate: a prompt whose blocks the decode engine reported stored is decoded there alone.
func TestDisaggregationPreciseEstimate(t *testing.T) {
	cfg := testConfig()
	cfg.Scheduler = &config.EndpointPickerConfig{
		Plugins: []config.PluginSpec{{Type: "prefill-filter"}, {Type: "decode-filter"}, {Type: "queue-scorer"},
			{Type: "precise-prefix-cache-scorer", Parameters: json.RawMessage(`{"blockSizeTokens":16}`)},
			{Type: "pd-profile-handler", Parameters: json.RawMessage(`{"threshold":16}`)}},
		SchedulingProfiles: []config.SchedulingProfile{
			{Name: "prefill", Plugins: []config.ProfilePlugin{{PluginRef: "prefill-filter"}, {PluginRef: "queue-scorer"}}},
			{Name: "decode", Plugins: []config.ProfilePlugin{{PluginRef: "decode-filter"}, {PluginRef: "precise-prefix-cache-scorer"}}},
		},
	}
	tr := newTestRouter(t, cfg, []config.Engine{
		{Name: "p", URL: "http://p:1", Models: []string{"m"}, Role: "prefill"},
		{Name: "d", URL: "http://d:1", Models: []string{"m"}, Role: "decode"},
	})
	tr.markUp("p", 0)
	tr.markUp("d", 0)
	cached := make([]int, 32)
	for i := range cached {
		cached[i] = 1000 + i
	}
	tr.HandleKVEvents("d", []scheduling.KVEvent{{Kind: scheduling.BlockStored, BlockHashes: []uint64{11, 12}, TokenIDs: cached, BlockSize: 16}})
	for _, tc := range []struct {
		name        string
		tokens      []int
		wantPrefill bool
	}{
		{"cached on the decode engine", cached, false},
		{"cold", []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &call{sreq: &scheduling.Request{Model: "m", TokenIDs: tc.tokens, PromptTokens: len(tc.tokens)}, fields: map[string]json.RawMessage{}}
			d, err := tr.decide(c, false, reasonFirst)
			require.NoError(t, err)
			require.Equal(t, "d", d.ep.name)
			require.Equal(t, tc.wantPrefill, d.prefill != nil)
			tr.release(d)
		})
	}
}

// A failed prefill leg is tried on another prefill endpoint before the decoder falls back to a
// local prefill.
func TestPrefillLegRetried(t *testing.T) {
	pd := newPDEngines(t)
	broken := newFakeEngine(t, "p-broken", "m")
	broken.handler = answer503
	cfg := testConfig()
	cfg.Scheduler = pdSchedulerConfig(0)
	tr := newTestRouter(t, cfg, []config.Engine{
		{Name: "p-broken", URL: broken.srv.URL, Models: []string{"m"}, Role: "prefill"},
		{Name: "p", URL: pd.p.srv.URL, Models: []string{"m"}, Role: "prefill"},
		{Name: "d", URL: pd.d.srv.URL, Models: []string{"m"}, Role: "decode"},
	})
	tr.markUp("p-broken", 0) // preferred by the queue scorer
	tr.markUp("p", 3)
	tr.markUp("d", 0)
	w := tr.post(openai.PathChatCompletions, chatBody("m", "a prompt"))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, 1, broken.received())
	prefills, decodes := pd.counts()
	require.Equal(t, 1, prefills)
	require.Equal(t, 1, decodes)
	require.Contains(t, pd.decodes[0], "kv_transfer_params", "the second prefiller's params")
	u, _ := url.Parse(pd.p.srv.URL)
	require.Equal(t, u.Host, pd.prefillerH[0])
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("prefill", reasonPrefillFailed)))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.decisions.WithLabelValues("prefill", reasonRetry)))
	for _, n := range []string{"p-broken", "p", "d"} {
		require.Zero(t, tr.snapshotOne(tr.ep(n), tr.clk.Now()).InFlight, n)
	}
}
