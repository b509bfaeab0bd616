package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/engine/vllm"
	"github.com/strata-inference/strata/internal/router/plugins/preciseprefix"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// countingSink forwards to a scheduler and counts the batches of each engine.
type countingSink struct {
	next    kvEventSink
	mu      sync.Mutex
	batches map[string]int
}

func (c *countingSink) HandleKVEvents(endpoint string, events []scheduling.KVEvent) {
	c.mu.Lock()
	c.batches[endpoint]++
	c.mu.Unlock()
	c.next.HandleKVEvents(endpoint, events)
}

func (c *countingSink) seen(endpoint string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.batches[endpoint] > 0
}

// End to end on simulated vLLM replicas publishing KV events over ZMQ: after traffic (with
// evictions: each replica has 96 blocks), the router-side index holds exactly each replica's
// cached block set, and the precise prefix-cache scorer sends a repeated long prompt to the
// replica that served it.
func TestKVEventFeedsMirrorReplicaCaches(t *testing.T) {
	zero := 0.0
	cfg := config.Default().Sim
	cfg.TimeScale = &zero
	cfg.NumGPUBlocks = 96
	cfg.MaxModelLen = 1024
	cfg.MaxOutputTokens = 4
	cfg.KVEventsEndpoint = "tcp://127.0.0.1:0"
	model := cfg.ServedModelName
	if model == "" {
		model = cfg.Model
	}
	const replicas = 3
	var (
		srvs    []*sim.Server
		engines []config.Engine
	)
	for i := range replicas {
		srv, err := sim.New(cfg, fmt.Sprintf("sim-%d", i), clock.RealClock{}, prometheus.NewRegistry())
		require.NoError(t, err)
		hs := httptest.NewServer(srv)
		t.Cleanup(func() { hs.Close(); srv.Close() })
		srvs = append(srvs, srv)
		engines = append(engines, config.Engine{Name: fmt.Sprintf("sim-%d", i), URL: hs.URL, KVEvents: srv.KVEventsEndpoint()})
	}

	scorer, err := preciseprefix.New(preciseprefix.Options{BlockSizeTokens: 16, MaxBlocksPerEndpoint: 1 << 16})
	require.NoError(t, err)
	sched := scheduling.NewScheduler(nil, []scheduling.WeightedScorer{{Scorer: scorer, Weight: 1}},
		scheduling.NewMaxScorePicker(rand.NewPCG(1, 1)))
	sink := &countingSink{next: sched, batches: map[string]int{}}
	stop := startKVEventFeeds(context.Background(), engines, sink, slog.New(slog.DiscardHandler))
	defer stop()

	// ZMQ PUB drops what it sends before a subscription takes effect: reset the (empty) caches
	// until each feed has delivered the AllBlocksCleared.
	require.Eventually(t, func() bool {
		all := true
		for i, e := range engines {
			if !sink.seen(e.Name) {
				srvs[i].ResetPrefixCache()
				all = false
			}
		}
		return all
	}, 20*time.Second, 50*time.Millisecond)

	complete := func(i int, prompt []int) {
		body, _ := json.Marshal(map[string]any{"model": model, "prompt": prompt, "max_tokens": 4})
		resp, err := http.Post(engines[i].URL+"/v1/completions", "application/json", bytes.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	}
	rng := rand.New(rand.NewPCG(7, 7))
	families := make([][]int, 6) // shared heads, as system prompts
	for f := range families {
		families[f] = make([]int, 16*(2+f))
		for j := range families[f] {
			families[f][j] = 1000 + rng.IntN(100000)
		}
	}
	for range 60 {
		p := append([]int(nil), families[rng.IntN(len(families))]...)
		for range 16 * rng.IntN(6) {
			p = append(p, 1000+rng.IntN(100000))
		}
		complete(rng.IntN(replicas), p)
	}
	mirrored := func() bool {
		for i, e := range engines {
			want := srvs[i].CachedBlockHashes()
			got := scorer.Index().EngineHashes(e.Name, scheduling.MediumGPU)
			if len(want) == 0 || fmt.Sprint(want) != fmt.Sprint(got) {
				return false
			}
		}
		return true
	}
	require.Eventually(t, mirrored, 20*time.Second, 20*time.Millisecond, "index never matched the replicas' caches")
	for i, e := range engines {
		require.Equal(t, srvs[i].CachedBlockHashes(), scorer.Index().EngineHashes(e.Name, scheduling.MediumGPU))
	}
	require.Zero(t, scorer.Index().Stats().Orphans)

	// A long prompt served by replica 1 goes back to replica 1.
	long := make([]int, 16*30+7)
	for j := range long {
		long[j] = 120000 - j
	}
	complete(1, long)
	require.Eventually(t, mirrored, 20*time.Second, 20*time.Millisecond)
	eps := make([]*scheduling.Endpoint, replicas)
	for i, e := range engines {
		eps[i] = &scheduling.Endpoint{Name: e.Name}
	}
	scores := make([]float64, replicas)
	scorer.Score(&scheduling.Request{TokenIDs: long}, eps, scores)
	require.Equal(t, 1.0, scores[1], "all 30 full blocks are cached on sim-1")
	for range 5 {
		got, err := sched.Schedule(&scheduling.Request{TokenIDs: long}, eps)
		require.NoError(t, err)
		require.Equal(t, "sim-1", got.Name)
	}
}

// Decoded vLLM events become scheduler events: GPU by default, LoRA ids named, other KV-cache
// groups left out.
func TestConvertKVEvents(t *testing.T) {
	in := []vllm.Event{
		{Type: vllm.BlockStored, BlockHashes: []vllm.BlockHash{1, 2}, ParentBlockHash: 9, HasParent: true, TokenIDs: []int{1, 2, 3, 4}, BlockSize: 2},
		{Type: vllm.BlockStored, BlockHashes: []vllm.BlockHash{3}, TokenIDs: []int{5, 6}, BlockSize: 2, LoRAID: 7, Medium: "CPU"},
		{Type: vllm.BlockRemoved, BlockHashes: []vllm.BlockHash{3}, GroupIdx: 1},
		{Type: vllm.BlockRemoved, BlockHashes: []vllm.BlockHash{1}, LoRAName: "sql"},
		{Type: vllm.AllBlocksCleared},
	}
	require.Equal(t, []scheduling.KVEvent{
		{Kind: scheduling.BlockStored, BlockHashes: []uint64{1, 2}, ParentHash: 9, HasParent: true, TokenIDs: []int{1, 2, 3, 4}, BlockSize: 2, Medium: "GPU"},
		{Kind: scheduling.BlockStored, BlockHashes: []uint64{3}, TokenIDs: []int{5, 6}, BlockSize: 2, LoRAName: "lora-id:7", Medium: "CPU"},
		{Kind: scheduling.BlockRemoved, BlockHashes: []uint64{1}, LoRAName: "sql", Medium: "GPU"},
		{Kind: scheduling.AllBlocksCleared, BlockHashes: []uint64{}, Medium: "GPU"},
	}, convertKVEvents(in))
}
