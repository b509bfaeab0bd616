package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

// BenchmarkAdmission is the per-request cost of admission: key parsing, HMAC, the cached key
// lookup with its constant-time compare, and both GCRA limits.
func BenchmarkAdmission(b *testing.B) {
	g, _, key := cannedGateway(b, &canned{status: 200})
	h := http.Header{"Authorization": {"Bearer " + key}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p, err := g.auth.authenticate(ctx, h)
		if err != nil {
			b.Fatal(err)
		}
		if a, _ := g.backend.admitRates(ctx, p.policy.rateBucket, 1<<30, 1<<40, 300, true); a.rejected != "" {
			b.Fatal(a.rejected)
		}
	}
}

// BenchmarkAdmissionParallel is BenchmarkAdmission from every CPU at once (one tenant: the
// limiter's lock is shared).
func BenchmarkAdmissionParallel(b *testing.B) {
	g, _, key := cannedGateway(b, &canned{status: 200})
	h := http.Header{"Authorization": {"Bearer " + key}}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := g.auth.authenticate(ctx, h)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = g.backend.admitRates(ctx, p.policy.rateBucket, 1<<30, 1<<40, 300, true)
		}
	})
}

// BenchmarkChatNonStream is a whole small chat completion through the gateway over an in-memory
// next layer: admission, forwarding, and the durable usage write (SQLite, WAL) that dominates.
func BenchmarkChatNonStream(b *testing.B) {
	hdr := http.Header{"Content-Type": {"application/json"}, http.CanonicalHeaderKey(openai.HeaderEndpointServed): {engineServed}}
	g, _, key := cannedGateway(b, &canned{status: 200, header: hdr, body: vllmBody(openai.PathChatCompletions, "m1", openai.Usage{PromptTokens: 17, CompletionTokens: 3, TotalTokens: 20})})
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("POST", openai.PathChatCompletions, strings.NewReader(simpleChat))
		r.Header.Set("Authorization", "Bearer "+key)
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

// BenchmarkRelayEvents is the SSE metering relay over a 256-chunk vLLM stream with the forced
// usage chunk stripped; bytes/s is the stream's size.
func BenchmarkRelayEvents(b *testing.B) {
	var stream bytes.Buffer
	chunks := vllmChunks(openai.PathChatCompletions, "m1")
	for i := range 256 {
		stream.WriteString("data: " + chunks[1+i%2] + "\n\n")
	}
	stream.WriteString(`data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":256,"total_tokens":261}}` + "\n\n")
	stream.WriteString("data: [DONE]\n\n")
	in := stream.Bytes()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		t, err := relayEvents(io.Discard, bytes.NewReader(in), relayOpts{}, func() {}, func(*tally) error { return nil })
		if err != nil || t.usage == nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdmitFull is the whole admission of one request under a policy with every limit on
// (rates, concurrency, monthly tokens, monthly spend) and its settlement, per backend: the
// memory backend's cost, and the Redis backend's round trips to the local Redis.
func BenchmarkAdmitFull(b *testing.B) {
	for _, backendName := range []string{"memory", "redis"} {
		b.Run(backendName, func(b *testing.B) {
			cfg := tierConfig(map[string]config.Policy{"all": {RPM: ptr64(1 << 40), TPM: ptr64(1 << 40), MaxConcurrent: ptr64(1 << 20),
				MonthlyTokens: ptr64(1 << 50), MonthlySpendMicros: ptr64(1 << 50)}}, "all")
			if backendName == "redis" {
				_, prefix := redisForTest(b)
				cfg.Admission.Backend, cfg.Admission.RedisURL, cfg.Admission.KeyPrefix = "redis", testRedisURL, prefix
			}
			st := openTestStore(b)
			a := NewAdmin(st, testSecret)
			ctx := context.Background()
			_, err := a.CreateTenant(ctx, "t", 0, 0, nil)
			require.NoError(b, err)
			key, _, err := a.CreateKey(ctx, "t", "")
			require.NoError(b, err)
			_, err = a.SetPrice(ctx, "m1", time.Now().Add(-time.Hour), 1_000_000, 100_000, 2_000_000)
			require.NoError(b, err)
			g, err := New(cfg, st, testSecret, &canned{status: 200}, nil, nil, nil)
			require.NoError(b, err)
			defer g.Close()
			p, err := g.auth.authenticate(ctx, http.Header{"Authorization": {"Bearer " + key}})
			require.NoError(b, err)
			h := http.Header{}
			b.ReportAllocs()
			for b.Loop() {
				tk, _, err := g.admit(ctx, h, p, "m1", 300, true, 256, 44)
				if err != nil {
					b.Fatal(err)
				}
				tk.settle(ctx, 40, 10, 200)
			}
		})
	}
}
