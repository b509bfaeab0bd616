package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
		t, err := relayEvents(io.Discard, bytes.NewReader(in), true, func() {}, func(*tally) {})
		if err != nil || t.usage == nil {
			b.Fatal(err)
		}
	}
}
