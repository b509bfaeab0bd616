// Package rolefilter registers the "role-filter" plugin and llm-d's "prefill-filter" and
// "decode-filter": in prefill/decode disaggregation, a profile keeps only the endpoints that
// play its role (config engines[].role, scheduling.Endpoint.Role). See README.md.
package rolefilter

import (
	"encoding/json"
	"fmt"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type names in an EndpointPickerConfig. PrefillType and DecodeType are llm-d's
// (pkg/plugins/filter/pd_role.go); they take no parameters.
const (
	Type        = "role-filter"
	PrefillType = "prefill-filter"
	DecodeType  = "decode-filter"
)

// Parameters of role-filter.
type Parameters struct {
	// Role is the role the profile wants: "prefill", "decode" or "both". Default "both".
	Role string `json:"role"`
}

var (
	_ scheduling.Filter  = (*Filter)(nil)
	_ scheduling.Factory = Factory
	_ scheduling.Factory = PrefillFactory
	_ scheduling.Factory = DecodeFactory
)

// Filter keeps the endpoints able to play a role. An endpoint of role "both" (or no role) plays
// every role; a "prefill" endpoint only prefill, a "decode" one only decode. A profile wanting
// "both" keeps only endpoints of role both: those that can serve a request end to end. When none
// is left the error wraps scheduling.ErrNoHealthyEndpoint (a 503). Stateless.
type Filter struct {
	typ, role string
}

// New returns a filter of type typ keeping endpoints that can play role (scheduling.RolePrefill,
// RoleDecode or RoleBoth).
func New(typ, role string) (*Filter, error) {
	switch role {
	case scheduling.RolePrefill, scheduling.RoleDecode, scheduling.RoleBoth:
		return &Filter{typ: typ, role: role}, nil
	}
	return nil, fmt.Errorf("parameters.role: must be %q, %q or %q, got %q", scheduling.RolePrefill, scheduling.RoleDecode, scheduling.RoleBoth, role)
}

// Factory builds role-filter. Errors: `parameters.role: must be "prefill", "decode" or "both",
// got "encode"`.
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	p := Parameters{Role: scheduling.RoleBoth}
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	return New(Type, p.Role)
}

// PrefillFactory builds prefill-filter (role-filter with role prefill); it takes no parameters.
func PrefillFactory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return New(PrefillType, scheduling.RolePrefill)
}

// DecodeFactory builds decode-filter (role-filter with role decode); it takes no parameters.
func DecodeFactory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	if err := scheduling.DecodeParameters(params, &struct{}{}); err != nil {
		return nil, err
	}
	return New(DecodeType, scheduling.RoleDecode)
}

// Name returns the filter's type name.
func (f *Filter) Name() string { return f.typ }

// Plays reports whether an endpoint of role has the filter's role.
func (f *Filter) Plays(role string) bool {
	if role == "" {
		role = scheduling.RoleBoth
	}
	return role == scheduling.RoleBoth || (role == f.role && f.role != scheduling.RoleBoth)
}

// Filter implements scheduling.Filter.
func (f *Filter) Filter(_ *scheduling.Request, eps []*scheduling.Endpoint) ([]*scheduling.Endpoint, error) {
	kept := eps[:0]
	for _, e := range eps {
		if f.Plays(e.Role) {
			kept = append(kept, e)
		}
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("%w: no endpoint plays the %s role", scheduling.ErrNoHealthyEndpoint, f.role)
	}
	return kept, nil
}
