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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/engine/vllm"
	"github.com/strata-inference/strata/internal/router"
	"github.com/strata-inference/strata/internal/router/plugins/preciseprefix"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// countingSink forwards to a scheduler and counts the batches of each engine.
type countingSink struct {
	next    kvEventSink
	mu      sync.Mutex
	batches map[string]int
	kinds   map[scheduling.KVEventKind]int
	stored  map[string]int
}

func (c *countingSink) HandleKVEvents(endpoint string, events []scheduling.KVEvent) {
	c.mu.Lock()
	c.batches[endpoint]++
	for _, e := range events {
		c.kinds[e.Kind]++
		if e.Kind == scheduling.BlockStored {
			if c.stored == nil {
				c.stored = map[string]int{}
			}
			c.stored[endpoint] += len(e.BlockHashes)
		}
	}
	c.mu.Unlock()
	c.next.HandleKVEvents(endpoint, events)
}

func (c *countingSink) storedOn(endpoint string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stored[endpoint]
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
	ignore := goleak.IgnoreCurrent()
	// Runs last, after the replicas close. zmq4's PUB writer goroutines outlive Close (as in
	// internal/engine/vllm's TestMain).
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/go-zeromq/zmq4.(*pubMWriter).run"))
	})
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
	sink := &countingSink{next: sched, batches: map[string]int{}, kinds: map[scheduling.KVEventKind]int{}}
	reg := prometheus.NewRegistry()
	stop := startKVEventFeeds(context.Background(), engines, sink, reg, slog.New(slog.DiscardHandler))
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
	sink.mu.Lock()
	require.Positive(t, sink.kinds[scheduling.BlockRemoved], "the traffic overflows the 96-block caches: evictions are mirrored too")
	events := 0
	for _, n := range sink.kinds {
		events += n
	}
	sink.mu.Unlock()
	require.Equal(t, float64(events), testutil.ToFloat64(sumOver(t, reg, "strata_router_kv_events_total", "")))
	require.Zero(t, testutil.ToFloat64(sumOver(t, reg, "strata_router_kv_event_errors_total", "malformed")))
	// Joining a publisher mid-stream counts as a gap (the probes published before the
	// subscription took effect): at most one per engine here.
	require.LessOrEqual(t, testutil.ToFloat64(sumOver(t, reg, "strata_router_kv_event_errors_total", "gap")), float64(replicas))

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

// sumOver returns a gauge holding the sum of the named counter's series in reg, only those
// whose label "what" equals what when what is set.
func sumOver(t *testing.T, reg *prometheus.Registry, name, what string) prometheus.Gauge {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sum"})
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				match := what == ""
				for _, l := range m.GetLabel() {
					match = match || l.GetName() == "what" && l.GetValue() == what
				}
				if match {
					g.Add(m.GetCounter().GetValue())
				}
			}
		}
	}
	return g
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

// Through the real router: replicas publish KV events, the stack's feeds hand them to
// Router.HandleKVEvents, and a profile led by the precise prefix-cache scorer (tokenizing chat
// requests with the replicas' own Llama-3 vocabulary) sends every repeat of a conversation to the
// replica that holds it, where the engine serves its prompt from the prefix cache.
func TestPreciseScorerThroughRouter(t *testing.T) {
	zero := 0.0
	cfg := config.Default().Sim
	cfg.TimeScale = &zero
	cfg.NumGPUBlocks = 1024
	cfg.MaxModelLen = 4096
	cfg.MaxOutputTokens = 8
	cfg.KVEventsEndpoint = "tcp://127.0.0.1:0"
	model := cfg.ServedModelName
	if model == "" {
		model = cfg.Model
	}
	var (
		srvs    []*sim.Server
		engines []config.Engine
	)
	for i := range 3 {
		srv, err := sim.New(cfg, fmt.Sprintf("sim-%d", i), clock.RealClock{}, prometheus.NewRegistry())
		require.NoError(t, err)
		hs := httptest.NewServer(srv)
		t.Cleanup(func() { hs.Close(); srv.Close() })
		srvs = append(srvs, srv)
		engines = append(engines, config.Engine{Name: fmt.Sprintf("sim-%d", i), URL: hs.URL, Models: []string{model},
			KVEvents: srv.KVEventsEndpoint()})
	}
	rcfg := config.Default().Router
	rcfg.HealthInterval = config.Duration(50 * time.Millisecond)
	rcfg.ScrapeTimeout = config.Duration(10 * time.Second)
	rcfg.StaleAfter = config.Duration(time.Minute)
	ten := 10.0
	rcfg.Scheduler = &config.EndpointPickerConfig{
		Plugins: []config.PluginSpec{{Type: "precise-prefix-cache-scorer", Parameters: json.RawMessage(`{"tokenizer":"llama-3"}`)},
			{Type: "queue-scorer"}},
		SchedulingProfiles: []config.SchedulingProfile{{Name: "default", Plugins: []config.ProfilePlugin{
			{PluginRef: "precise-prefix-cache-scorer", Weight: &ten}, {PluginRef: "queue-scorer"}}}},
	}
	log := slog.New(slog.DiscardHandler)
	r, err := router.New(rcfg, engines, nil, nil, nil, log)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	require.Eventually(t, r.Ready, 10*time.Second, 20*time.Millisecond)

	sink := &countingSink{next: r, batches: map[string]int{}, kinds: map[scheduling.KVEventKind]int{}}
	stop := startKVEventFeeds(ctx, engines, sink, nil, log)
	defer stop()
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

	type usage struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			Details      struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	chat := func(system, question string) (served string, prompt, cached int) {
		body, _ := json.Marshal(map[string]any{"model": model, "max_tokens": 8, "messages": []map[string]string{
			{"role": "system", "content": system}, {"role": "user", "content": question}}})
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body)))
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		var u usage
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &u))
		return w.Header().Get("x-gateway-destination-endpoint-served"), u.Usage.PromptTokens, u.Usage.Details.CachedTokens
	}
	for c := range 6 {
		system := fmt.Sprintf("You are assistant number %d. ", c) + strings.Repeat(fmt.Sprintf("Rule %d: be exact and brief. ", c), 40)
		before := map[string]int{}
		for _, e := range engines {
			before[e.Name] = sink.storedOn(e.Name)
		}
		first, prompt, _ := chat(system, "What is the capital of Peru?")
		require.Contains(t, before, first, "served header")
		// The index learns of the first request's blocks before the next pick.
		require.Eventually(t, func() bool { return sink.storedOn(first)-before[first] >= prompt/16 }, 10*time.Second, 10*time.Millisecond)
		for q := range 3 {
			got, prompt, cached := chat(system, fmt.Sprintf("And what is the capital of country %d?", q))
			require.Equal(t, first, got, "conversation %d question %d", c, q)
			require.Greater(t, cached, prompt/2, "the engine serves the shared system prompt from its cache")
		}
	}
}
