package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
	"github.com/strata-inference/strata/internal/store"
)

// policy is the effective policy of one key: its tier's, overridden by the tenant's legacy rpm /
// tpm / models columns when set, then by the tenant's policy, then by the key's (config.Policy
// Over, field by field). Every limit of 0 is off.
type policy struct {
	tier          string
	models        []string // nil: every model
	rpm, tpm      int64
	maxConcurrent int64
	monthlyTokens int64
	monthlySpend  int64 // micro-USD
	maxTokensDef  int64
	maxTokensCap  int64
	objective     string
	// fairness is "key" (one fairness flow per API key) or "" (one per tenant, the default).
	fairness string
	// rateBucket is the GCRA bucket the key spends from: the tenant's, or the key's own when the
	// key overrides rpm or tpm (so one key's limit does not throttle the tenant's other keys).
	rateBucket string
}

// resolvePolicy computes the effective policy of key k of tenant t under the tiers of cfg.
// A tenant naming a tier that is not configured falls back to cfg.DefaultTier, so a tier removed
// from the config never leaves its tenants unlimited by accident of a typo... unless the default
// tier is itself unlimited.
func resolvePolicy(cfg *config.Gateway, t *store.Tenant, k *store.APIKey) policy {
	tier := t.Tier
	base, ok := cfg.Tiers[tier]
	if !ok {
		tier = cfg.DefaultTier
		base = cfg.Tiers[tier]
	}
	var legacy config.Policy
	if t.RPM > 0 {
		legacy.RPM = ptr64(int64(t.RPM))
	}
	if t.TPM > 0 {
		legacy.TPM = ptr64(int64(t.TPM))
	}
	if len(t.Models) > 0 {
		legacy.Models = t.Models
	}
	e := base.Over(legacy).Over(t.Policy).Over(k.Policy)
	p := policy{tier: tier, rpm: val(e.RPM), tpm: val(e.TPM), maxConcurrent: val(e.MaxConcurrent),
		monthlyTokens: val(e.MonthlyTokens), monthlySpend: val(e.MonthlySpendMicros),
		maxTokensDef: val(e.MaxTokensDefault), maxTokensCap: val(e.MaxTokensCap), rateBucket: "t:" + t.ID}
	if e.Objective != nil {
		p.objective = *e.Objective
	}
	if len(e.Models) > 0 && !slices.Contains(e.Models, "*") {
		p.models = expandModelGroups(cfg.ModelGroups, e.Models)
	}
	if e.Fairness != nil && *e.Fairness == "key" {
		p.fairness = "key"
	}
	if k.Policy.RPM != nil || k.Policy.TPM != nil {
		p.rateBucket = "k:" + k.ID
	}
	return p
}

func ptr64(v int64) *int64 { return &v }

func val(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// allows reports whether the policy lets the key use model.
func (p *policy) allows(model string) bool {
	return p.models == nil || slices.Contains(p.models, model)
}

// errMaxTokensCap is the 400 for an output limit above the policy's cap, naming the field the
// client used.
func errMaxTokensCap(param string, asked, limit int64) *openai.Error {
	return openai.InvalidRequest(param, "invalid_value",
		"%s is too large: %d. This model's maximum for your plan is %d tokens.", param, asked, limit)
}

// applyOutputPolicy enforces max_tokens_cap and max_tokens_default on an inference request.
// It returns the output limit in force (0: none) and the body to send down. A request above the
// cap is refused with 400 naming max_tokens or max_completion_tokens. When the policy sets a
// default or a cap, the body sent down carries exactly one output limit, as "max_tokens" (every
// top-level spelling of max_tokens and max_completion_tokens, any case, removed first): the
// engine's decoder (Python, case-sensitive) must see the same limit the gateway checked, whatever
// spelling Go's case-insensitive decoder accepted. Embeddings have no output and pass unchanged.
func applyOutputPolicy(path string, body []byte, req *openai.InferenceRequest, p *policy) (int64, []byte, error) {
	if path == openai.PathEmbeddings {
		return 0, body, nil
	}
	limit, asked := req.OutputLimit()
	if asked && p.maxTokensCap > 0 && int64(limit) > p.maxTokensCap {
		param := "max_tokens"
		if req.MaxCompletionTokens != nil {
			param = "max_completion_tokens"
		}
		return 0, nil, errMaxTokensCap(param, int64(limit), p.maxTokensCap)
	}
	if p.maxTokensCap == 0 && p.maxTokensDef == 0 {
		if asked {
			return int64(limit), body, nil
		}
		return 0, body, nil
	}
	out := int64(limit)
	if !asked {
		out = p.maxTokensDef
		if out == 0 {
			out = p.maxTokensCap
		}
	}
	b, err := setOutputLimit(body, out)
	if err != nil {
		return 0, nil, err
	}
	return out, b, nil
}

// setOutputLimit rewrites a JSON object body to carry "max_tokens": n as its only output limit:
// every top-level key equal (ignoring case) to max_tokens or max_completion_tokens is removed and
// "max_tokens" appended. Other bytes of the body are kept.
func setOutputLimit(body []byte, n int64) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("gateway: request body is not a JSON object")
	}
	type span struct{ start, end int64 }
	var drop []span
	prevEnd := dec.InputOffset() // just after '{' or the previous value
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("gateway: request body: %w", err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("gateway: request body: %w", err)
		}
		end := dec.InputOffset()
		if key, _ := tok.(string); strings.EqualFold(key, "max_tokens") || strings.EqualFold(key, "max_completion_tokens") {
			drop = append(drop, span{prevEnd, end})
		}
		prevEnd = end
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("gateway: request body: %w", err)
	}
	closing := dec.InputOffset() - 1
	// Each dropped span runs from the end of the previous member (its separating comma included)
	// to the end of the dropped value. While no member has been kept yet the span starts just
	// after '{' and has no comma of its own, so the comma after it is dropped instead.
	var out []byte
	prev := int64(0)
	for _, s := range drop {
		out = append(out, body[prev:max(s.start, prev)]...)
		prev = s.end
		if bytes.HasSuffix(bytes.TrimRight(out, " \t\r\n"), []byte("{")) {
			i := prev
			for i < closing && isSpace(body[i]) {
				i++
			}
			if i < closing && body[i] == ',' {
				prev = i + 1
			}
		}
	}
	out = append(out, body[prev:closing]...)
	if len(bytes.TrimSpace(out[bytes.IndexByte(out, '{')+1:])) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"max_tokens":`+strconv.FormatInt(n, 10)...)
	out = append(out, body[closing:]...)
	if !json.Valid(out) {
		return nil, errors.New("gateway: rewriting the output limit produced invalid JSON")
	}
	return out, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// ModelGroupPrefix marks a model group in a policy's models list: "@name" stands for every model
// of config gateway.model_groups[name]. A group the config does not define allows nothing.
const ModelGroupPrefix = "@"

// expandModelGroups returns models with every "@group" replaced by the group's models
// (deduplicated, order kept). Without groups it returns models unchanged.
func expandModelGroups(groups map[string][]string, models []string) []string {
	if !slices.ContainsFunc(models, func(m string) bool { return strings.HasPrefix(m, ModelGroupPrefix) }) {
		return models
	}
	out := make([]string, 0, len(models))
	add := func(m string) {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	for _, m := range models {
		name, isGroup := strings.CutPrefix(m, ModelGroupPrefix)
		if !isGroup {
			add(m)
			continue
		}
		for _, g := range groups[name] {
			add(g)
		}
	}
	if len(out) == 0 {
		// Only unknown (or empty) groups: allow nothing rather than everything.
		return []string{}
	}
	return out
}

// principalFairnessID is the fairness id of key k of tenant t under fairness ("tenant" or "key").
func principalFairnessID(secret []byte, fairness string, t *store.Tenant, k *store.APIKey) string {
	if fairness == "key" {
		return fairnessID(secret, t.ID+"/"+k.ID)
	}
	return fairnessID(secret, t.ID)
}
