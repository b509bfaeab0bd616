package config

import (
	"fmt"
	"time"
)

// Platform configures the workflow layer. Every key's zero value means its default, so a
// config without a platform section (and config.Default()) gets the defaults below.
type Platform struct {
	// MaxInferIters is the default bound on inference calls of one response's server-side tool
	// loop (a request's max_infer_iters overrides it). Default 10, as LlamaStack.
	MaxInferIters int `json:"max_infer_iters"`
	// ToolTimeout bounds one server-side tool call (file_search, mcp); a call that takes longer
	// fails with a tool error the model sees. Default 30s.
	ToolTimeout Duration `json:"tool_timeout"`
	// MaxFileBytes bounds one file uploaded to /v1/files, in bytes; larger uploads get 413.
	// Default 32 MiB. The front door's max_body_bytes bounds it too.
	MaxFileBytes int64 `json:"max_file_bytes"`
}

// InferIters returns MaxInferIters or its default, 10.
func (p Platform) InferIters() int {
	if p.MaxInferIters > 0 {
		return p.MaxInferIters
	}
	return 10
}

// ToolCallTimeout returns ToolTimeout or its default, 30s.
func (p Platform) ToolCallTimeout() time.Duration {
	if p.ToolTimeout > 0 {
		return p.ToolTimeout.D()
	}
	return 30 * time.Second
}

// FileBytes returns MaxFileBytes or its default, 32 MiB.
func (p Platform) FileBytes() int64 {
	if p.MaxFileBytes > 0 {
		return p.MaxFileBytes
	}
	return 32 << 20
}

// Validate checks the platform section; the error names the offending key under "platform.".
// Negative values are rejected (zero means the default).
func (p Platform) Validate() error {
	switch {
	case p.MaxInferIters < 0:
		return fmt.Errorf("platform.max_infer_iters: must not be negative, got %d", p.MaxInferIters)
	case p.ToolTimeout < 0:
		return fmt.Errorf("platform.tool_timeout: must not be negative, got %s", p.ToolTimeout.D())
	case p.MaxFileBytes < 0:
		return fmt.Errorf("platform.max_file_bytes: must not be negative, got %d", p.MaxFileBytes)
	}
	return nil
}
