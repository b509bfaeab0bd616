package vllm_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/engine/vllm"
)

// testdata/vllm_metrics.txt is a vLLM V1 /metrics page in prometheus_client's exposition
// format, its names, help texts and labels taken from vllm/v1/metrics/loggers.py (not a
// capture); vllm_v0_metrics.txt has the pre-0.10 names the parser falls back to.
func TestParseMetricsGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		want vllm.Telemetry
	}{
		{"vllm_metrics.txt", vllm.Telemetry{
			Models:          []string{"meta-llama/Llama-3.1-8B-Instruct"},
			RequestsRunning: 12, RequestsWaiting: 3, KVCacheUsage: 0.4375,
			PrefixCacheQueries: 52480, PrefixCacheHits: 31232, Preemptions: 2,
			PromptTokens: 52480, GenerationTokens: 9120, RequestsSucceeded: 80,
			TTFT: vllm.Histogram{Count: 80, Sum: 6.4}, ITL: vllm.Histogram{Count: 9040, Sum: 91.2},
			QueueTime: vllm.Histogram{Count: 83, Sum: 1.5},
			BlockSize: 16, NumGPUBlocks: 27873,
			LoRA: &vllm.LoRAInfo{Running: []string{"sql-lora", "chat-lora"}, Waiting: []string{"sql-lora"}, MaxLoRA: 4},
		}},
		{"vllm_v0_metrics.txt", vllm.Telemetry{
			Models: []string{"Qwen/Qwen3-8B"}, RequestsRunning: 4, KVCacheUsage: 0.25,
			PrefixCacheQueries: 100, PrefixCacheHits: 48,
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open("testdata/" + tc.file)
			require.NoError(t, err)
			defer f.Close()
			got, err := vllm.ParseMetrics(f)
			require.NoError(t, err)
			require.Equal(t, tc.want, *got)
		})
	}
}

func TestParseMetricsMalformed(t *testing.T) {
	for name, text := range map[string]string{
		"not prometheus":  "{\"running\": 3}\n",
		"no vllm series":  "# TYPE up gauge\nup 1\n",
		"bad value":       "vllm:num_requests_running{engine=\"0\"} many\n",
		"duplicate TYPE":  "# TYPE vllm:num_requests_running gauge\n# TYPE vllm:num_requests_running counter\n",
		"unclosed labels": "vllm:num_requests_running{engine=\"0\" 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := vllm.ParseMetrics(strings.NewReader(text))
			require.ErrorIs(t, err, vllm.ErrMalformed)
		})
	}
	big := io.MultiReader(strings.NewReader("vllm:num_requests_running 1\n"), strings.NewReader("# "+strings.Repeat("x", vllm.MaxMetricsBytes)+"\n"))
	_, err := vllm.ParseMetrics(big)
	require.ErrorIs(t, err, vllm.ErrMalformed)
}

// The adapter reads the simulator's /metrics as it reads vLLM's.
func TestParseSimMetrics(t *testing.T) {
	cfg := config.Default().Sim
	zero := 0.0
	cfg.TimeScale = &zero
	srv, err := sim.New(cfg, "r0", clock.RealClock{}, nil)
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()
	for i := range 3 {
		complete(t, hs.URL, prompt(i, 100))
	}
	resp, err := http.Get(hs.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	tel, err := vllm.ParseMetrics(resp.Body)
	require.NoError(t, err)
	require.Equal(t, []string{cfg.Model}, tel.Models)
	require.Equal(t, 300.0, tel.PromptTokens)
	require.Equal(t, 24.0, tel.GenerationTokens)
	require.Equal(t, 3.0, tel.RequestsSucceeded)
	require.Equal(t, uint64(3), tel.TTFT.Count)
	require.Equal(t, uint64(21), tel.ITL.Count)
	require.Equal(t, cfg.BlockSize, tel.BlockSize)
	require.Equal(t, 25650, tel.NumGPUBlocks, "derived from the H100 profile")
	require.Zero(t, tel.KVCacheUsage)
}

func FuzzParseMetrics(f *testing.F) {
	for _, name := range []string{"vllm_metrics.txt", "vllm_v0_metrics.txt"} {
		b, err := os.ReadFile("testdata/" + name)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tel, err := vllm.ParseMetrics(bytes.NewReader(b))
		if err != nil {
			require.ErrorIs(t, err, vllm.ErrMalformed)
			return
		}
		require.NotNil(t, tel)
	})
}

func BenchmarkParseMetrics(b *testing.B) {
	text, err := os.ReadFile("testdata/vllm_metrics.txt")
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := vllm.ParseMetrics(bytes.NewReader(text)); err != nil {
			b.Fatal(err)
		}
	}
}
