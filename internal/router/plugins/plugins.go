// Package plugins is the set of scheduler plugins Strata ships, by type name, and the default
// profile. Each plugin lives in its own package below, with a README giving its type name,
// parameters and an example configuration.
package plugins

import (
	"encoding/json"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/router/plugins/healthfilter"
	"github.com/strata-inference/strata/internal/router/plugins/inflighttokens"
	"github.com/strata-inference/strata/internal/router/plugins/kvcachescorer"
	"github.com/strata-inference/strata/internal/router/plugins/loraaffinity"
	"github.com/strata-inference/strata/internal/router/plugins/maxscorepicker"
	"github.com/strata-inference/strata/internal/router/plugins/modelfilter"
	"github.com/strata-inference/strata/internal/router/plugins/nohitlru"
	"github.com/strata-inference/strata/internal/router/plugins/poweroftwo"
	"github.com/strata-inference/strata/internal/router/plugins/preciseprefix"
	"github.com/strata-inference/strata/internal/router/plugins/predictedlatency"
	"github.com/strata-inference/strata/internal/router/plugins/prefixscorer"
	"github.com/strata-inference/strata/internal/router/plugins/queuescorer"
	"github.com/strata-inference/strata/internal/router/plugins/randompicker"
	"github.com/strata-inference/strata/internal/router/plugins/rolefilter"
	"github.com/strata-inference/strata/internal/router/plugins/roundrobin"
	"github.com/strata-inference/strata/internal/router/plugins/runningrequests"
	"github.com/strata-inference/strata/internal/router/plugins/saturationfilter"
	"github.com/strata-inference/strata/internal/router/plugins/sessionaffinity"
	"github.com/strata-inference/strata/internal/router/plugins/weightedrandom"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Registry returns a new registry of every plugin type Strata ships.
func Registry() scheduling.Registry {
	return scheduling.Registry{
		modelfilter.Type:        modelfilter.Factory,
		healthfilter.Type:       healthfilter.Factory,
		queuescorer.Type:        queuescorer.Factory,
		kvcachescorer.Type:      kvcachescorer.Factory,
		prefixscorer.Type:       prefixscorer.Factory,
		preciseprefix.Type:      preciseprefix.Factory,
		loraaffinity.ScorerType: loraaffinity.ScorerFactory,
		loraaffinity.FilterType: loraaffinity.FilterFactory,
		rolefilter.Type:         rolefilter.Factory,
		rolefilter.PrefillType:  rolefilter.PrefillFactory,
		rolefilter.DecodeType:   rolefilter.DecodeFactory,
		saturationfilter.Type:   saturationfilter.Factory,
		runningrequests.Type:    runningrequests.Factory,
		inflighttokens.Type:     inflighttokens.Factory,
		sessionaffinity.Type:    sessionaffinity.Factory,
		nohitlru.Type:           nohitlru.Factory,
		predictedlatency.Type:   predictedlatency.Factory,
		maxscorepicker.Type:     maxscorepicker.Factory,
		weightedrandom.Type:     weightedrandom.Factory,
		poweroftwo.Type:         poweroftwo.Factory,
		roundrobin.Type:         roundrobin.Factory,
		randompicker.Type:       randompicker.Factory,
	}
}

// DefaultProfile is the EndpointPickerConfig equivalent to config.Router's flat keys, the
// behaviour of the router before plugin configuration existed:
//
//	plugins: model-filter, health-filter, queue-scorer, kv-cache-utilization-scorer,
//	         prefix-cache-scorer {blockSize: prefix_block_chars, lruCapacityPerServer: prefix_lru_blocks},
//	         max-score-picker
//	profile "default": the filters, the scorers with weights.queue (1), weights.kv_cache (1),
//	         weights.prefix (3), the picker.
//
// Unset weights and non-positive sizes take config.Default()'s values.
func DefaultProfile(r config.Router) config.EndpointPickerConfig {
	def := config.Default().Router
	weight := func(w, d *float64) *float64 {
		if w == nil {
			return d
		}
		return w
	}
	blockChars, lruBlocks := r.PrefixBlockChars, r.PrefixLRUBlocks
	if blockChars <= 0 {
		blockChars = def.PrefixBlockChars
	}
	if lruBlocks <= 0 {
		lruBlocks = def.PrefixLRUBlocks
	}
	params, _ := json.Marshal(prefixscorer.Parameters{BlockSize: blockChars, LRUCapacityPerServer: lruBlocks})
	return config.EndpointPickerConfig{
		Plugins: []config.PluginSpec{
			{Type: modelfilter.Type}, {Type: healthfilter.Type},
			{Type: queuescorer.Type}, {Type: kvcachescorer.Type},
			{Type: prefixscorer.Type, Parameters: params},
			{Type: maxscorepicker.Type},
		},
		SchedulingProfiles: []config.SchedulingProfile{{Name: "default", Plugins: []config.ProfilePlugin{
			{PluginRef: modelfilter.Type}, {PluginRef: healthfilter.Type},
			{PluginRef: queuescorer.Type, Weight: weight(r.Weights.Queue, def.Weights.Queue)},
			{PluginRef: kvcachescorer.Type, Weight: weight(r.Weights.KVCache, def.Weights.KVCache)},
			{PluginRef: prefixscorer.Type, Weight: weight(r.Weights.Prefix, def.Weights.Prefix)},
			{PluginRef: maxscorepicker.Type},
		}}},
	}
}

// Build builds the router's scheduler: cfg.Scheduler when set, else DefaultProfile(cfg), with
// every shipped plugin type available. src seeds the plugins' random sources (nil: random); opts
// pass the logger (scheduling.WithLogger). Errors name the offending plugin and field; see
// scheduling.Build.
func Build(cfg config.Router, src scheduling.RandSource, opts ...scheduling.BuildOption) (*scheduling.Scheduler, error) {
	epc := DefaultProfile(cfg)
	if cfg.Scheduler != nil {
		epc = *cfg.Scheduler
	}
	return scheduling.Build(epc, Registry(), src, opts...)
}
