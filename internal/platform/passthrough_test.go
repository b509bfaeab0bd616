package platform

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// A chat stream as vLLM sends it, with an unknown field and odd spacing that a re-encoding
// relay would change.
const vllmChatStream = `data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"x_vendor":  1}

data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"!"},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}

data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":0}}}

data: [DONE]

`

func TestPassThroughStreamByteIdentity(t *testing.T) {
	env := newTestEnv(t)
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // before the engine's server closes (cleanups run last-in first-out)
	first, rest, _ := strings.Cut(vllmChatStream, "\n\n")
	first += "\n\n"
	env.eng.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Engine", "vllm")
		_, _ = io.WriteString(w, first)
		w.(http.Flusher).Flush()
		<-gate // the rest waits until the client has seen the first event
		_, _ = io.WriteString(w, rest)
	})
	reqBody := `{"model":"m",  "stream":true,"messages":[{"role":"user","content":"hi"}],"vendor_knob":{"a":1}}`
	req, err := http.NewRequestWithContext(t.Context(), "POST", env.srv.URL+"/v1/chat/completions", strings.NewReader(reqBody))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer sk-alice")
	req.Header.Set("Content-Type", "application/json")
	resp, err := env.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "vllm", resp.Header.Get("X-Engine"), "headers are relayed")

	br := bufio.NewReader(resp.Body)
	var got bytes.Buffer
	for !strings.HasSuffix(got.String(), "\n\n") {
		line, err := br.ReadString('\n')
		require.NoError(t, err, "the first event arrives before the engine finishes: it was flushed")
		got.WriteString(line)
	}
	require.Equal(t, first, got.String())
	release()
	tail, err := io.ReadAll(br)
	require.NoError(t, err)
	got.Write(tail)
	require.Equal(t, vllmChatStream, got.String(), "byte for byte")

	call := env.eng.last(t)
	require.Equal(t, reqBody, string(call.Body), "the request body is forwarded unchanged")
	require.Equal(t, "Bearer sk-alice", call.Header.Get("Authorization"))
	require.Empty(t, call.Header.Get(openai.HeaderSession), "no session hint on plain inference")
}

func TestPassThrough(t *testing.T) {
	env := newTestEnv(t)
	for _, tc := range []struct{ method, path, body string }{
		{"POST", openai.PathChatCompletions, `{"model":"m","messages":[{"role":"user","content":"hi there"}]}`},
		{"POST", openai.PathCompletions, `{"model":"m","prompt":"x"}`},
		{"POST", openai.PathEmbeddings, `{"model":"m","input":"x"}`},
		{"GET", openai.PathModels, ``},
		{"POST", openai.PathChatCompletions, `{"model":`}, // not even JSON: the layer below judges
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			direct, err := http.NewRequestWithContext(t.Context(), tc.method, env.eng.srv.URL+tc.path, strings.NewReader(tc.body))
			require.NoError(t, err)
			dresp, err := env.eng.srv.Client().Do(direct)
			require.NoError(t, err)
			want, _ := io.ReadAll(dresp.Body)
			dresp.Body.Close()

			status, _, got := env.do(t, tc.method, tc.path, "sk-alice", tc.body)
			require.Equal(t, dresp.StatusCode, status)
			require.Equal(t, string(want), string(got), "the same bytes as from the engine directly")
			call := env.eng.last(t)
			require.Equal(t, tc.path, call.Path)
			require.Equal(t, tc.body, string(call.Body))
			require.Equal(t, "Bearer sk-alice", call.Header.Get("Authorization"))
		})
	}
	t.Run("upstream down", func(t *testing.T) {
		env.eng.srv.Close()
		status, _, body := env.do(t, "POST", openai.PathChatCompletions, "sk-alice", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
		require.Equal(t, 502, status)
		require.NotContains(t, string(body), "127.0.0.1", "no internal detail")
		require.Equal(t, "server_error", envelope(t, body)["type"])
	})
}

// handlerRT serves a request in memory with handler h, as the stack's in-process chain does
// (without its pipe): the benchmark measures the platform, not a network.
type handlerRT struct{ h http.Handler }

func (rt handlerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	rt.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// BenchmarkPassThrough compares a chat completion through the platform with the same call on
// the layer below directly: the difference is the pass-through overhead (routing, request
// clone, relay). Run with -benchmem.
func BenchmarkPassThrough(b *testing.B) {
	answer := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("lorem ipsum ", 80) + `"},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":12,"completion_tokens":160,"total_tokens":172}}`)
	engine := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.Header.Get("Accept"), "event-stream") {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, vllmChatStream)
			return
		}
		_, _ = w.Write(answer)
	})
	next := handlerRT{engine}
	st, err := store.Open(b.Context(), config.Store{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "strata.db")})
	require.NoError(b, err)
	defer st.Close()
	p, err := New(config.Platform{}, st, next, clock.RealClock{}, nil, nil)
	require.NoError(b, err)
	reqBody := []byte(`{"model":"m","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Tell me about KV caches."}]}`)

	for _, accept := range []string{"application/json", "text/event-stream"} {
		b.Run("direct/"+accept, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", "http://upstream"+openai.PathChatCompletions, bytes.NewReader(reqBody))
				req.Header.Set("Accept", accept)
				resp, _ := next.RoundTrip(req)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		b.Run("platform/"+accept, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", "http://platform"+openai.PathChatCompletions, bytes.NewReader(reqBody))
				req.Header.Set("Accept", accept)
				rec := httptest.NewRecorder()
				p.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}

// BenchmarkResponses measures POST /v1/responses without tools against the layer below's
// chat completion directly (see BenchmarkPassThrough/direct): the difference is the Responses
// translation, the loop, and with store the SQLite write of the response.
func BenchmarkResponses(b *testing.B) {
	answer := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("lorem ipsum ", 80) + `"},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":12,"completion_tokens":160,"total_tokens":172}}`)
	next := handlerRT{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})}
	st, err := store.Open(b.Context(), config.Store{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "strata.db")})
	require.NoError(b, err)
	defer st.Close()
	p, err := New(config.Platform{}, st, next, clock.RealClock{}, nil, nil)
	require.NoError(b, err)
	for _, storeIt := range []bool{false, true} {
		body := []byte(fmt.Sprintf(`{"model":"m","instructions":"You are helpful.","input":"Tell me about KV caches.","store":%t}`, storeIt))
		b.Run(fmt.Sprintf("store=%t", storeIt), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", "http://platform"+openai.PathResponses, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer sk-bench")
				rec := httptest.NewRecorder()
				p.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
