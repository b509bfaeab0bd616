package scheduling

import (
	"math/rand/v2"
	"sync"
)

var _ Picker = (*MaxScorePicker)(nil)

// tieEpsilon: weighted sums closer than this are equal, so floating-point noise does not break a
// tie that the random tie-break should.
const tieEpsilon = 1e-9

// MaxScorePicker picks the endpoint with the highest weighted score; among equal scores it picks
// uniformly at random (reservoir sampling), so idle replicas share new work evenly.
type MaxScorePicker struct {
	mu  sync.Mutex
	rng *rand.Rand
}

// NewMaxScorePicker returns a max-score picker drawing its tie-breaks from src; a nil src uses a
// randomly seeded PCG. Pass a seeded source for deterministic tests.
func NewMaxScorePicker(src rand.Source) *MaxScorePicker {
	if src == nil {
		src = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	return &MaxScorePicker{rng: rand.New(src)}
}

// Name returns "max-score-picker".
func (p *MaxScorePicker) Name() string { return "max-score-picker" }

// Pick implements Picker.
func (p *MaxScorePicker) Pick(eps []*Endpoint, scores []float64) *Endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	best, ties := 0, 1
	for i := 1; i < len(eps); i++ {
		switch d := scores[i] - scores[best]; {
		case d > tieEpsilon:
			best, ties = i, 1
		case d >= -tieEpsilon:
			ties++
			if p.rng.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return eps[best]
}
