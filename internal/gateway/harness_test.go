package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	testclock "k8s.io/utils/clock/testing"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testSecret is a fixed 32-byte server secret.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

// engineServed is what the fake answers in x-gateway-destination-endpoint-served, as the router
// would after picking replica "sim-1" on an H100.
const engineServed = "sim-1;gpu=H100-SXM"

// fakeEngine answers like vLLM's OpenAI server behind the router: chat completions, completions
// and embeddings (stream and not), GET /v1/models, with the router's endpoint-served header.
// It records what reached it.
type fakeEngine struct {
	clk *testclock.FakeClock

	mu       sync.Mutex
	usage    openai.Usage // what the next answer reports
	served   string       // endpoint-served header; "" sends none
	status   int          // non-zero: answer this status with vLLM's error body
	mode     string       // stream mode: "" complete, "cut" ends after two chunks, "hang" waits for the client after two chunks
	pause    bool         // stream: after the first chunk, wait for the gateway's second read (see stepBody)
	noChunks bool         // stream: ignore continuous_usage_stats, as an engine without vLLM's extension
	models   []string
	requests []seenRequest
	streams  map[string][]byte // request id -> exact stream bytes sent
	gates    sync.Map          // request id -> chan struct{}
}

type seenRequest struct {
	method, path string
	header       http.Header
	body         []byte
}

func newFakeEngine(clk *testclock.FakeClock) *fakeEngine {
	return &fakeEngine{clk: clk, served: engineServed, models: []string{"m1", "m2"}, streams: map[string][]byte{},
		usage: openai.Usage{PromptTokens: 17, CompletionTokens: 3, TotalTokens: 20, PromptTokensDetails: &openai.PromptTokensDetails{CachedTokens: 16}}}
}

func (e *fakeEngine) set(f func(e *fakeEngine)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

func (e *fakeEngine) seen() []seenRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]seenRequest(nil), e.requests...)
}

func (e *fakeEngine) gate(requestID string) chan struct{} {
	c, _ := e.gates.LoadOrStore(requestID, make(chan struct{}))
	return c.(chan struct{})
}

func (e *fakeEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	e.requests = append(e.requests, seenRequest{r.Method, r.URL.Path, r.Header.Clone(), body})
	usage, served, status, mode, pause, models, noChunks := e.usage, e.served, e.status, e.mode, e.pause, e.models, e.noChunks
	e.mu.Unlock()
	if served != "" {
		w.Header().Set(openai.HeaderEndpointServed, served)
	}
	if r.Method == http.MethodGet && r.URL.Path == openai.PathModels {
		list := openai.ModelList{Object: "list"}
		for _, m := range models {
			list.Data = append(list.Data, openai.Model{ID: m, Object: "model", Created: 1700000000, OwnedBy: "vllm", MaxModelLen: 8192})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(list)
		return
	}
	if status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"object":"error","message":"engine says no","type":"BadRequestError","param":null,"code":%d}`, status)
		return
	}
	req, err := openai.ParseInferenceRequest(r.URL.Path, body)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	e.clk.Step(7 * time.Millisecond) // prefill: the time to first token
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(vllmBody(r.URL.Path, req.Model, usage))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	var sent bytes.Buffer
	emit := func(data string) {
		ev := "data: " + data + "\n\n"
		sent.WriteString(ev)
		_, _ = io.WriteString(w, ev)
		w.(http.Flusher).Flush()
	}
	so := req.StreamOptions
	chunks := vllmChunks(r.URL.Path, req.Model)
	if so != nil && so.IncludeUsage && so.ContinuousUsageStats && !noChunks {
		chunks = withChunkUsage(r.URL.Path, chunks, usage.PromptTokens)
	}
	for i, c := range chunks {
		emit(c)
		if i == 0 && pause {
			select {
			case <-e.gate(r.Header.Get(openai.HeaderRequestID)):
			case <-r.Context().Done():
			}
		}
		if i == 1 && mode != "" {
			e.recordStream(r, &sent)
			if mode == "hang" {
				<-r.Context().Done()
			}
			return
		}
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		u, _ := json.Marshal(usage)
		emit(fmt.Sprintf(`{"id":"cmpl-1","object":"%s","created":1700000000,"model":"%s","choices":[],"usage":%s}`, chunkObject(r.URL.Path), req.Model, u))
	}
	emit("[DONE]")
	e.recordStream(r, &sent)
}

func (e *fakeEngine) recordStream(r *http.Request, sent *bytes.Buffer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.streams[r.Header.Get(openai.HeaderRequestID)] = bytes.Clone(sent.Bytes())
}

func (e *fakeEngine) stream(requestID string) []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.streams[requestID]
}

func chunkObject(path string) string {
	if path == openai.PathChatCompletions {
		return "chat.completion.chunk"
	}
	return "text_completion"
}

// vllmBody is a non-streaming answer shaped as vLLM's (extra fields like stop_reason and
// prompt_logprobs included, to check they pass through untouched).
func vllmBody(path, model string, u openai.Usage) []byte {
	ub, _ := json.Marshal(u)
	switch path {
	case openai.PathChatCompletions:
		return []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"` + model + `","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there","tool_calls":[]},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":` + string(ub) + `,"prompt_logprobs":null}`)
	case openai.PathCompletions:
		return []byte(`{"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"` + model + `","choices":[{"index":0,"text":"Hello there","logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":` + string(ub) + `}`)
	default:
		return []byte(`{"id":"embd-1","object":"list","created":1700000000,"model":"` + model + `","data":[{"index":0,"object":"embedding","embedding":[0.1,-0.2]}],"usage":{"prompt_tokens":` + fmt.Sprint(u.PromptTokens) + `,"total_tokens":` + fmt.Sprint(u.PromptTokens) + `,"completion_tokens":0,"prompt_tokens_details":null}}`)
	}
}

// vllmChunks are the content chunks of a stream, as vLLM sends them (role first, no usage key).
func vllmChunks(path, model string) []string {
	if path == openai.PathChatCompletions {
		pre := `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"` + model + `","choices":[{"index":0,"delta":`
		return []string{
			pre + `{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`,
			pre + `{"content":"Hello"},"logprobs":null,"finish_reason":null}]}`,
			pre + `{"content":" there"},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}`,
		}
	}
	pre := `{"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"` + model + `","choices":[{"index":0,"text":`
	return []string{
		pre + `"Hello","logprobs":null,"finish_reason":null,"stop_reason":null}]}`,
		pre + `" there","logprobs":null,"finish_reason":null,"stop_reason":null}]}`,
		pre + `"!","logprobs":null,"finish_reason":"length","stop_reason":null}]}`,
	}
}

// withChunkUsage adds vLLM's continuous_usage_stats block to each chunk, as the last member
// (vllm/entrypoints/openai/serving_chat.py: chunk.usage set on every chunk, serialized with
// exclude_unset): the tokens generated so far, 0 on chat's role chunk.
func withChunkUsage(path string, chunks []string, prompt int) []string {
	out := make([]string, len(chunks))
	for i, c := range chunks {
		completion := i + 1
		if path == openai.PathChatCompletions {
			completion = i
		}
		out[i] = c[:len(c)-1] + fmt.Sprintf(`,"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}`, prompt, prompt+completion, completion)
	}
	return out
}

// toServer is the gateway's next layer: it sends upstream requests to the fake engine's server.
// Each answer body is wrapped in a stepBody so that the fake clock moves between the gateway's
// reads at fixed points: TTFT and duration come out exact.
type toServer struct {
	base *url.URL
	rt   http.RoundTripper
	eng  *fakeEngine
}

func (t toServer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = t.base.Scheme, t.base.Host
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	stepAt := 1 // a JSON answer: one step as the gateway starts reading the body
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		stepAt = 2 // a stream: one step after the first chunk was read
	}
	resp.Body = &stepBody{ReadCloser: resp.Body, clk: t.eng.clk, stepAt: stepAt, gate: t.eng.gate(r.Header.Get(openai.HeaderRequestID))}
	return resp, nil
}

// stepDuration is how far stepBody moves the clock.
const stepDuration = 5 * time.Millisecond

// stepBody steps the fake clock by stepDuration at the start of the gateway's stepAt-th Read and
// then opens the engine's gate (a pausing engine sends the rest of its stream only then).
type stepBody struct {
	io.ReadCloser
	clk    *testclock.FakeClock
	stepAt int
	n      int
	gate   chan struct{}
}

func (b *stepBody) Read(p []byte) (int, error) {
	b.n++
	if b.n == b.stepAt {
		b.clk.Step(stepDuration)
		select {
		case <-b.gate: // a reused request id: already open
		default:
			close(b.gate)
		}
	}
	return b.ReadCloser.Read(p)
}

// harness is a gateway over a real SQLite store and the fake engine, with one tenant "acme" and
// its key.
type harness struct {
	t      *testing.T
	clk    *testclock.FakeClock
	st     *store.Store
	admin  *Admin
	eng    *fakeEngine
	gw     *Gateway
	reg    *prometheus.Registry
	logs   *syncBuffer
	tenant *store.Tenant
	key    string
	keyRec *store.APIKey
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func openTestStore(t testing.TB) *store.Store {
	st, err := store.Open(context.Background(), config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "strata.db")})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func newHarness(t *testing.T, rpm, tpm int, models ...string) *harness {
	t.Helper()
	return newHarnessCfg(t, config.Default().Gateway, rpm, tpm, models...)
}

// newHarnessCfg is newHarness with a gateway configuration of the test's own.
func newHarnessCfg(t *testing.T, cfg config.Gateway, rpm, tpm int, models ...string) *harness {
	t.Helper()
	h := &harness{t: t, clk: testclock.NewFakeClock(t0), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	h.st = openTestStore(t)
	h.admin = NewAdmin(h.st, testSecret)
	h.admin.now = h.clk.Now
	h.eng = newFakeEngine(h.clk)
	srv := httptest.NewServer(h.eng)
	t.Cleanup(srv.Close)
	base, _ := url.Parse(srv.URL)
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	h.gw, err = New(cfg, h.st, testSecret, toServer{base, srv.Client().Transport, h.eng}, h.clk, h.reg, log)
	require.NoError(t, err)
	h.tenant, err = h.admin.CreateTenant(context.Background(), "acme", rpm, tpm, models)
	require.NoError(t, err)
	h.key, h.keyRec, err = h.admin.CreateKey(context.Background(), "acme", "")
	require.NoError(t, err)
	return h
}

// do sends one request through the gateway with the harness key (as Bearer) unless hdr sets
// Authorization or x-api-key ("" values delete them).
func (h *harness) do(method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	return h.doCtx(context.Background(), method, path, body, hdr...)
}

func (h *harness) doCtx(ctx context.Context, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+h.key)
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			r.Header.Del(hdr[i])
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.gw.ServeHTTP(w, r)
	return w
}

func (h *harness) usage() []store.UsageRecord {
	recs, err := h.st.ListUsage(context.Background(), store.UsageFilter{})
	require.NoError(h.t, err)
	return recs
}

// chatBody is a chat request whose prompt estimate is exactly promptTokens (PromptText is
// "user: <content>\n", 7 bytes plus the content, estimated at bytes/4).
func chatBody(model string, promptTokens, maxTokens int, extra string) string {
	content := strings.Repeat("a", 4*promptTokens-7)
	b := `{"model":"` + model + `","messages":[{"role":"user","content":"` + content + `"}]`
	if maxTokens > 0 {
		b += `,"max_tokens":` + fmt.Sprint(maxTokens)
	}
	return b + extra + "}"
}

const simpleChat = `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`

// errorBody is the envelope openai.WriteError renders for err.
func errorBody(err error) string { return string(openai.MarshalError(err)) }
