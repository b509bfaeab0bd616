package platform

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// BenchmarkResponseCreate is the platform's own cost of POST /v1/responses without tools (one
// inference call, translated from and to the Responses API, stored or not) against an engine
// that answers at once, in memory. The stack-level comparison with chat completions sent to the
// router is BenchmarkPlatformOverhead in internal/stack.
//
//	go test -run '^$' -bench ResponseCreate -benchmem ./internal/platform/
func BenchmarkResponseCreate(b *testing.B) {
	answer := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("lorem ipsum ", 8) + `"},"finish_reason":"length","logprobs":null}],"usage":{"prompt_tokens":120,"completion_tokens":16,"total_tokens":136,"prompt_tokens_details":{"cached_tokens":64}}}`)
	engine := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == pathIdentity {
			http.NotFound(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	st, err := store.Open(b.Context(), config.Store{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "strata.db")})
	require.NoError(b, err)
	defer st.Close()
	p, err := New(config.Platform{}, st, handlerRT{engine}, clock.RealClock{}, nil, nil)
	require.NoError(b, err)
	defer p.Close()
	prompt := strings.Repeat("Compose an engaging travel blog post about a recent trip to Hawaii. ", 6)
	for _, store := range []bool{true, false} {
		body := []byte(`{"model":"m","max_output_tokens":16,"input":"` + prompt + `","store":` + map[bool]string{true: "true", false: "false"}[store] + `}`)
		b.Run(map[bool]string{true: "store", false: "no-store"}[store], func(b *testing.B) {
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

// BenchmarkResponseCreateParallel is BenchmarkResponseCreate from 50 goroutines: what stored
// responses cost when writers contend for SQLite.
//
//	go test -run '^$' -bench ResponseCreateParallel -benchmem ./internal/platform/
func BenchmarkResponseCreateParallel(b *testing.B) {
	answer := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":120,"completion_tokens":2,"total_tokens":122}}`)
	engine := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == pathIdentity {
			http.NotFound(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	st, err := store.Open(b.Context(), config.Store{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "strata.db")})
	require.NoError(b, err)
	defer st.Close()
	p, err := New(config.Platform{}, st, handlerRT{engine}, clock.RealClock{}, nil, nil)
	require.NoError(b, err)
	defer p.Close()
	for _, stored := range []string{"true", "false"} {
		body := []byte(`{"model":"m","max_output_tokens":16,"input":"Compose an engaging travel blog post about Hawaii.","store":` + stored + `}`)
		b.Run("store="+stored, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(25) // x GOMAXPROCS (2 here): 50 concurrent users
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", "http://platform"+openai.PathResponses, bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer sk-bench")
					rec := httptest.NewRecorder()
					p.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						b.Errorf("status %d: %s", rec.Code, rec.Body)
						return
					}
				}
			})
		})
	}
}
