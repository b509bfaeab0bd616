package plugins

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// BenchmarkPickEndpoints is one decision of the default profile (model and health filters, queue
// + KV-cache + approximate prefix scorers, max-score picker) over 16, 64 and 256 endpoints whose
// prefix LRUs together index 1M blocks (1M / endpoints each), for a 4 KB chat prompt whose 2 KB
// system prompt every endpoint holds. Hashing the prompt is included. Reported beyond ns/op:
// p99-ns (per-decision p99) and bytes/block (heap per indexed block, measured while filling).
func BenchmarkPickEndpoints(b *testing.B) {
	const indexBlocks = 1 << 20
	for _, n := range []int{16, 64, 256} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			perEP := indexBlocks / n
			prefix, err := scheduling.NewPrefixScorer(64, perEP)
			if err != nil {
				b.Fatal(err)
			}
			s := scheduling.NewScheduler(
				[]scheduling.Filter{scheduling.ModelFilter{}, scheduling.HealthFilter{}},
				[]scheduling.WeightedScorer{{Scorer: scheduling.QueueScorer{}, Weight: 1}, {Scorer: scheduling.KVCacheScorer{}, Weight: 1}, {Scorer: prefix, Weight: 3}},
				scheduling.NewMaxScorePicker(rand.NewPCG(1, 1)))
			e := eps(make([]string, n)...)
			for i, x := range e {
				x.Name = fmt.Sprintf("ep-%03d", i)
				x.Metrics.Waiting, x.InFlight, x.Metrics.KVCacheUsage = i%4, i%3, float64(i%10)/10
			}
			rng := rand.New(rand.NewPCG(2, 2))
			text := func(n int) string {
				var sb strings.Builder
				for sb.Len() < n {
					fmt.Fprintf(&sb, "%d ", rng.Uint64())
				}
				return sb.String()[:n]
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for _, x := range e { // fill each LRU with perEP distinct blocks, 64 per 4 KB prompt
				for k := 0; k < perEP; k += 64 {
					prefix.PreRequest(&scheduling.Request{PromptParts: []string{text(4096)}}, x)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			shared := "system: " + text(2048)
			for _, x := range e {
				prefix.PreRequest(&scheduling.Request{PromptParts: []string{shared}}, x)
			}
			prompts := make([][]string, 256)
			for i := range prompts {
				prompts[i] = []string{shared, "user: " + text(2048)}
			}
			lat := make([]time.Duration, 0, min(b.N, 1<<20))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				if _, err := s.Schedule(&scheduling.Request{Model: "m", PromptParts: prompts[i%len(prompts)]}, e); err != nil {
					b.Fatal(err)
				}
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(start))
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(indexBlocks), "bytes/block")
		})
	}
}
