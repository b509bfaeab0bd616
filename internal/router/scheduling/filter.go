package scheduling

import "slices"

var (
	_ Filter = (*ModelFilter)(nil)
	_ Filter = (*HealthFilter)(nil)
)

// ModelFilter keeps the endpoints that serve the requested model. It runs first and looks at
// every endpoint, healthy or not, so that a model no endpoint serves is a 404 while a model whose
// endpoints are all down is a 503.
type ModelFilter struct{}

// Name returns "model-filter".
func (ModelFilter) Name() string { return "model-filter" }

// Filter keeps endpoints with req.Model in their Models. When none does, the error is
// ErrModelNotServed if every endpoint knows its models, else ErrNoHealthyEndpoint (the model may
// be served by an endpoint whose models are still to be discovered).
func (ModelFilter) Filter(req *Request, eps []*Endpoint) ([]*Endpoint, error) {
	allKnown := true
	for _, e := range eps {
		allKnown = allKnown && e.ModelsKnown
	}
	kept := slices.DeleteFunc(eps, func(e *Endpoint) bool { return !e.Serves(req.Model) })
	if len(kept) == 0 {
		if allKnown {
			return nil, ErrModelNotServed
		}
		return nil, ErrNoHealthyEndpoint
	}
	return kept, nil
}

// HealthFilter keeps the healthy endpoints.
type HealthFilter struct{}

// Name returns "health-filter".
func (HealthFilter) Name() string { return "health-filter" }

// Filter keeps endpoints whose last health check passed; none left is ErrNoHealthyEndpoint.
func (HealthFilter) Filter(_ *Request, eps []*Endpoint) ([]*Endpoint, error) {
	kept := slices.DeleteFunc(eps, func(e *Endpoint) bool { return !e.Healthy })
	if len(kept) == 0 {
		return nil, ErrNoHealthyEndpoint
	}
	return kept, nil
}
