package loraaffinity

import (
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

func ep(name string, running, waiting []string, maxLoRA int) *scheduling.Endpoint {
	e := &scheduling.Endpoint{Name: name}
	e.Metrics.RunningLoRAs, e.Metrics.WaitingLoRAs, e.Metrics.MaxLoRA = running, waiting, maxLoRA
	return e
}

func names(eps []*scheduling.Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, e.Name)
	}
	return out
}

type handle struct{}

func (handle) Plugin(string) (scheduling.Plugin, bool) { return nil, false }
func (handle) Rand() rand.Source                       { return rand.NewPCG(1, 2) }
func (handle) Logger() *slog.Logger                    { return slog.New(slog.DiscardHandler) }

func TestScorer(t *testing.T) {
	eps := []*scheduling.Endpoint{
		ep("running", []string{"sql", "chat"}, nil, 2),
		ep("waiting", []string{"chat"}, []string{"sql"}, 2),
		ep("free", []string{"chat"}, nil, 2),
		ep("full", []string{"chat", "code"}, nil, 2),
		ep("full-by-waiting", []string{"chat"}, []string{"code"}, 2),
		ep("unknown-max", []string{"chat", "code"}, nil, 0),
		ep("idle", nil, nil, 1),
	}
	stale := ep("stale", []string{"sql"}, nil, 2)
	stale.Stale = true
	eps = append(eps, stale)
	scores := make([]float64, len(eps))
	Scorer{}.Score(&scheduling.Request{LoRA: "sql"}, eps, scores)
	require.Equal(t, []float64{ScoreRunning, ScoreWaiting, ScoreFreeSlot, 0, 0, ScoreFreeSlot, ScoreFreeSlot, 0}, scores)

	clear(scores)
	Scorer{}.Score(&scheduling.Request{}, eps, scores)
	require.Equal(t, make([]float64, len(eps)), scores, "the base model has no preference")
}

func TestFilter(t *testing.T) {
	eps := func() []*scheduling.Endpoint {
		return []*scheduling.Endpoint{
			ep("running", []string{"sql"}, nil, 1),
			ep("free", nil, nil, 1),
			ep("full", []string{"chat"}, nil, 1),
		}
	}
	always, never := 1.0, 0.0
	build := func(th *float64) *Filter {
		b, _ := json.Marshal(FilterParameters{Threshold: th})
		p, err := FilterFactory("f", b, handle{})
		require.NoError(t, err)
		return p.(*Filter)
	}
	got, err := build(&always).Filter(&scheduling.Request{LoRA: "sql"}, eps())
	require.NoError(t, err)
	require.Equal(t, []string{"running"}, names(got))

	got, _ = build(&never).Filter(&scheduling.Request{LoRA: "sql"}, eps())
	require.Equal(t, []string{"free"}, names(got), "threshold 0 spreads the adapter to free slots")

	got, _ = build(nil).Filter(&scheduling.Request{LoRA: "new"}, eps())
	require.Equal(t, []string{"free"}, names(got))

	full := []*scheduling.Endpoint{ep("a", []string{"x"}, nil, 1), ep("b", []string{"y"}, nil, 1)}
	got, err = build(nil).Filter(&scheduling.Request{LoRA: "sql"}, full)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, names(got), "never empties the candidates")

	got, _ = build(nil).Filter(&scheduling.Request{}, eps())
	require.Len(t, got, 3, "base-model requests pass")
}

func TestFactories(t *testing.T) {
	_, err := FilterFactory("f", json.RawMessage(`{"threshold":2}`), handle{})
	require.EqualError(t, err, "parameters.threshold: must be in [0, 1], got 2")
	_, err = ScorerFactory("s", json.RawMessage(`{"x":1}`), handle{})
	require.ErrorContains(t, err, `unknown field "x"`)
}
