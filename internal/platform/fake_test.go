package platform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// fakeEngine is the layer below, answering like vLLM's OpenAI server: the reply to a chat is
// "You said: <last user text>", one word per stream chunk; max_tokens cuts it with
// finish_reason "length"; usage counts words, and cached_tokens is the prompt tokens of all
// but the last message (a perfect prefix cache). A test may take over with handle.
type fakeEngine struct {
	srv *httptest.Server

	mu     sync.Mutex
	calls  []engineCall
	handle http.HandlerFunc // when set, answers every request instead

	// tenants, when set, makes the engine play a gateway for GET /v1/strata/identity: key ->
	// tenant id (an unknown key gets 401); unset, that path is a 404 like a router's or vLLM's.
	// Identity requests are counted in identityCalls, not recorded as calls.
	tenants        map[string]string
	identityCalls  int
	identityStatus int // when set, the identity path answers this status without a body
}

type engineCall struct {
	Path   string
	Header http.Header
	Body   []byte
	Chat   *openai.InferenceRequest // parsed body of a chat completion
}

func newFakeEngine(t *testing.T) *fakeEngine {
	f := &fakeEngine{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeEngine) setHandler(h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handle = h
}

func (f *fakeEngine) recorded() []engineCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]engineCall(nil), f.calls...)
}

func (f *fakeEngine) last(t *testing.T) engineCall {
	calls := f.recorded()
	require.NotEmpty(t, calls, "the engine was called")
	return calls[len(calls)-1]
}

func (f *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == pathIdentity {
		f.serveIdentity(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	c := engineCall{Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	if r.URL.Path == openai.PathChatCompletions {
		c.Chat, _ = openai.ParseInferenceRequest(openai.PathChatCompletions, body)
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	h := f.handle
	f.mu.Unlock()
	if h != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		h(w, r)
		return
	}
	switch r.URL.Path {
	case openai.PathChatCompletions:
		if c.Chat == nil {
			http.Error(w, `{"error":{"message":"bad request","type":"BadRequestError","param":null,"code":400}}`, 400)
			return
		}
		answerChat(w, c.Chat)
	case openai.PathModels:
		writeTestJSON(w, openai.ModelList{Object: "list", Data: []openai.Model{{ID: "m", Object: "model", OwnedBy: "vllm"}}})
	case openai.PathEmbeddings:
		_, _ = io.WriteString(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"m","usage":{"prompt_tokens":1,"total_tokens":1}}`)
	default:
		http.NotFound(w, r)
	}
}

// serveIdentity answers GET /v1/strata/identity as the gateway does (contract C5).
func (f *fakeEngine) serveIdentity(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.identityCalls++
	tenants, status := f.tenants, f.identityStatus
	f.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	if tenants == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":{"message":"Invalid URL (GET /v1/strata/identity)","type":"invalid_request_error","param":null,"code":null}}`)
		return
	}
	key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	tenant, ok := tenants[key]
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`)
		return
	}
	writeTestJSON(w, map[string]string{"object": "strata.identity", "tenant_id": tenant, "key_id": "key_" + key})
}

func (f *fakeEngine) setTenants(m map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tenants = m
}

func writeTestJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// fakeReply is what the fake engine answers to a chat request.
func fakeReply(req *openai.InferenceRequest) (words []string, finish string, u openai.Usage) {
	lastUser := ""
	for _, m := range req.Messages {
		if m.Role == "user" {
			lastUser = m.ContentText()
		}
	}
	words = strings.Fields("You said: " + lastUser)
	finish = "stop"
	if n, ok := req.OutputLimit(); ok && n < len(words) {
		words, finish = words[:n], "length"
	}
	prompt := len(strings.Fields(req.PromptText()))
	cached := 0
	if len(req.Messages) > 1 {
		head := *req
		head.Messages = req.Messages[:len(req.Messages)-1]
		cached = len(strings.Fields(head.PromptText()))
	}
	u = openai.Usage{PromptTokens: prompt, CompletionTokens: len(words), TotalTokens: prompt + len(words),
		PromptTokensDetails: &openai.PromptTokensDetails{CachedTokens: cached}}
	return words, finish, u
}

func answerChat(w http.ResponseWriter, req *openai.InferenceRequest) {
	words, finish, u := fakeReply(req)
	if !req.Stream {
		writeTestJSON(w, openai.ChatCompletion{ID: "chatcmpl-1", Object: "chat.completion", Created: 1, Model: req.Model,
			Choices: []openai.ChatChoice{{Message: openai.Message{Role: "assistant", Content: openai.TextContent(strings.Join(words, " "))}, FinishReason: finish}},
			Usage:   &u})
		return
	}
	sse := openai.NewSSEWriter(w)
	chunk := func(d openai.Delta, fin *string) {
		_ = sse.JSON(openai.ChatCompletionChunk{ID: "chatcmpl-1", Object: "chat.completion.chunk", Created: 1, Model: req.Model,
			Choices: []openai.ChunkChoice{{Delta: d, FinishReason: fin}}})
	}
	empty := ""
	chunk(openai.Delta{Role: "assistant", Content: &empty}, nil)
	for i, word := range words {
		if i < len(words)-1 {
			word += " "
		}
		chunk(openai.Delta{Content: &word}, nil)
	}
	chunk(openai.Delta{}, &finish)
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		_ = sse.JSON(openai.ChatCompletionChunk{ID: "chatcmpl-1", Object: "chat.completion.chunk", Created: 1, Model: req.Model,
			Choices: []openai.ChunkChoice{}, Usage: &u})
	}
	_ = sse.Done()
}

// toServer is the next RoundTripper of the platform under test: it sends the placeholder
// "upstream" host of openai.NewUpstreamRequest to the fake engine.
type toServer struct {
	base *url.URL
	rt   http.RoundTripper
}

func (t toServer) RoundTrip(r *http.Request) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host = t.base.Scheme, t.base.Host
	return t.rt.RoundTrip(out)
}

// testEnv is a platform on a real SQLite store, served by httptest, above a fake engine.
type testEnv struct {
	p   *Platform
	srv *httptest.Server
	eng *fakeEngine
	st  *store.Store
	reg *prometheus.Registry
	clk *clocktesting.FakeClock
}

func newTestEnv(t *testing.T) *testEnv { return newTestEnvConfig(t, config.Platform{}) }

func newTestEnvConfig(t *testing.T, cfg config.Platform) *testEnv {
	t.Helper()
	eng := newFakeEngine(t)
	st, err := store.Open(t.Context(), config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "strata.db")})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	u, _ := url.Parse(eng.srv.URL)
	reg := prometheus.NewRegistry()
	clk := clocktesting.NewFakeClock(testNow)
	p, err := New(cfg, st, toServer{base: u, rt: eng.srv.Client().Transport}, clk, reg, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	t.Cleanup(p.Close) // runs first: background runs end before the servers close
	return &testEnv{p: p, srv: srv, eng: eng, st: st, reg: reg, clk: clk}
}

// client is the official openai-go client against the platform, with the given API key and
// no retries (so 429 and 5xx are seen as they are).
func (e *testEnv) client(key string) *oai.Client {
	c := oai.NewClient(option.WithBaseURL(e.srv.URL+"/v1/"), option.WithAPIKey(key),
		option.WithMaxRetries(0), option.WithHTTPClient(e.srv.Client()))
	return &c
}

// do sends a raw request to the platform and returns status, headers and body.
func (e *testEnv) do(t *testing.T, method, path, key, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

// envelope decodes an OpenAI error envelope.
func envelope(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var env struct {
		Error map[string]any `json:"error"`
	}
	require.NoError(t, json.Unmarshal(b, &env), "body: %s", b)
	require.NotNil(t, env.Error, "error envelope in %s", b)
	return env.Error
}

// sentMessages renders the chat messages of an engine call as "role: text" lines.
func sentMessages(c engineCall) []string {
	out := make([]string, 0, len(c.Chat.Messages))
	for _, m := range c.Chat.Messages {
		out = append(out, fmt.Sprintf("%s: %s", m.Role, m.ContentText()))
	}
	return out
}
