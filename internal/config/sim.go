package config

import (
	"errors"
	"fmt"
	"math"
)

// Sim configures the simulated vLLM replicas started when no external engines are listed.
type Sim struct {
	// Replicas is the number of simulated replicas. Default 3.
	Replicas int `json:"replicas"`
	// Model is the simulated model profile (its size sets the timing). Default
	// meta-llama/Llama-3.1-8B-Instruct.
	Model string `json:"model"`
	// ServedModelName is the model name of the API, as vLLM's --served-model-name. Default Model.
	ServedModelName string `json:"served_model_name"`
	// GPU is the simulated GPU profile. Default H100-SXM.
	GPU string `json:"gpu"`
	// MaxModelLen is the context length in tokens; longer requests get vLLM's 400. Default 8192.
	MaxModelLen int `json:"max_model_len"`
	// MaxNumSeqs caps concurrently running requests; the rest wait. Default 256.
	MaxNumSeqs int `json:"max_num_seqs"`
	// BlockSize is the KV block size in tokens. Default 16.
	BlockSize int `json:"block_size"`
	// NumGPUBlocks is the KV cache size in blocks. 0 (the default) derives it as vLLM does from
	// the GPU's memory, GPUMemoryUtilization, the weights and the KV size per token.
	NumGPUBlocks int `json:"num_gpu_blocks"`
	// GPUMemoryUtilization is the fraction of GPU memory vLLM may use (--gpu-memory-utilization),
	// in (0, 1]. Default 0.9.
	GPUMemoryUtilization *float64 `json:"gpu_memory_utilization"`
	// TimeScale multiplies every simulated delay: 1 is real time, 0 answers at once. Default 1.
	TimeScale *float64 `json:"time_scale"`
	// MaxOutputTokens bounds generated answers when the request sets no limit. Default 256.
	MaxOutputTokens int `json:"max_output_tokens"`
	// Seed makes generated text deterministic per (seed, prompt). Default 0.
	Seed int64 `json:"seed"`
	// MaxLoras is the number of LoRA adapters that can run in one batch (vLLM's --max-loras);
	// requests for another adapter wait. Default 1, as vLLM.
	MaxLoras int `json:"max_loras"`
	// KVEventsEndpoint is the ZMQ PUB address the replica publishes KV-cache events on, as
	// vLLM's --kv-events-config endpoint ("tcp://127.0.0.1:5557"; port 0 picks a free port).
	// Empty (the default) publishes nothing. Several replicas of one config each add their
	// index to the port, as vLLM offsets it by data-parallel rank.
	KVEventsEndpoint string `json:"kv_events_endpoint"`
	// KVEventsReplayEndpoint is the ZMQ ROUTER address serving replays of missed batches
	// (vLLM's replay_endpoint). Empty: no replay socket.
	KVEventsReplayEndpoint string `json:"kv_events_replay_endpoint"`
	// KVEventsTopic is the topic frame of every published message (vLLM's topic). Default "".
	KVEventsTopic string `json:"kv_events_topic"`
	// KVEventsEncoding selects how each event is encoded in the msgpack payload: "map" (tagged
	// maps, vLLM >= 0.24, the default) or "array" (tagged positional arrays, earlier vLLM).
	KVEventsEncoding string `json:"kv_events_encoding"`
	// KVTransferGbps is the bandwidth, in Gbit/s per GPU, of the link prefill/decode
	// disaggregation moves KV blocks over (vLLM's NixlConnector over RDMA). Default 400: one
	// 400 Gb/s NIC per GPU, as in NVIDIA's DGX H100 (eight ConnectX-7 400 Gb/s compute ports for
	// eight GPUs, DGX H100 user guide).
	KVTransferGbps float64 `json:"kv_transfer_gbps"`
	// KVTransferHost and KVTransferPort are the NIXL side channel a prefill replica names in
	// the kv_transfer_params of its responses (remote_host, remote_port), as vLLM's
	// VLLM_NIXL_SIDE_CHANNEL_HOST and VLLM_NIXL_SIDE_CHANNEL_PORT. The simulator moves no
	// bytes: they are echoed only. Defaults "localhost" and 5600, vLLM's.
	KVTransferHost string `json:"kv_transfer_host"`
	KVTransferPort int    `json:"kv_transfer_port"`
	// Faults injects failures for tests of the layers above; all off by default.
	Faults SimFaults `json:"faults"`
}

// Defaults of the P/D fields of Sim (see there).
const (
	DefaultKVTransferGbps = 400
	DefaultKVTransferHost = "localhost"
	DefaultKVTransferPort = 5600
)

// SimFaults configures the simulator's fault injection (key sim.faults). Rates are fractions in
// [0, 1] of the inference requests (POST /v1/chat/completions, /v1/completions, /v1/embeddings),
// drawn deterministically from sim.seed, the replica name and the request's arrival ordinal.
type SimFaults struct {
	// ErrorRate is the fraction of inference requests answered at once with vLLM's error JSON,
	// half of them 500 InternalServerError, half 503 ServiceUnavailableError. Default 0.
	ErrorRate float64 `json:"error_rate"`
	// ResetRate is the fraction of streamed requests whose connection is cut (no terminating
	// chunk, no data: [DONE]) after ResetAfter events. Default 0.
	ResetRate float64 `json:"reset_rate"`
	// ResetAfter is the number of SSE events sent before a reset cuts the stream (when the
	// next event would be sent); 0 sends the response headers only. A stream of at most
	// ResetAfter events ends normally. Default 0.
	ResetAfter int `json:"reset_after"`
	// HangRate is the fraction of inference requests that never answer until the client goes
	// away (or the replica closes). Default 0.
	HangRate float64 `json:"hang_rate"`
	// ColdStart is how long after start the replica answers /health (and every request but
	// /metrics) with 503, on the replica's clock, not scaled by time_scale. Default 0.
	ColdStart Duration `json:"cold_start"`
}

func (f *SimFaults) validate() error {
	for _, r := range []struct {
		name string
		v    float64
	}{{"error_rate", f.ErrorRate}, {"reset_rate", f.ResetRate}, {"hang_rate", f.HangRate}} {
		if !(r.v >= 0 && r.v <= 1) { // also rejects NaN
			return fmt.Errorf("faults.%s: must be in [0, 1], got %g", r.name, r.v)
		}
	}
	switch {
	case f.ResetAfter < 0:
		return fmt.Errorf("faults.reset_after: must not be negative, got %d", f.ResetAfter)
	case f.ColdStart < 0:
		return fmt.Errorf("faults.cold_start: must not be negative, got %s", f.ColdStart.D())
	}
	return nil
}

// KV-event encodings of Sim.KVEventsEncoding.
const (
	KVEventsEncodingMap   = "map"
	KVEventsEncodingArray = "array"
)

// validZMQEndpoint reports whether ep names a ZMQ transport the simulator can bind.
func validZMQEndpoint(ep string) bool {
	for _, p := range []string{"tcp://", "ipc://", "inproc://"} {
		if len(ep) > len(p) && ep[:len(p)] == p {
			return true
		}
	}
	return false
}

func (s *Sim) validate() error {
	switch {
	case s.Replicas < 1:
		return fmt.Errorf("replicas: must be at least 1, got %d", s.Replicas)
	case s.Model == "":
		return errors.New("model: must not be empty")
	case s.BlockSize < 1:
		return fmt.Errorf("block_size: must be positive, got %d", s.BlockSize)
	case s.MaxLoras < 1:
		return fmt.Errorf("max_loras: must be at least 1, got %d", s.MaxLoras)
	case s.NumGPUBlocks < 0:
		return fmt.Errorf("num_gpu_blocks: must not be negative, got %d", s.NumGPUBlocks)
	case s.GPUMemoryUtilization != nil && (*s.GPUMemoryUtilization <= 0 || *s.GPUMemoryUtilization > 1):
		return fmt.Errorf("gpu_memory_utilization: must be in (0, 1], got %g", *s.GPUMemoryUtilization)
	case s.MaxModelLen < 1:
		return fmt.Errorf("max_model_len: must be positive, got %d", s.MaxModelLen)
	case s.MaxNumSeqs < 1:
		return fmt.Errorf("max_num_seqs: must be positive, got %d", s.MaxNumSeqs)
	case s.MaxOutputTokens < 1:
		return fmt.Errorf("max_output_tokens: must be positive, got %d", s.MaxOutputTokens)
	case s.TimeScale != nil && *s.TimeScale < 0:
		return fmt.Errorf("time_scale: must not be negative, got %g", *s.TimeScale)
	case s.KVEventsEncoding != KVEventsEncodingMap && s.KVEventsEncoding != KVEventsEncodingArray:
		return fmt.Errorf("kv_events_encoding: %q is neither %q nor %q", s.KVEventsEncoding, KVEventsEncodingMap, KVEventsEncodingArray)
	case s.KVEventsEndpoint != "" && !validZMQEndpoint(s.KVEventsEndpoint):
		return fmt.Errorf("kv_events_endpoint: %q is not a tcp://, ipc:// or inproc:// address", s.KVEventsEndpoint)
	case s.KVEventsReplayEndpoint != "" && !validZMQEndpoint(s.KVEventsReplayEndpoint):
		return fmt.Errorf("kv_events_replay_endpoint: %q is not a tcp://, ipc:// or inproc:// address", s.KVEventsReplayEndpoint)
	case s.KVEventsReplayEndpoint != "" && s.KVEventsEndpoint == "":
		return errors.New("kv_events_replay_endpoint: needs kv_events_endpoint")
	case !(s.KVTransferGbps > 0) || math.IsInf(s.KVTransferGbps, 1):
		return fmt.Errorf("kv_transfer_gbps: must be a positive number, got %g", s.KVTransferGbps)
	case s.KVTransferPort < 1 || s.KVTransferPort > 65535:
		return fmt.Errorf("kv_transfer_port: must be in [1, 65535], got %d", s.KVTransferPort)
	}
	return s.Faults.validate()
}

func defaultSim() Sim {
	return Sim{
		Replicas: 3, Model: "meta-llama/Llama-3.1-8B-Instruct", GPU: "H100-SXM",
		MaxModelLen: 8192, MaxNumSeqs: 256, BlockSize: 16, GPUMemoryUtilization: ptr(0.9), MaxLoras: 1,
		TimeScale: ptr(1.0), MaxOutputTokens: 256, KVEventsEncoding: KVEventsEncodingMap,
		KVTransferGbps: DefaultKVTransferGbps, KVTransferHost: DefaultKVTransferHost, KVTransferPort: DefaultKVTransferPort,
	}
}
