package scheduling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/strata-inference/strata/internal/config"
)

// RandSource is math/rand/v2.Source, named here so callers of Build need not import it.
type RandSource = rand.Source

// Plugin is any scheduler plugin: a Filter, a Scorer or a Picker (a plugin may also implement
// PreRequest). Name is the plugin's type name, for logs and errors.
type Plugin interface {
	Name() string
}

// Handle is what a plugin factory may use from the scheduler being built.
type Handle interface {
	// Plugin returns the plugin instance named name, if it was declared before the one being
	// built (plugins are built in the order of the configuration's plugins list).
	Plugin(name string) (Plugin, bool)
	// Rand returns a new random source for one plugin. When the router runs with a fixed seed
	// (tests, `strata replay`), the sources are deterministic in the order they are requested.
	Rand() rand.Source
	// Logger returns the router's logger (WithLogger), or one that discards, never nil. Plugins
	// log once at their boundary, never per request.
	Logger() *slog.Logger
}

// BuildOption adjusts a Build.
type BuildOption func(*handle)

// WithLogger passes the router's logger to the plugins (Handle.Logger).
func WithLogger(log *slog.Logger) BuildOption {
	return func(h *handle) {
		if log != nil {
			h.log = log
		}
	}
}

// Factory builds one plugin instance named name from its parameters (the raw JSON of the
// configuration's parameters, or nil when none were given). Factories decode parameters with
// DecodeParameters so that unknown keys are errors, and name the offending field in their
// errors as "parameters.<field>: ...".
type Factory func(name string, params json.RawMessage, h Handle) (Plugin, error)

// Registry maps plugin type names to their factories. The set of plugins Strata ships is
// internal/router/plugins.Registry(); tests may build their own.
type Registry map[string]Factory

// Types returns the registered type names, sorted.
func (r Registry) Types() []string {
	out := make([]string, 0, len(r))
	for t := range r {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// DecodeParameters strictly decodes params into v: unknown fields and type mismatches are errors
// ("parameters: unknown field \"x\""). Empty params (nil, "null" or "{}") leave v unchanged.
func DecodeParameters(params json.RawMessage, v any) error {
	if len(bytes.TrimSpace(params)) == 0 || string(bytes.TrimSpace(params)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("parameters.%s: want %s, got %s", te.Field, te.Type, te.Value)
		}
		return fmt.Errorf("parameters: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return errors.New("parameters: trailing data")
	}
	return nil
}

// Required filters: every profile starts with them (they are prepended when the profile does not
// reference them), since the router's 404 / 503 answers depend on them.
const (
	ModelFilterType  = "model-filter"
	HealthFilterType = "health-filter"
	// MaxScorePickerType is the picker a profile without one gets, as in llm-d.
	MaxScorePickerType = "max-score-picker"
)

// handle is the Handle of one Build.
type handle struct {
	plugins map[string]Plugin
	rng     *rand.Rand // nil: each source randomly seeded
	log     *slog.Logger
}

func (h *handle) Logger() *slog.Logger { return h.log }

func (h *handle) Plugin(name string) (Plugin, bool) {
	p, ok := h.plugins[name]
	return p, ok
}

func (h *handle) Rand() rand.Source {
	if h.rng == nil {
		return rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	return rand.NewPCG(h.rng.Uint64(), h.rng.Uint64())
}

// Build instantiates the plugins of cfg with the factories of reg and returns the scheduler of
// its single profile. src seeds every plugin's random source (nil: random seeds).
//
// Errors name the offending entry, e.g. `plugins[2] "prefix" (prefix-cache-scorer):
// parameters.blockSize: must be positive, got 0` or `schedulingProfiles[0].plugins[1].pluginRef:
// unknown plugin "quue-scorer"`. Rules: every plugin has a registered type and a unique name
// (default: its type); exactly one profile; each reference names a declared plugin at most once;
// weights only on scorers, finite and >= 0; at most one picker (none: max-score-picker). The
// model and health filters run first whether referenced or not.
func Build(cfg config.EndpointPickerConfig, reg Registry, src rand.Source, opts ...BuildOption) (*Scheduler, error) {
	h := &handle{plugins: map[string]Plugin{}, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(h)
	}
	if src != nil {
		h.rng = rand.New(src)
	}
	for i, spec := range cfg.Plugins {
		name := spec.Name
		if name == "" {
			name = spec.Type
		}
		where := fmt.Sprintf("plugins[%d] %q (%s)", i, name, spec.Type)
		if spec.Type == "" {
			return nil, fmt.Errorf("plugins[%d]: type: required (one of %s)", i, strings.Join(reg.Types(), ", "))
		}
		f, ok := reg[spec.Type]
		if !ok {
			return nil, fmt.Errorf("%s: type: unknown plugin type %q (want one of %s)", where, spec.Type, strings.Join(reg.Types(), ", "))
		}
		if _, dup := h.plugins[name]; dup {
			return nil, fmt.Errorf("%s: name: %q used twice", where, name)
		}
		p, err := f(name, spec.Parameters, h)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		h.plugins[name] = p
	}
	switch n := len(cfg.SchedulingProfiles); {
	case n == 0:
		return nil, errors.New("schedulingProfiles: at least one profile is required")
	case n > 1:
		return nil, fmt.Errorf("schedulingProfiles: %d profiles given; only one is supported yet (no profile handler for multi-step decisions)", n)
	}
	prof := cfg.SchedulingProfiles[0]
	var (
		filters []Filter
		scorers []WeightedScorer
		picker  Picker
		seen    = map[string]bool{}
		hasType = map[string]bool{}
	)
	for j, ref := range prof.Plugins {
		where := fmt.Sprintf("schedulingProfiles[0].plugins[%d]", j)
		p, ok := h.plugins[ref.PluginRef]
		if !ok {
			return nil, fmt.Errorf("%s.pluginRef: unknown plugin %q (declare it under plugins)", where, ref.PluginRef)
		}
		if seen[ref.PluginRef] {
			return nil, fmt.Errorf("%s.pluginRef: %q referenced twice", where, ref.PluginRef)
		}
		seen[ref.PluginRef] = true
		hasType[p.Name()] = true
		s, isScorer := p.(Scorer)
		if ref.Weight != nil && !isScorer {
			return nil, fmt.Errorf("%s.weight: %q is not a scorer; only scorers take a weight", where, ref.PluginRef)
		}
		switch pp := p.(type) {
		case Filter:
			filters = append(filters, pp)
		case Scorer:
			w := 1.0
			if ref.Weight != nil {
				w = *ref.Weight
			}
			if !(w >= 0) || w > 1e6 {
				return nil, fmt.Errorf("%s.weight: must be in [0, 1e6], got %g", where, w)
			}
			scorers = append(scorers, WeightedScorer{Scorer: s, Weight: w})
		case Picker:
			if picker != nil {
				return nil, fmt.Errorf("%s.pluginRef: %q is a second picker; a profile has one", where, ref.PluginRef)
			}
			picker = pp
		default:
			return nil, fmt.Errorf("%s.pluginRef: %q (%s) is not a filter, scorer or picker", where, ref.PluginRef, p.Name())
		}
	}
	if !hasType[HealthFilterType] {
		filters = slices.Insert(filters, 0, Filter(HealthFilter{}))
	}
	if !hasType[ModelFilterType] {
		filters = slices.Insert(filters, 0, Filter(ModelFilter{}))
	}
	if picker == nil {
		picker = NewMaxScorePicker(h.Rand())
	}
	return NewScheduler(filters, scorers, picker), nil
}
