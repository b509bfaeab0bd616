package config

import (
	"errors"
	"fmt"
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
	// NumGPUBlocks is the KV cache size in blocks. Default 8192 (131072 tokens).
	NumGPUBlocks int `json:"num_gpu_blocks"`
	// TimeScale multiplies every simulated delay: 1 is real time, 0 answers at once. Default 1.
	TimeScale *float64 `json:"time_scale"`
	// MaxOutputTokens bounds generated answers when the request sets no limit. Default 256.
	MaxOutputTokens int `json:"max_output_tokens"`
	// Seed makes generated text deterministic per (seed, prompt). Default 0.
	Seed int64 `json:"seed"`
}

func (s *Sim) validate() error {
	switch {
	case s.Replicas < 1:
		return fmt.Errorf("replicas: must be at least 1, got %d", s.Replicas)
	case s.Model == "":
		return errors.New("model: must not be empty")
	case s.BlockSize < 1:
		return fmt.Errorf("block_size: must be positive, got %d", s.BlockSize)
	case s.NumGPUBlocks < 1:
		return fmt.Errorf("num_gpu_blocks: must be positive, got %d", s.NumGPUBlocks)
	case s.MaxModelLen < 1:
		return fmt.Errorf("max_model_len: must be positive, got %d", s.MaxModelLen)
	case s.MaxNumSeqs < 1:
		return fmt.Errorf("max_num_seqs: must be positive, got %d", s.MaxNumSeqs)
	case s.MaxOutputTokens < 1:
		return fmt.Errorf("max_output_tokens: must be positive, got %d", s.MaxOutputTokens)
	case s.TimeScale != nil && *s.TimeScale < 0:
		return fmt.Errorf("time_scale: must not be negative, got %g", *s.TimeScale)
	}
	return nil
}

func defaultSim() Sim {
	return Sim{
		Replicas: 3, Model: "meta-llama/Llama-3.1-8B-Instruct", GPU: "H100-SXM",
		MaxModelLen: 8192, MaxNumSeqs: 256, BlockSize: 16, NumGPUBlocks: 8192,
		TimeScale: ptr(1.0), MaxOutputTokens: 256,
	}
}
