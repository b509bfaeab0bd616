package plugins

import (
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// load parses a YAML file over the defaults and builds its scheduler, as the router does at start.
func load(t *testing.T, path string) (*scheduling.Scheduler, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	cfg := config.Default()
	if err := config.Parse(b, cfg); err != nil {
		return nil, err
	}
	return Build(cfg.Router, rand.NewPCG(1, 2))
}

// Each testdata/*.bad.yaml is refused at start with the message in the table, naming the plugin
// and the field; a new bad file without an entry fails the test.
func TestBadSchedulerConfigs(t *testing.T) {
	want := map[string]string{
		"unknown_type":              `plugins[1] "quue-scorer" (quue-scorer): type: unknown plugin type "quue-scorer" (want one of decode-filter, health-filter, in-flight-tokens-scorer,`,
		"unknown_parameter":         `plugins[0] "prefix" (prefix-cache-scorer): parameters: unknown field "hashBlockSize"`,
		"bad_parameter_value":       `plugins[1] "prefix" (prefix-cache-scorer): parameters.blockSize: must be positive, got 0`,
		"bad_parameter_type":        `plugins[0] "session-affinity-scorer" (session-affinity-scorer): parameters.maxSessions: want int, got string`,
		"unknown_ref":               `schedulingProfiles[0].plugins[1].pluginRef: unknown plugin "kv-cache-utilization-scorer" (declare it under plugins)`,
		"weight_on_picker":          `schedulingProfiles[0].plugins[1].weight: "random-picker" is not a scorer; only scorers take a weight`,
		"negative_weight":           `schedulingProfiles[0].plugins[0].weight: must be in [0, 1e6], got -1`,
		"two_pickers":               `schedulingProfiles[0].plugins[1].pluginRef: "max-score-picker" is a second picker; a profile has one`,
		"duplicate_name":            `plugins[1] "load" (running-requests-scorer): name: "load" used twice`,
		"no_profile":                `schedulingProfiles: at least one profile is required`,
		"missing_type":              `plugins[0]: type: required (one of decode-filter, health-filter,`,
		"nohitlru_without_prefix":   `plugins[0] "no-hit-lru-scorer" (no-hit-lru-scorer): parameters.prefixPluginName: no plugin "prefix-cache-scorer" declared before this one`,
		"unknown_profile_key":       `unknown field "wieght"`,
		"precise_block_size":        `plugins[1] "precise" (precise-prefix-cache-scorer): parameters.blockSizeTokens: must be positive, got 0`,
		"precise_max_blocks":        `plugins[1] "precise" (precise-prefix-cache-scorer): parameters.maxBlocksPerEndpoint: must be positive, got -1`,
		"precise_medium_weight":     `plugins[1] "precise" (precise-prefix-cache-scorer): parameters.mediumWeights.CPU: must be in [0, 1] under a non-empty medium name, got 1.5`,
		"precise_no_media":          `plugins[1] "precise" (precise-prefix-cache-scorer): parameters.mediumWeights: want 1 to 4 media, got 0`,
		"precise_tokenizer":         `plugins[1] "precise" (precise-prefix-cache-scorer): parameters.tokenizer: tokenizer: unknown tokenizer "llama-2"`,
		"precise_unknown_parameter": `plugins[1] "precise" (precise-prefix-cache-scorer): parameters: unknown field "blockSize"`,
		"prefix_tokenizer":          `plugins[1] "prefix" (prefix-cache-scorer): parameters.tokenizer: tokenizer: unknown tokenizer "gpt-2"`,
		"prefix_block_size_tokens":  `plugins[1] "prefix" (prefix-cache-scorer): parameters.blockSizeTokens: must be positive, got 0`,
		"lora_threshold":            `plugins[1] "lora" (lora-affinity-filter): parameters.threshold: must be in [0, 1], got 2`,
		"lora_scorer_parameter":     `plugins[1] "lora" (lora-affinity-scorer): parameters: unknown field "threshold"`,
		"role_value":                `plugins[1] "role" (role-filter): parameters.role: must be "prefill", "decode" or "both", got "encode"`,
		"prefill_filter_parameter":  `plugins[1] "prefill" (prefill-filter): parameters: unknown field "role"`,
		"saturation_queue":          `plugins[1] "saturation" (saturation-filter): parameters.queueDepthThreshold: must be >= 0, got -1`,
		"saturation_kv":             `plugins[1] "saturation" (saturation-filter): parameters.kvCacheUtilThreshold: must be in [0, 1], got 1.5`,
		"saturation_stale":          `plugins[1] "saturation" (saturation-filter): parameters.dropStale: want bool, got string`,
	}
	files, err := filepath.Glob("testdata/*.bad.yaml")
	require.NoError(t, err)
	require.Len(t, files, len(want))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bad.yaml")
		t.Run(name, func(t *testing.T) {
			msg, ok := want[name]
			require.True(t, ok, "no expected message for %s", f)
			_, err := load(t, f)
			require.Error(t, err)
			require.Contains(t, err.Error(), msg)
		})
	}
}

func TestLLMDStyleConfig(t *testing.T) {
	s, err := load(t, "testdata/llmd.yaml")
	require.NoError(t, err)
	require.Equal(t, "filters=[model-filter health-filter] scorers=[queue-scorer:2 kv-cache-utilization-scorer:2 "+
		"prefix-cache-scorer:3 session-affinity-scorer:1 no-hit-lru-scorer:0.5] picker=max-score-picker", s.String())
}

func TestKVEventsAndDisaggregationConfig(t *testing.T) {
	s, err := load(t, "testdata/disagg.yaml")
	require.NoError(t, err)
	require.Equal(t, "filters=[model-filter health-filter decode-filter saturation-filter lora-affinity-filter] "+
		"scorers=[lora-affinity-scorer:1 queue-scorer:1 precise-prefix-cache-scorer:3] picker=max-score-picker", s.String())
}

// The default profile is the router's behaviour before plugin configuration: the flat keys of
// config.Router build it, and overriding them changes it.
func TestDefaultProfile(t *testing.T) {
	s, err := Build(config.Default().Router, nil)
	require.NoError(t, err)
	require.Equal(t, "filters=[model-filter health-filter] scorers=[queue-scorer:1 kv-cache-utilization-scorer:1 prefix-cache-scorer:3] picker=max-score-picker", s.String())

	r := config.Default().Router
	zero, five := 0.0, 5.0
	r.Weights.KVCache, r.Weights.Prefix = &zero, &five
	s, err = Build(r, nil)
	require.NoError(t, err)
	require.Equal(t, "filters=[model-filter health-filter] scorers=[queue-scorer:1 prefix-cache-scorer:5] picker=max-score-picker", s.String())

	// Unset weights and sizes (a zero config.Router) take the defaults.
	s, err = Build(config.Router{}, nil)
	require.NoError(t, err)
	require.Contains(t, s.String(), "prefix-cache-scorer:3")
}

// Every registered type builds with empty parameters (all have defaults); no-hit-lru and
// predicted-latency are pointed at the prefix plugin declared first.
func TestEveryTypeBuildsWithDefaults(t *testing.T) {
	reg := Registry()
	for _, typ := range reg.Types() {
		t.Run(typ, func(t *testing.T) {
			cfg := config.EndpointPickerConfig{
				Plugins:            []config.PluginSpec{{Type: "prefix-cache-scorer", Name: "p"}, {Type: typ, Parameters: []byte(`{}`)}},
				SchedulingProfiles: []config.SchedulingProfile{{Name: "x", Plugins: []config.ProfilePlugin{{PluginRef: typ}}}},
			}
			if typ == "no-hit-lru-scorer" || typ == "predicted-latency-scorer" {
				cfg.Plugins[1].Parameters = []byte(`{"prefixPluginName":"p"}`)
			}
			if typ == "prefix-cache-scorer" {
				cfg.Plugins[1].Name = "q" // a second prefix-cache-scorer instance under its own name
				cfg.SchedulingProfiles[0].Plugins[0].PluginRef = "q"
			}
			s, err := scheduling.Build(cfg, reg, rand.NewPCG(3, 4))
			require.NoError(t, err)
			require.Contains(t, s.String(), typ)
		})
	}
}

func FuzzDecodeParameters(f *testing.F) {
	f.Add([]byte(`{"blockSize":64,"lruCapacityPerServer":10}`))
	f.Add([]byte(`{"blockSize":"x"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, typ := range []string{"prefix-cache-scorer", "session-affinity-scorer", "queue-scorer", "precise-prefix-cache-scorer"} {
			_, _ = Registry()[typ]("x", b, nopHandle{})
		}
	})
}

type nopHandle struct{}

func (nopHandle) Plugin(string) (scheduling.Plugin, bool) { return nil, false }
func (nopHandle) Rand() rand.Source                       { return rand.NewPCG(1, 1) }
func (nopHandle) Logger() *slog.Logger                    { return slog.New(slog.DiscardHandler) }

// Any YAML the config accepts either builds a scheduler or fails with an error: never a panic.
func FuzzSchedulerConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := config.Default()
		if config.Parse(b, cfg) != nil {
			return
		}
		s, err := Build(cfg.Router, rand.NewPCG(1, 1))
		if err == nil {
			require.NotEmpty(t, s.String())
		}
	})
}

// The no-hit-LRU and predicted-latency scorers can take their prefix estimate from the precise
// (KV-event) scorer: a request whose blocks an endpoint reported is not cold, and its work is
// lowest there.
func TestPreciseScorerFeedsOtherScorers(t *testing.T) {
	cfg := config.EndpointPickerConfig{
		Plugins: []config.PluginSpec{{Type: "precise-prefix-cache-scorer", Name: "precise"},
			{Type: "no-hit-lru-scorer", Parameters: []byte(`{"prefixPluginName":"precise"}`)},
			{Type: "predicted-latency-scorer", Parameters: []byte(`{"prefixPluginName":"precise"}`)}},
		SchedulingProfiles: []config.SchedulingProfile{{Name: "x", Plugins: []config.ProfilePlugin{
			{PluginRef: "precise"}, {PluginRef: "no-hit-lru-scorer"}, {PluginRef: "predicted-latency-scorer"}}}},
	}
	s, err := scheduling.Build(cfg, Registry(), rand.NewPCG(1, 1))
	require.NoError(t, err)
	tokens := make([]int, 64)
	for i := range tokens {
		tokens[i] = 100 + i
	}
	s.HandleKVEvents("b", []scheduling.KVEvent{{Kind: scheduling.BlockStored, BlockHashes: []uint64{1, 2, 3, 4},
		TokenIDs: tokens, BlockSize: 16}})
	e := eps("a", "b", "c")
	for range 5 {
		got, err := s.Schedule(&scheduling.Request{Model: "m", TokenIDs: tokens, PromptTokens: 64}, e)
		require.NoError(t, err)
		require.Equal(t, "b", got.Name)
	}
}
