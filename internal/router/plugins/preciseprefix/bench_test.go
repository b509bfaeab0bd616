package preciseprefix

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// benchSetup builds a profile of the model and health filters, the queue and KV-cache scorers
// and the precise prefix-cache scorer (weight 3), max-score picker, over n endpoints whose index
// holds 1M blocks in total: a 2048-token system prompt (128 blocks) on every endpoint, and the
// rest as distinct 1024-token chains (64 blocks) spread evenly. It returns the scheduler, the
// endpoints, request prompts (the system prompt + the first 1024 tokens of some endpoint's chain
// + 512 new tokens: 224 full blocks), and the heap bytes per indexed block measured while
// filling.
func benchSetup(b *testing.B, n int) (*scheduling.Scheduler, *Scorer, []*scheduling.Endpoint, [][]int, float64) {
	const indexBlocks = 1 << 20
	p := newScorer(b, nil, nil)
	s := scheduling.NewScheduler(
		[]scheduling.Filter{scheduling.ModelFilter{}, scheduling.HealthFilter{}},
		[]scheduling.WeightedScorer{{Scorer: scheduling.QueueScorer{}, Weight: 1}, {Scorer: scheduling.KVCacheScorer{}, Weight: 1}, {Scorer: p, Weight: 3}},
		scheduling.NewMaxScorePicker(rand.NewPCG(1, 1)))
	eps := make([]*scheduling.Endpoint, n)
	for i := range eps {
		eps[i] = &scheduling.Endpoint{Name: fmt.Sprintf("ep-%03d", i), Models: []string{"m"}, ModelsKnown: true, Healthy: true}
		eps[i].Metrics.Waiting, eps[i].InFlight, eps[i].Metrics.KVCacheUsage = i%4, i%3, float64(i%10)/10
	}
	rng := rand.New(rand.NewPCG(2, 2))
	randTokens := func(k int) []int {
		out := make([]int, k)
		for i := range out {
			out[i] = rng.IntN(128000)
		}
		return out
	}
	system := randTokens(2048)
	var hash uint64
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	perEP := (indexBlocks - n*128) / n
	chains := make([][]int, 0, 256)
	for _, e := range eps {
		hash += 1 << 32
		ev := storedChain(system, hash)
		p.HandleKVEvents(e.Name, []scheduling.KVEvent{ev})
		for k := 0; k+64 <= perEP; k += 64 {
			hash += 1 << 32
			toks := randTokens(1024)
			ev := storedChain(toks, hash)
			ev.HasParent, ev.ParentHash = true, hash-(1<<32)*uint64(k/64+1) // after the system prompt
			ev.ParentHash = (hash - (1<<32)*uint64(k/64+1)) + 127
			p.HandleKVEvents(e.Name, []scheduling.KVEvent{ev})
			if len(chains) < cap(chains) && k == 0 {
				chains = append(chains, toks)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := p.Index().Stats()
	if st.Orphans != 0 || st.Blocks < indexBlocks*9/10 {
		b.Fatalf("index not filled as intended: %+v", st)
	}
	prompts := make([][]int, 256)
	for i := range prompts {
		prompts[i] = slices.Concat(system, chains[i%len(chains)], randTokens(512))
	}
	return s, p, eps, prompts, float64(after.HeapAlloc-before.HeapAlloc) / float64(st.Blocks)
}

// BenchmarkPrecisePick is one decision of a profile with the precise prefix-cache scorer over
// 16, 64 and 256 endpoints and a 1M-block index, for a 3.5k-token prompt (224 full blocks)
// whose 128-block system prompt every endpoint holds and whose next 64 blocks one endpoint
// holds. Hashing the prompt's tokens is included. Reported: p99-ns (per decision) and
// bytes/block (heap per indexed block).
func BenchmarkPrecisePick(b *testing.B) {
	for _, n := range []int{16, 64, 256} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			s, _, eps, prompts, perBlock := benchSetup(b, n)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			lat := make([]time.Duration, 0, min(b.N, 1<<20))
			cpu := make([]time.Duration, 0, min(b.N, 1<<20))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				start, start0 := time.Now(), threadCPU()
				if _, err := s.Schedule(&scheduling.Request{Model: "m", TokenIDs: prompts[i%len(prompts)]}, eps); err != nil {
					b.Fatal(err)
				}
				if len(lat) < cap(lat) {
					cpu = append(cpu, threadCPU()-start0)
					lat = append(lat, time.Since(start))
				}
			}
			b.StopTimer()
			reportPercentiles(b, lat, cpu)
			b.ReportMetric(perBlock, "bytes/block")
		})
	}
}

// reportPercentiles reports the median and p99 of wall time and of thread CPU time per pick.
// On a shared machine the wall-time tail is mostly time spent descheduled; the CPU-time tail is
// the pick's own.
func reportPercentiles(b *testing.B, lat, cpu []time.Duration) {
	slices.Sort(lat)
	slices.Sort(cpu)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(cpu[len(cpu)/2].Nanoseconds()), "p50-cpu-ns")
	b.ReportMetric(float64(cpu[len(cpu)*99/100].Nanoseconds()), "p99-cpu-ns")
}

// BenchmarkPrecisePickUnderEvents is BenchmarkPrecisePick at 64 endpoints while another
// goroutine applies KV events at a steady, high rate: every millisecond a BlockStored of a
// 64-block chain on one endpoint (rotating) and the BlockRemoved of the previous one, 128k
// block events per second, about what 64 busy replicas publish. The events share the index's
// shards with the picks: the contention the sharded locks are there for. events/s is the block
// event rate achieved.
func BenchmarkPrecisePickUnderEvents(b *testing.B) {
	s, p, eps, prompts, _ := benchSetup(b, 64)
	rng := rand.New(rand.NewPCG(9, 9))
	var stop atomic.Bool
	var events atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		hash := uint64(1) << 62
		var prev scheduling.KVEvent
		for i := 0; !stop.Load(); i++ {
			<-tick.C
			ep := eps[i%len(eps)].Name
			toks := make([]int, 1024)
			for j := range toks {
				toks[j] = rng.IntN(128000)
			}
			ev := storedChain(toks, hash)
			p.HandleKVEvents(ep, []scheduling.KVEvent{ev})
			if i > 0 {
				p.HandleKVEvents(eps[(i-1)%len(eps)].Name, []scheduling.KVEvent{{Kind: scheduling.BlockRemoved, BlockHashes: prev.BlockHashes}})
			}
			prev = ev
			events.Add(128)
			hash += 1 << 10
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	cpu := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ReportAllocs()
	b.ResetTimer()
	start0 := time.Now()
	for i := range b.N {
		start, c0 := time.Now(), threadCPU()
		if _, err := s.Schedule(&scheduling.Request{Model: "m", TokenIDs: prompts[i%len(prompts)]}, eps); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			cpu = append(cpu, threadCPU()-c0)
			lat = append(lat, time.Since(start))
		}
	}
	b.StopTimer()
	stop.Store(true)
	<-done
	reportPercentiles(b, lat, cpu)
	b.ReportMetric(float64(events.Load())/time.Since(start0).Seconds(), "events/s")
}

// BenchmarkApplyStored is the cost of indexing one BlockStored of 64 blocks (1024 tokens) on an
// endpoint, then removing it.
func BenchmarkApplyStored(b *testing.B) {
	p := newScorer(b, nil, nil)
	ev := storedChain(tokens(0, 64*bs), 1)
	rm := scheduling.KVEvent{Kind: scheduling.BlockRemoved, BlockHashes: ev.BlockHashes}
	b.ReportAllocs()
	for b.Loop() {
		p.HandleKVEvents("a", []scheduling.KVEvent{ev})
		p.HandleKVEvents("a", []scheduling.KVEvent{rm})
	}
}

// BenchmarkIndexScore is kvindex.Index.Score alone (keys precomputed) in the setting of
// BenchmarkPrecisePick.
func BenchmarkIndexScore(b *testing.B) {
	for _, n := range []int{16, 64, 256} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			_, p, eps, prompts, _ := benchSetup(b, n)
			names := make([]string, len(eps))
			for i, e := range eps {
				names[i] = e.Name
			}
			keys := make([][]uint64, len(prompts))
			for i, t := range prompts {
				keys[i] = p.Index().Keys(t, "", nil)
			}
			scores := make([]float64, len(eps))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				p.Index().Score(keys[i%len(keys)], names, scores)
			}
		})
	}
}

// BenchmarkKeys is hashing a 3.5k-token prompt into its 224 block keys.
func BenchmarkKeys(b *testing.B) {
	p := newScorer(b, nil, nil)
	t := tokens(0, 3584)
	dst := make([]uint64, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		dst = p.Index().Keys(t, "", dst[:0])
	}
}
