package scheduling

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// kvRecorder is a scorer (or filter) that records the KV events it is handed.
type kvRecorder struct {
	name string
	got  []string
}

func (r *kvRecorder) Name() string                                          { return r.name }
func (r *kvRecorder) Score(_ *Request, _ []*Endpoint, _ []float64)          {}
func (r *kvRecorder) Filter(_ *Request, e []*Endpoint) ([]*Endpoint, error) { return e, nil }
func (r *kvRecorder) HandleKVEvents(endpoint string, events []KVEvent) {
	for _, e := range events {
		r.got = append(r.got, endpoint+":"+e.Kind.String())
	}
}

// Every plugin implementing KVEventHandler gets the events, scorers of weight 0 included, in
// profile order; plugins without the capability are skipped.
func TestSchedulerHandleKVEvents(t *testing.T) {
	filter := &kvRecorder{name: "f"}
	heavy, idle := &kvRecorder{name: "heavy"}, &kvRecorder{name: "idle"}
	s := NewScheduler([]Filter{HealthFilter{}, filter},
		[]WeightedScorer{{Scorer: QueueScorer{}, Weight: 1}, {Scorer: heavy, Weight: 2}, {Scorer: idle, Weight: 0}},
		NewMaxScorePicker(rand.NewPCG(1, 1)))
	s.HandleKVEvents("a", []KVEvent{{Kind: BlockStored}, {Kind: BlockRemoved}})
	s.HandleKVEvents("b", []KVEvent{{Kind: AllBlocksCleared}})
	s.HandleKVEvents("c", nil)
	want := []string{"a:BlockStored", "a:BlockRemoved", "b:AllBlocksCleared"}
	require.Equal(t, want, filter.got)
	require.Equal(t, want, heavy.got)
	require.Equal(t, want, idle.got, "a scorer of weight 0 keeps its index warm")
	require.Equal(t, "filters=[health-filter f] scorers=[queue-scorer:1 heavy:2] picker=max-score-picker", s.String())
	require.Equal(t, "KVEventKind(?)", KVEventKind(0).String())
}
