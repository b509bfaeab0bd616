package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

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

// BenchmarkRelayEvents is the SSE metering relay over a 256-chunk vLLM stream carrying
// continuous usage on every chunk, all of it stripped (a client that asked for no usage), and the
// forced usage chunk dropped; bytes/s is the stream's size.
func BenchmarkRelayEvents(b *testing.B) {
	var stream bytes.Buffer
	chunks := withChunkUsage(openai.PathChatCompletions, vllmChunks(openai.PathChatCompletions, "m1"), 5) // continuous usage, stripped
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
// memory backend's cost, and the Redis backend's round trips to the local Redis: "redis-steps"
// one call per check (5 round trips to admit, 4 to settle), "redis" the one-round-trip admission
// (admitAllScript) with the same settlement.
func BenchmarkAdmitFull(b *testing.B) {
	for _, backendName := range []string{"memory", "redis-steps", "redis"} {
		b.Run(backendName, func(b *testing.B) {
			cfg := tierConfig(map[string]config.Policy{"all": {RPM: ptr64(1 << 40), TPM: ptr64(1 << 40), MaxConcurrent: ptr64(1 << 20),
				MonthlyTokens: ptr64(1 << 50), MonthlySpendMicros: ptr64(1 << 50)}}, "all")
			if backendName != "memory" {
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
			g.stepAdmission = backendName == "redis-steps"
			p, err := g.auth.authenticate(ctx, http.Header{"Authorization": {"Bearer " + key}})
			require.NoError(b, err)
			h := http.Header{}
			rt := countRoundTrips(g)
			b.ReportAllocs()
			for b.Loop() {
				tk, _, err := g.admit(ctx, h, p, "m1", 300, true, 256, 44)
				if err != nil {
					b.Fatal(err)
				}
				tk.settle(ctx, 40, 10, 200)
			}
			rt.report(b)
		})
	}
}

// BenchmarkAdmitOnly is the admission alone (no settlement) under every limit, per path: the
// round trips admission adds to a request's latency before it is forwarded. Tickets are
// cancelled outside the timer.
func BenchmarkAdmitOnly(b *testing.B) {
	for _, mode := range []string{"redis-steps", "redis"} {
		b.Run(mode, func(b *testing.B) {
			cfg := tierConfig(map[string]config.Policy{"all": {RPM: ptr64(1 << 40), TPM: ptr64(1 << 40), MaxConcurrent: ptr64(1 << 20),
				MonthlyTokens: ptr64(1 << 50), MonthlySpendMicros: ptr64(1 << 50)}}, "all")
			_, prefix := redisForTest(b)
			cfg.Admission.Backend, cfg.Admission.RedisURL, cfg.Admission.KeyPrefix = "redis", testRedisURL, prefix
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
			g.stepAdmission = mode == "redis-steps"
			p, err := g.auth.authenticate(ctx, http.Header{"Authorization": {"Bearer " + key}})
			require.NoError(b, err)
			h := http.Header{}
			rt := countRoundTrips(g)
			b.ReportAllocs()
			for b.Loop() {
				rt.resume()
				tk, _, err := g.admit(ctx, h, p, "m1", 300, true, 256, 44)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				rt.pause()
				tk.cancel(ctx)
				b.StartTimer()
			}
			rt.report(b)
		})
	}
}

// roundTrips counts the commands a gateway's Redis client sends (each EVALSHA, GET, ... is one
// round trip; a pipeline counts as one), for the roundtrips/op metric of the benchmarks.
type roundTrips struct {
	n      atomic.Int64
	paused atomic.Bool
	start  int64
}

func countRoundTrips(g *Gateway) *roundTrips {
	rt := &roundTrips{}
	if rb, ok := g.backend.(*redisBackend); ok {
		rb.rdb.AddHook(rt)
	}
	return rt
}

func (rt *roundTrips) pause()  { rt.paused.Store(true) }
func (rt *roundTrips) resume() { rt.paused.Store(false) }

func (rt *roundTrips) report(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
	}
}

func (rt *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (rt *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !rt.paused.Load() {
			rt.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (rt *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !rt.paused.Load() {
			rt.n.Add(1)
		}
		return next(ctx, cmds)
	}
}
