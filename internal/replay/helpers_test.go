package replay

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/engine/sim"
)

func newTestTiming(t *testing.T) sim.Timing {
	t.Helper()
	gpu, err := sim.LookupGPU("H100-SXM")
	require.NoError(t, err)
	model, err := sim.LookupModel("Llama-3.1-8B")
	require.NoError(t, err)
	return sim.NewTiming(gpu, model)
}
