package sim

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// loadPoint is what a closed-loop benchmark client (vllm bench serve --max-concurrency C with
// fixed lengths and --ignore-eos) measures: mean TTFT, mean TPOT (time per output token after
// the first) and output throughput.
type loadPoint struct {
	ttft, tpot time.Duration
	tokensPerS float64
}

// closedLoop drives the engine core in virtual time with `concurrency` clients, each sending a
// request of `in` distinct prompt tokens (no prefix hits) and `out` output tokens as soon as the
// previous one finished, for n requests in all.
func closedLoop(t *testing.T, gpuName, modelName string, concurrency, in, out, n int) loadPoint {
	gpu, err := LookupGPU(gpuName)
	require.NoError(t, err)
	model, err := LookupModel(modelName)
	require.NoError(t, err)
	blocks := NumGPUBlocks(gpu, model, 16, DefaultGPUMemoryUtilization)
	c := newTestEngine(t, blocks, 16, 256, defaultMaxNumBatchedTokens)
	c.timing = NewTiming(gpu, model)
	now := time.Unix(0, 0)
	start := now
	sent, done := 0, 0
	var inflight []*sequence
	var ttft, tpot time.Duration
	var measured int
	first := map[*sequence]time.Time{}
	send := func() {
		prompt := make([]int, in)
		for i := range prompt {
			prompt[i] = 1000 + (sent*in+i)%100000 // distinct blocks per request
		}
		prompt[0] = sent // and a distinct first token, so no two prompts share a block
		outTok := make([]int, out)
		s := newSequence(strconv.Itoa(sent), prompt, outTok, finishLength, make(chan struct{}, 1))
		c.add(s, now)
		inflight = append(inflight, s)
		sent++
	}
	for range concurrency {
		send()
	}
	for done < n {
		st, ok := c.Schedule(now)
		require.True(t, ok, "engine idle with requests in flight")
		now = st.End
		c.Complete()
		next := inflight[:0]
		for _, s := range inflight {
			if s.numOut >= 1 {
				if _, ok := first[s]; !ok {
					first[s] = now
				}
			}
			if s.status != statusFinished {
				next = append(next, s)
				continue
			}
			done++
			ttft += first[s].Sub(s.arrival)
			tpot += now.Sub(first[s]) / time.Duration(out-1)
			measured++
			delete(first, s)
		}
		inflight = next
		for len(inflight) < concurrency && sent < n {
			send()
		}
	}
	elapsed := now.Sub(start).Seconds()
	return loadPoint{ttft: ttft / time.Duration(measured), tpot: tpot / time.Duration(measured),
		tokensPerS: float64(n*out) / elapsed}
}

// TestFidelity puts the simulator next to published vLLM measurements (docs/simulator.md has
// the sources and the discussion) and fails when it drifts further than the tolerance from
// them. Everything runs in virtual time, so the numbers are exact and reproducible:
//
//	go test ./internal/engine/sim -run TestFidelity -v
func TestFidelity(t *testing.T) {
	for _, tc := range []struct {
		name                string
		gpu, model          string
		conc, in, out       int
		pubTPOT, pubTokensS float64 // ms, tokens/s; 0 = not published
		pubTTFT             float64 // ms
		tol                 float64 // allowed relative gap
	}{
		// InferenceBench (yobitelcomm.github.io/bench, recipe "concurrency sweep"): H100-80GB
		// HBM3, vLLM 0.21.0, Llama-3.1-8B-Instruct fp16, "chatbot-short" prompts (lengths not
		// given; 256/256 assumed here), p50 TTFT and TPOT.
		{"h100-8b-c1", "h100", "llama-3.1-8b", 1, 256, 256, 6.48, 122.2, 13.98, 0.35},
		{"h100-8b-c4", "h100", "llama-3.1-8b", 4, 256, 256, 6.59, 580.3, 22.75, 0.35},
		{"h100-8b-c16", "h100", "llama-3.1-8b", 16, 256, 256, 10.94, 1384.2, 41.69, 0.6},
		// John Musgrave, "vLLM throughput-latency sweep on NVIDIA A100": A100 40GB, vLLM 0.23.0,
		// Llama-3.1-8B-Instruct BF16, 1024 in / 128 out, --ignore-eos: ~75 tokens/s at C=1 and
		// a 6.6x throughput gain at C=8.
		{"a100-40gb-8b-c1", "a100-40gb", "llama-3.1-8b", 1, 1024, 128, 0, 75, 0, 0.25},
		{"a100-40gb-8b-c8", "a100-40gb", "llama-3.1-8b", 8, 1024, 128, 0, 6.6 * 75, 0, 0.3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := closedLoop(t, tc.gpu, tc.model, tc.conc, tc.in, tc.out, 20*tc.conc)
			msg := fmt.Sprintf("sim: TTFT %.2f ms, TPOT %.2f ms, %.1f tok/s; published: TTFT %.2f ms, TPOT %.2f ms, %.1f tok/s",
				ms(p.ttft), ms(p.tpot), p.tokensPerS, tc.pubTTFT, tc.pubTPOT, tc.pubTokensS)
			t.Log(msg)
			if tc.pubTPOT > 0 {
				require.InEpsilon(t, tc.pubTPOT, ms(p.tpot), tc.tol, msg)
			}
			require.InEpsilon(t, tc.pubTokensS, p.tokensPerS, tc.tol, msg)
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
