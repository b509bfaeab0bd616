package router

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// The usage scanner's cost on a relayed stream: a 256-token SSE answer (~40 KB) read in 4 KB
// pieces, against the same copy without scanning.
func BenchmarkUsageScan(b *testing.B) {
	var sb strings.Builder
	for i := range 256 {
		sb.WriteString(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok`)
		sb.WriteString(strings.Repeat("x", i%7))
		sb.WriteString("\"},\"finish_reason\":null}]}\n\n")
	}
	sb.WriteString(usageSSE)
	body := sb.String()
	buf := make([]byte, 4<<10)
	for _, scan := range []bool{false, true} {
		b.Run(map[bool]string{false: "copy", true: "scan"}[scan], func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for range b.N {
				var r io.ReadCloser = io.NopCloser(strings.NewReader(body))
				var s *usageScanner
				if scan {
					s = newUsageScanner(r)
					r = s
				}
				if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf); err != nil {
					b.Fatal(err)
				}
				if scan {
					if _, cached, ok := s.result(); !ok || cached != 64 {
						b.Fatal("usage not found")
					}
				}
			}
		})
	}
}

// A decision with the flow-control saturation check and the prefix-hit estimate (what the router
// adds to the scheduler's own pick), 16 endpoints, 4 KB chat prompts; and a P/D decision (decode
// and prefill profiles) over 8 prefill + 8 decode endpoints.
func BenchmarkDecide(b *testing.B) {
	b.Run("saturation-check", func(b *testing.B) {
		r, reqs := benchRouter(b)
		r.cfg.FlowControl.Saturation = config.Saturation{QueueDepthThreshold: 1000, KVCacheUtilThreshold: 1}
		benchDecide(b, r, reqs, true)
	})
	b.Run("pd", func(b *testing.B) {
		var engines []config.Engine
		for i := range 16 {
			role := scheduling.RolePrefill
			if i%2 == 1 {
				role = scheduling.RoleDecode
			}
			engines = append(engines, config.Engine{Name: "ep-" + string(rune('a'+i)), URL: "http://10.0.0.1:8000", Models: []string{"m"}, Role: role})
		}
		cfg := config.Router{Scheduler: pdSchedulerConfig(0)}
		r, err := New(cfg, engines, nil, nil, nil, nil)
		require.NoError(b, err)
		for _, ep := range r.endpoints {
			ep.setHealthy(true)
			ep.setMetrics(scheduling.Metrics{Running: 4}, r.clk.Now())
		}
		_, reqs := benchRouter(b)
		benchDecide(b, r, reqs, false)
	})
}

func benchDecide(b *testing.B, r *Router, reqs []*openai.InferenceRequest, check bool) {
	sreqs := make([]scheduling.Request, len(reqs))
	for i, ir := range reqs {
		parts := promptParts(ir)
		sreqs[i] = scheduling.Request{Model: ir.Model, PromptParts: parts, PromptTokens: estimateTokens(parts)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		sreq := sreqs[i%len(sreqs)]
		d, err := r.decide(&call{sreq: &sreq, fields: map[string]json.RawMessage{}}, check, reasonFirst)
		if err != nil {
			b.Fatal(err)
		}
		r.release(d)
	}
}
