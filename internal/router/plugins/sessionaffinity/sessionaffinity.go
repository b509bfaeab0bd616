// Package sessionaffinity registers the "session-affinity-scorer" plugin: requests of one
// conversation (X-Strata-Session, openai.HeaderSession) go back to the endpoint that served the
// session before, where its KV blocks are. See README.md.
package sessionaffinity

import (
	"encoding/json"
	"fmt"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// Type is the plugin's type name in an EndpointPickerConfig.
const Type = "session-affinity-scorer"

// DefaultMaxSessions is the default number of sessions remembered.
const DefaultMaxSessions = 65536

// Parameters of the plugin.
type Parameters struct {
	// MaxSessions bounds the session -> endpoint map (an LRU). Default 65536.
	MaxSessions int `json:"maxSessions"`
}

var (
	_ scheduling.Scorer     = (*Scorer)(nil)
	_ scheduling.PreRequest = (*Scorer)(nil)
	_ scheduling.Factory    = Factory
)

// Scorer gives 1 to the endpoint that last served the request's session and 0 to the others (all
// 0 without a session or for a new one). The map lives in the router's memory: unlike llm-d's
// session-affinity scorer, which round-trips an encoded pod address through a response header,
// no endpoint name reaches the client. It is safe for concurrent use.
type Scorer struct {
	sessions *lru.Cache[string, string]
}

// Factory builds the scorer. Errors: "parameters.maxSessions: must be positive, got 0".
func Factory(_ string, params json.RawMessage, _ scheduling.Handle) (scheduling.Plugin, error) {
	p := Parameters{MaxSessions: DefaultMaxSessions}
	if err := scheduling.DecodeParameters(params, &p); err != nil {
		return nil, err
	}
	if p.MaxSessions < 1 {
		return nil, fmt.Errorf("parameters.maxSessions: must be positive, got %d", p.MaxSessions)
	}
	return New(p.MaxSessions), nil
}

// New returns a scorer remembering up to maxSessions sessions (>= 1).
func New(maxSessions int) *Scorer {
	c, _ := lru.New[string, string](max(1, maxSessions))
	return &Scorer{sessions: c}
}

// Name returns Type.
func (*Scorer) Name() string { return Type }

// Score implements scheduling.Scorer.
func (s *Scorer) Score(req *scheduling.Request, eps []*scheduling.Endpoint, scores []float64) {
	if req.Session == "" {
		return
	}
	name, ok := s.sessions.Get(req.Session)
	if !ok {
		return
	}
	for i, e := range eps {
		if e.Name == name {
			scores[i] = 1
		}
	}
}

// PreRequest records the chosen endpoint for the request's session.
func (s *Scorer) PreRequest(req *scheduling.Request, picked *scheduling.Endpoint) {
	if req.Session != "" {
		s.sessions.Add(req.Session, picked.Name)
	}
}
