package sim

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// The prefill side returns vLLM's kv_transfer_params and holds its blocks for the transfer;
// the decode side waits for the transfer of what its own cache lacks, then recomputes only the
// last prompt token.
func TestEnginePrefillDecode(t *testing.T) {
	cfg := engineCfg(0, 16, 8192)
	p, err := NewEngine(cfg, "prefill-0")
	require.NoError(t, err)
	d, err := NewEngine(cfg, "decode-0")
	require.NoError(t, err)
	t0 := time.Unix(0, 0)
	prompt := tokensFrom(1, 1000)

	require.NoError(t, p.Add(Request{ID: "r1", Prompt: prompt, OutputLen: 1, Arrival: t0,
		KVTransfer: &KVTransferParams{DoRemoteDecode: true}}))
	var usageAtFinish float64
	var psteps []stepLog
	p.RunUntil(t0, t0.Add(time.Hour), func(st *Step) {
		if len(st.Finished) > 0 {
			usageAtFinish = st.Stats.KVCacheUsage
		}
		psteps = append(psteps, copyStep(st))
	})
	require.True(t, p.Idle())
	f := finishedByID(psteps)["r1"]
	require.NotNil(t, f.KVTransfer)
	kvx := *f.KVTransfer
	require.Len(t, kvx.RemoteBlockIDs, 63, "ceil(1000/16) blocks")
	kvx.RemoteBlockIDs = nil
	require.Equal(t, KVTransferParams{DoRemotePrefill: true, RemoteEngineID: "prefill-0", RemoteRequestID: "r1",
		RemoteHost: "localhost", RemotePort: 5600, TPSize: 1}, kvx)
	require.Positive(t, usageAtFinish, "the blocks are held for the decode side")
	require.Zero(t, p.Stats().KVCacheUsage, "and released after the modelled transfer")

	// Decode side: the whole prompt is remote.
	xfer := time.Duration(float64(1000) * p.model.KVBytesPerToken() / (400e9 / 8) * float64(time.Second))
	t1 := f.End
	require.NoError(t, d.Add(Request{ID: "r1", Ref: 1, Prompt: prompt, OutputLen: 10, Arrival: t1, KVTransfer: f.KVTransfer}))
	st, ok := d.Schedule(t1)
	require.False(t, ok, "nothing to compute while the KV moves")
	require.Equal(t, 1, st.Stats.Waiting)
	require.Positive(t, st.Stats.KVCacheUsage, "blocks are allocated for the transfer")
	wake, ok := d.NextWake()
	require.True(t, ok)
	require.Equal(t, t1.Add(xfer), wake)
	steps := drain(t, d, t1)
	g := finishedByID(steps)["r1"]
	require.Equal(t, 1000, g.RemoteTokens)
	require.Zero(t, g.CachedTokens)
	require.Equal(t, wake.Add(d.timing.StepTime(1, 0, 1000)), g.FirstToken, "only the last prompt token is recomputed")
	require.Equal(t, 1, steps[0].Prefill)
	stored := 0
	for _, ev := range steps[0].Events {
		if ev.Kind == KVBlockStored {
			stored += len(ev.BlockHashes)
		}
	}
	require.Equal(t, 62, stored, "the received full blocks join the prefix cache (999 tokens)")

	// A second decode of the same prompt receives only what its cache lacks.
	t2 := g.End
	require.NoError(t, d.Add(Request{ID: "r2", Prompt: prompt, OutputLen: 2, Arrival: t2, KVTransfer: f.KVTransfer}))
	h := finishedByID(drain(t, d, t2))["r2"]
	require.Equal(t, 992, h.CachedTokens)
	require.Equal(t, 8, h.RemoteTokens)
}

// Transfers of one engine share its link: the second waits for the first.
func TestEngineTransfersShareTheLink(t *testing.T) {
	d := mustEngine(t, engineCfg(0, 16, 8192))
	t0 := time.Unix(0, 0)
	params := &KVTransferParams{DoRemotePrefill: true, RemoteBlockIDs: []int{1}, RemoteEngineID: "p", RemoteRequestID: "x",
		RemoteHost: "localhost", RemotePort: 5600, TPSize: 1}
	require.NoError(t, d.Add(Request{ID: "a", Prompt: tokensFrom(1, 800), OutputLen: 1, Arrival: t0, KVTransfer: params}))
	require.NoError(t, d.Add(Request{ID: "b", Prompt: tokensFrom(5000, 800), OutputLen: 1, Arrival: t0, KVTransfer: params}))
	_, ok := d.Schedule(t0)
	require.False(t, ok)
	one := d.transferTime(800)
	require.Equal(t, []time.Time{t0.Add(one), t0.Add(2 * one)}, []time.Time{d.waiting[0].readyAt, d.waiting[1].readyAt})
	f := finishedByID(drain(t, d, t0))
	require.Equal(t, 800, f["a"].RemoteTokens)
	require.Equal(t, 800, f["b"].RemoteTokens)

	// Without remote_block_ids vLLM transfers nothing: the prompt is computed locally.
	require.NoError(t, d.Add(Request{ID: "c", Prompt: tokensFrom(9000, 100), OutputLen: 1, Arrival: t0,
		KVTransfer: &KVTransferParams{DoRemotePrefill: true}}))
	require.Zero(t, finishedByID(drain(t, d, t0))["c"].RemoteTokens)
}

// Two simulators over HTTP, driven as llm-d's routing sidecar drives vLLM with NixlConnector:
// the prefill request with do_remote_decode and max_tokens 1, then the original request with
// the prefill response's kv_transfer_params to the decode side.
func TestPrefillDecodeOverHTTP(t *testing.T) {
	cfg := testConfig()
	_, prefill := startServer(t, cfg, clock.RealClock{}, nil)
	dsrv, decode := startServer(t, cfg, clock.RealClock{}, nil)
	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40)

	for _, tc := range []struct {
		name, path, input string
	}{
		{"completions", "/v1/completions", fmt.Sprintf(`"prompt": %q`, prompt)},
		{"chat", "/v1/chat/completions", fmt.Sprintf(`"messages": [{"role": "user", "content": %q}]`, prompt+tcSuffix)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The sidecar's prefill request (llm-d-routing-sidecar connector_nixlv2.go).
			code, body := postJSON(t, prefill, tc.path, fmt.Sprintf(`{"model": %q, %s, "max_tokens": 1, "stream": false,
				"kv_transfer_params": {"do_remote_decode": true, "do_remote_prefill": false, "remote_engine_id": null,
				"remote_block_ids": null, "remote_host": null, "remote_port": null}}`, testModel, tc.input))
			require.Equal(t, 200, code, body)
			var presp struct {
				Usage struct {
					PromptTokens int `json:"prompt_tokens"`
				} `json:"usage"`
				KVTransferParams map[string]any `json:"kv_transfer_params"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &presp))
			kvx := presp.KVTransferParams
			require.NotNil(t, kvx, body)
			require.Equal(t, true, kvx["do_remote_prefill"])
			require.Equal(t, false, kvx["do_remote_decode"])
			require.Equal(t, "replica-0", kvx["remote_engine_id"])
			require.Equal(t, "localhost", kvx["remote_host"])
			require.EqualValues(t, 5600, kvx["remote_port"])
			require.EqualValues(t, 1, kvx["tp_size"])
			require.NotEmpty(t, kvx["remote_request_id"])
			require.Len(t, kvx["remote_block_ids"], (presp.Usage.PromptTokens+15)/16)

			// The decode request: the original one, with the prefill's kv_transfer_params.
			raw, err := json.Marshal(kvx)
			require.NoError(t, err)
			code, body = postJSON(t, decode, tc.path, fmt.Sprintf(`{"model": %q, %s, "max_tokens": 12, "ignore_eos": true,
				"kv_transfer_params": %s}`, testModel, tc.input, raw))
			require.Equal(t, 200, code, body)
			var dresp struct {
				Usage struct {
					PromptTokens     int `json:"prompt_tokens"`
					CompletionTokens int `json:"completion_tokens"`
					Details          struct {
						CachedTokens int `json:"cached_tokens"`
					} `json:"prompt_tokens_details"`
				} `json:"usage"`
				KVTransferParams any `json:"kv_transfer_params"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &dresp))
			require.Equal(t, presp.Usage.PromptTokens, dresp.Usage.PromptTokens)
			require.Equal(t, 12, dresp.Usage.CompletionTokens)
			require.Equal(t, dresp.Usage.PromptTokens, dresp.Usage.Details.CachedTokens, "vLLM counts received tokens as cached")
			require.Nil(t, dresp.KVTransferParams)
			require.NotEmpty(t, dsrv.CachedBlockHashes(), "the received blocks are in the decode side's prefix cache")

			// The decode request streamed, as the sidecar forwards a client's stream.
			code, body = postJSON(t, decode, tc.path, fmt.Sprintf(`{"model": %q, %s, "max_tokens": 5, "ignore_eos": true,
				"stream": true, "stream_options": {"include_usage": true}, "kv_transfer_params": %s}`, testModel, tc.input, raw))
			require.Equal(t, 200, code, body)
			events := sseData(t, body)
			require.Equal(t, "[DONE]", events[len(events)-1])
			require.Contains(t, events[len(events)-2], `"completion_tokens":5`)
		})
	}

	// A bad kv_transfer_params is vLLM's 400 validation error.
	code, body := postJSON(t, decode, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": "hi", "kv_transfer_params": {"remote_port": "x"}}`, testModel))
	require.Equal(t, 400, code, body)
}

const tcSuffix = " Answer briefly."

// In virtual time, a decode-side request's TTFT is exactly the modelled transfer of its prompt's
// KV plus one step recomputing its last prompt token.
func TestPrefillDecodeVirtualTime(t *testing.T) {
	cfg := testConfig()
	one := 1.0
	cfg.TimeScale = &one
	clk := clocktesting.NewFakeClock(time.Unix(1_700_000_000, 0))
	s, hs := startServer(t, cfg, clk, nil)
	stop := make(chan struct{})
	stepped := make(chan struct{})
	go func() { // advance virtual time whenever the step loop waits on it
		defer close(stepped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if clk.HasWaiters() {
				clk.Step(100 * time.Microsecond)
			} else {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
	defer func() { close(stop); <-stepped }()

	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40)
	code, body := postJSON(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": 1, "ignore_eos": true,
		"kv_transfer_params": {"do_remote_prefill": true, "remote_block_ids": [1, 2, 3], "remote_engine_id": "p",
		"remote_request_id": "r", "remote_host": "localhost", "remote_port": 5600, "tp_size": 1}}`, testModel, prompt))
	require.Equal(t, 200, code, body)
	var resp struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &resp))
	L := resp.Usage.PromptTokens
	want := s.eng.transferTime(L) + s.eng.timing.StepTime(1, 0, L)
	require.InDelta(t, want.Seconds(), metricValue(t, scrape(t, hs), "vllm:time_to_first_token_seconds"), 1e-9)
}
