package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/router/plugins"
	"github.com/strata-inference/strata/internal/router/plugins/preciseprefix"
	"github.com/strata-inference/strata/internal/router/plugins/prefixscorer"
	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Prefill/decode disaggregation, in llm-d's shape. The EndpointPickerConfig may declare a plugin
// of type pd-profile-handler and two profiles, "decode" and "prefill" (names configurable). Every
// request runs the decode profile; when its uncached prompt tokens (estimated prompt tokens minus
// the decode endpoint's estimated prefix hit) are at least the handler's threshold, the prefill
// profile picks a prefill endpoint too (llm-d pkg/plugins/profile/pd_profile_handler.go).
//
// The router then plays llm-d's routing sidecar (pkg/sidecar/proxy/connector_nixlv2.go): it
// sends the prefill leg (the same body with stream false, max_tokens 1 and kv_transfer_params
// asking for a remote decode) to the prefill endpoint, and the client's request with the
// kv_transfer_params the prefiller returned to the decode endpoint, whose answer alone reaches
// the client. vLLM's NixlConnector fills those params (do_remote_prefill, remote_engine_id,
// remote_block_ids, remote_host, remote_port, ...; vllm/distributed/kv_transfer/kv_connector/v1/
// nixl_connector.py, request_finished); the router passes them on verbatim.

// Plugin types of llm-d's P/D configuration that the scheduling plugins do not provide: the
// profile handler (implemented by the router itself, see buildProfiles) and the header handler
// (the router sets x-prefiller-host-port itself). Both are registered as plugins taking no part
// in a scheduling cycle, so an llm-d configuration builds as it is. The role filters
// (prefill-filter, decode-filter) are real plugins of internal/router/plugins/rolefilter.
const (
	pdProfileHandlerType     = "pd-profile-handler"
	prefillHeaderHandlerType = "prefill-header-handler"
)

// addPDTypes registers the P/D plugin types reg lacks.
func addPDTypes(reg scheduling.Registry) {
	if _, ok := reg[prefillHeaderHandlerType]; !ok {
		reg[prefillHeaderHandlerType] = func(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
			if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
				return nil, err
			}
			return namedPlugin(prefillHeaderHandlerType), nil
		}
	}
	if _, ok := reg[pdProfileHandlerType]; !ok {
		reg[pdProfileHandlerType] = func(_ string, _ json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
			return namedPlugin(pdProfileHandlerType), nil // parameters are read by buildProfiles
		}
	}
}

// namedPlugin is a plugin that takes no part in a scheduling cycle.
type namedPlugin string

func (p namedPlugin) Name() string { return string(p) }

// Wire names of the P/D protocol.
const (
	// headerPrefillerHostPort names the prefill endpoint on the decode request (llm-d
	// pkg/sidecar/proxy, requestHeaderPrefillHostPort).
	headerPrefillerHostPort = "x-prefiller-host-port"
	fieldKVTransferParams   = "kv_transfer_params"
	// maxPrefillAnswerBytes bounds the prefill leg's JSON answer (one token plus the params).
	maxPrefillAnswerBytes = 1 << 20
)

// prefillKVTransferParams asks the prefill engine to keep the prompt's KV blocks for a remote
// decode, exactly as llm-d's NIXL v2 connector sends them.
var prefillKVTransferParams = json.RawMessage(`{"do_remote_decode":true,"do_remote_prefill":false,` +
	`"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}`)

// pdParameters are the pd-profile-handler's parameters, with llm-d's names. HashBlockSize and
// PrefixPluginType are accepted so an llm-d file can be pasted in, and ignored: the estimate
// comes from the decode profile's prefix-cache-scorer itself.
type pdParameters struct {
	// Threshold in prompt tokens: disaggregate when at least this many are not cached on the
	// decode endpoint. 0 (the default) always disaggregates.
	Threshold      int    `json:"threshold"`
	DecodeProfile  string `json:"decodeProfile"`
	PrefillProfile string `json:"prefillProfile"`
	// PrefixPluginName names the prefix-cache-scorer whose estimate is used (default: the first
	// one the decode profile references).
	PrefixPluginName string `json:"prefixPluginName"`
	HashBlockSize    int    `json:"hashBlockSize"`
	PrefixPluginType string `json:"prefixPluginType"`
}

// profile is one built scheduling profile.
type profile struct {
	name  string
	sched *scheduling.Scheduler
	// prefix estimates the cached fraction of a prompt per endpoint: the profile's precise
	// prefix-cache scorer (KV events), else its approximate one; nil when it has neither.
	prefix scheduling.Scorer
}

// profileSet is the router's scheduler: one profile, or the decode and prefill profiles of P/D.
type profileSet struct {
	main      profile  // the single profile, or the decode profile
	prefill   *profile // nil: no disaggregation
	threshold int      // tokens; see pdParameters.Threshold
}

// schedulers returns every profile's scheduler.
func (ps *profileSet) schedulers() []*scheduling.Scheduler {
	out := []*scheduling.Scheduler{ps.main.sched}
	if ps.prefill != nil {
		out = append(out, ps.prefill.sched)
	}
	return out
}

// buildProfiles builds cfg.Scheduler (or the default profile of the flat keys). Without a
// pd-profile-handler it is plugins.Build. With one, its parameters are read here, and each of the
// two profiles is built on its own by scheduling.Build over all declared plugins (so each has
// its own plugin instances and prefix state). Errors name the plugin, profile and field.
func buildProfiles(cfg config.Router, src rand.Source, opts ...scheduling.BuildOption) (*profileSet, error) {
	epc := plugins.DefaultProfile(cfg)
	if cfg.Scheduler != nil {
		epc = *cfg.Scheduler
	}
	reg := plugins.Registry()
	addPDTypes(reg)
	var handler *pdParameters
	for i, spec := range epc.Plugins {
		if spec.Type != pdProfileHandlerType {
			continue
		}
		name := spec.Name
		if name == "" {
			name = spec.Type
		}
		if handler != nil {
			return nil, fmt.Errorf("plugins[%d] %q (%s): a second profile handler; a configuration has one", i, name, spec.Type)
		}
		p := pdParameters{DecodeProfile: "decode", PrefillProfile: "prefill"}
		if err := scheduling.DecodeParameters(spec.Parameters, &p); err != nil {
			return nil, fmt.Errorf("plugins[%d] %q (%s): %w", i, name, spec.Type, err)
		}
		if p.Threshold < 0 {
			return nil, fmt.Errorf("plugins[%d] %q (%s): parameters.threshold: must not be negative, got %d", i, name, spec.Type, p.Threshold)
		}
		handler = &p
	}
	if handler == nil {
		p, err := buildProfile(epc, reg, src, "", opts)
		if err != nil {
			return nil, err
		}
		return &profileSet{main: p}, nil
	}
	byName := map[string]config.SchedulingProfile{}
	for _, sp := range epc.SchedulingProfiles {
		if sp.Name != handler.DecodeProfile && sp.Name != handler.PrefillProfile {
			return nil, fmt.Errorf("schedulingProfiles: profile %q is neither the decode profile %q nor the prefill profile %q of the pd-profile-handler",
				sp.Name, handler.DecodeProfile, handler.PrefillProfile)
		}
		byName[sp.Name] = sp
	}
	build := func(name, prefix string) (profile, error) {
		sp, ok := byName[name]
		if !ok {
			return profile{}, fmt.Errorf("schedulingProfiles: the pd-profile-handler needs a profile named %q", name)
		}
		one := epc
		one.SchedulingProfiles = []config.SchedulingProfile{sp}
		p, err := buildProfile(one, reg, src, prefix, opts)
		if err != nil {
			return profile{}, fmt.Errorf("profile %q: %w", name, err)
		}
		p.name = name
		return p, nil
	}
	dec, err := build(handler.DecodeProfile, handler.PrefixPluginName)
	if err != nil {
		return nil, err
	}
	pre, err := build(handler.PrefillProfile, "")
	if err != nil {
		return nil, err
	}
	return &profileSet{main: dec, prefill: &pre, threshold: handler.Threshold}, nil
}

// buildProfile runs scheduling.Build on epc (one profile) with reg, noting the prefix-cache
// scorer instances it creates so the router can read their estimates: the one named prefix, or
// by default the profile's precise-prefix-cache-scorer, else its prefix-cache-scorer (the first
// referenced with a positive weight).
func buildProfile(epc config.EndpointPickerConfig, reg scheduling.Registry, src rand.Source, prefix string,
	opts []scheduling.BuildOption) (profile, error) {
	type made struct {
		s       scheduling.Scorer
		precise bool
	}
	created := map[string]made{}
	wrapped := make(scheduling.Registry, len(reg))
	for t, f := range reg {
		wrapped[t] = f
	}
	for _, t := range []string{prefixscorer.Type, preciseprefix.Type} {
		f, ok := reg[t]
		if !ok {
			continue
		}
		wrapped[t] = func(name string, params json.RawMessage, h scheduling.Handle) (scheduling.Plugin, error) {
			p, err := f(name, params, h)
			if sc, ok := p.(scheduling.Scorer); ok && err == nil {
				created[name] = made{s: sc, precise: t == preciseprefix.Type}
			}
			return p, err
		}
	}
	s, err := scheduling.Build(epc, wrapped, src, opts...)
	if err != nil {
		return profile{}, err
	}
	p := profile{name: "default", sched: s}
	if prefix != "" {
		m, ok := created[prefix]
		if !ok {
			return profile{}, fmt.Errorf("pd-profile-handler: parameters.prefixPluginName: no %s or %s named %q", prefixscorer.Type, preciseprefix.Type, prefix)
		}
		p.prefix = m.s
	}
	if len(epc.SchedulingProfiles) == 1 {
		if n := epc.SchedulingProfiles[0].Name; n != "" {
			p.name = n
		}
		var approx scheduling.Scorer
		for _, ref := range epc.SchedulingProfiles[0].Plugins {
			m, ok := created[ref.PluginRef]
			if !ok || p.prefix != nil || (ref.Weight != nil && *ref.Weight <= 0) {
				continue
			}
			if m.precise {
				p.prefix = m.s
			} else if approx == nil {
				approx = m.s
			}
		}
		if p.prefix == nil {
			p.prefix = approx
		}
	}
	return p, nil
}

// estimateHits returns, for each of eps, the fraction of req's prompt p's prefix scorer expects
// cached there (its score: leading blocks held / blocks of the prompt; 0 without a prefix scorer).
// It must run before Schedule: the approximate scorer's PreRequest then records the whole prompt
// on the chosen endpoint.
func (p *profile) estimateHits(req *scheduling.Request, eps []*scheduling.Endpoint) []float64 {
	hits := make([]float64, len(eps))
	if p.prefix == nil {
		return hits
	}
	p.prefix.Score(req, eps, hits)
	for i, h := range hits {
		if !(h > 0) { // also NaN
			hits[i] = 0
		}
		hits[i] = min(hits[i], 1)
	}
	return hits
}

// prefillLeg sends the prefill request of a disaggregated decision to ep and returns the
// kv_transfer_params of its answer (nil when the answer has none). Any failure is an error; the
// caller then lets the decode endpoint prefill locally.
func (r *Router) prefillLeg(in *http.Request, c *call, ep *endpoint) (json.RawMessage, error) {
	fields := maps(c.fields)
	fields[fieldKVTransferParams] = prefillKVTransferParams
	fields["stream"] = json.RawMessage("false")
	delete(fields, "stream_options")
	fields["max_tokens"] = json.RawMessage("1")
	if in.URL.Path == openai.PathChatCompletions {
		fields["max_completion_tokens"] = json.RawMessage("1")
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	resp, err := r.send(in, ep, body, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPrefillAnswerBytes+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, errStatus(resp.StatusCode)
	}
	if len(b) > maxPrefillAnswerBytes {
		return nil, errors.New("prefill answer too large")
	}
	var answer struct {
		KVTransferParams json.RawMessage `json:"kv_transfer_params"`
	}
	if err := json.Unmarshal(b, &answer); err != nil {
		return nil, fmt.Errorf("prefill answer: %w", err)
	}
	if p := bytes.TrimSpace(answer.KVTransferParams); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		return p, nil
	}
	return nil, nil
}

// decodeBody is the client's body with the prefiller's kv_transfer_params set (removed when the
// prefiller returned none, as a request without them is a plain local prefill).
func decodeBody(c *call, params json.RawMessage) ([]byte, error) {
	fields := maps(c.fields)
	if params == nil {
		delete(fields, fieldKVTransferParams)
	} else {
		fields[fieldKVTransferParams] = params
	}
	return json.Marshal(fields)
}

// maps returns a shallow copy of m.
func maps(m map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m)+2)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// runLegs sends d's prefill leg when there is one (ending its in-flight accounting), then the
// request to d.ep: the client's body unchanged, or with the prefiller's kv_transfer_params and
// the x-prefiller-host-port header. A failed prefill leg is tried on another prefill endpoint,
// up to MaxAttempts prefill endpoints; when none succeeds the decode endpoint prefills locally.
func (r *Router) runLegs(in *http.Request, c *call, d *decision) (*http.Response, error) {
	body, hdr := c.body, http.Header(nil)
	var tried []string
	for pre := d.prefill; pre != nil; pre = d.prefill {
		params, err := r.prefillLeg(in, c, pre)
		r.done(pre, d.tokens)
		d.prefill = nil
		if in.Context().Err() != nil {
			return nil, in.Context().Err()
		}
		if err == nil {
			if body, err = decodeBody(c, params); err != nil {
				return nil, err
			}
			hdr = http.Header{headerPrefillerHostPort: []string{pre.hostPort()}}
			break
		}
		r.metrics.decisions.WithLabelValues(r.profiles.prefill.name, reasonPrefillFailed).Inc()
		r.log.Warn("prefill leg failed", "endpoint", pre.name, "err", err)
		if tried = append(tried, pre.name); len(tried) < r.cfg.MaxAttempts {
			d.prefill = r.nextPrefill(c, d.ep.name, tried) // nil: decode with a local prefill
		}
	}
	return r.send(in, d.ep, body, hdr)
}

// nextPrefill picks another prefill endpoint for c, none of exclude, and counts it in flight.
func (r *Router) nextPrefill(c *call, decode string, exclude []string) *endpoint {
	r.pickMu.Lock()
	defer r.pickMu.Unlock()
	now := r.clk.Now()
	snaps := make([]scheduling.Endpoint, len(r.endpoints))
	for i, ep := range r.endpoints {
		ep.snapshot(now, r.cfg.StaleAfter.D(), &snaps[i])
	}
	return r.pickPrefill(r.profiles.prefill, c, snaps, decode, exclude, reasonRetry)
}
