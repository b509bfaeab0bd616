package sim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLookupProfiles(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"H100-SXM", "H100-SXM"}, {"h100", "H100-SXM"}, {"NVIDIA H100-SXM5", "H100-SXM"},
		{"A100-80GB", "A100-80GB"}, {"h200", "H200"}, {"L40S", "L40S"},
	} {
		g, err := LookupGPU(tc.name)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, g.Name)
	}
	for _, tc := range []struct{ name, want string }{
		{"meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B"}, {"meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3.1-8B"},
		{"llama-3.1-8b", "Llama-3.1-8B"}, {"Qwen/Qwen3-8B", "Qwen3-8B"},
	} {
		m, err := LookupModel(tc.name)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, m.Name)
	}
	_, err := LookupGPU("TPU-v5")
	require.ErrorContains(t, err, `unknown GPU "TPU-v5"`)
	_, err = LookupModel("gpt-4o")
	require.ErrorContains(t, err, `unknown model "gpt-4o"`)
}

// TestStepTimeRoofline checks the model's arithmetic on Llama-3.1-8B / H100-SXM (these are
// properties of the formula, not measurements).
func TestStepTimeRoofline(t *testing.T) {
	g, _ := LookupGPU("H100-SXM")
	m, _ := LookupModel("llama-3.1-8b")
	tm := NewTiming(g, m)
	require.Equal(t, 131072.0, m.KVBytesPerToken(), "2 * 32 layers * 8 KV heads * 128 * 2 bytes")

	itl := tm.StepTime(0, 1, 1000)
	require.InDelta(t, 6.57e-3, itl.Seconds(), 0.1e-3, "batch-1 decode: weights / (3.35 TB/s * 0.8) + 0.3 ms + 0.23 ms")
	prefill := tm.StepTime(1000, 0, 1000)
	require.InDelta(t, 38.8e-3, prefill.Seconds(), 0.5e-3, "1000-token prefill: 16 TFLOP at 495 TFLOP/s + weights read + 0.3 ms")

	require.Greater(t, tm.StepTime(2000, 0, 2000), prefill, "prefill grows with tokens")
	require.Greater(t, tm.StepTime(0, 64, 64*2000), itl, "decode grows with the KV read")
	big := tm.StepTime(0, 4096, 4096)
	require.Greater(t, big, 60*time.Millisecond, "a huge decode batch turns compute-bound")
	require.Equal(t, tm.StepOverhead, tm.StepTime(0, 0, 0))
}

// num_gpu_blocks as vLLM derives it, from memory, utilization, weights and KV size per token.
func TestNumGPUBlocks(t *testing.T) {
	for _, tc := range []struct {
		model, gpu string
		want       int
	}{
		// (80e9*0.9 - 8.03e9*2 - 2 GiB) / (16 * 131072 B)
		{"llama-3.1-8b", "h100", 25650},
		// per GPU: (80e9*0.9 - 141.2e9/4 - 2 GiB) / (16 * 327680 B / 4)
		{"llama-3-70b", "h100", 26361},
		// per GPU: (141e9*0.9 - 32.8e9*2/2 - 2 GiB) / (16 * 262144 B / 2)
		{"qwen3-32b", "h200", 43846},
		{"llama-3-70b", "a10g", 0}, // 35 GB of weights per GPU do not fit in 24 GB
		{"llama-3.1-8b", "a10g", 1617},
	} {
		gpu, err := LookupGPU(tc.gpu)
		require.NoError(t, err)
		model, err := LookupModel(tc.model)
		require.NoError(t, err)
		got := NumGPUBlocks(gpu, model, 16, 0.9)
		require.Equal(t, tc.want, got, "%s on %s", tc.model, tc.gpu)
	}
}

func TestTensorParallelTiming(t *testing.T) {
	gpu, err := LookupGPU("h100")
	require.NoError(t, err)
	m70, err := LookupModel("meta-llama/Llama-3.1-70B-Instruct")
	require.NoError(t, err)
	require.Equal(t, 4, m70.TP())
	tp4 := NewTiming(gpu, m70)
	m70.TensorParallel = 1
	tp1 := NewTiming(gpu, m70)
	// Decode of one token: weights / 4 GPUs, plus 160 all-reduces of 10 µs.
	d4, d1 := tp4.StepTime(0, 1, 1000), tp1.StepTime(0, 1, 1000)
	require.Less(t, d4, d1/2)
	require.Greater(t, d4, d1/4)
}
