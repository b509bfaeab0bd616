package config

import (
	"fmt"
	"net/url"
	"time"
)

// Platform configures the workflow layer. Every key's zero value means its default, so a
// config without a platform section (and config.Default()) gets the defaults below.
type Platform struct {
	// MaxInferIters is the default bound on inference calls of one response's server-side tool
	// loop (a request's max_infer_iters overrides it). Default 10, as LlamaStack.
	MaxInferIters int `json:"max_infer_iters"`
	// ToolTimeout bounds one server-side tool call (file_search, one MCP tools/call); a call
	// that takes longer fails with a tool error the model sees. Default 30s.
	ToolTimeout Duration `json:"tool_timeout"`
	// MCPListTimeout bounds connecting to one MCP server and listing its tools, once per
	// response; a server that takes longer gets an mcp_list_tools item with an error and its
	// tools are not offered to the model. Default 10s.
	MCPListTimeout Duration `json:"mcp_list_timeout"`
	// MCPAllowedURLs, when set, are the URL prefixes an mcp tool's server_url must start with
	// (e.g. "https://tools.internal/"); others get 400. Empty means any http(s) URL: the
	// platform then connects wherever a caller points it, so set this where the platform can
	// reach private networks.
	MCPAllowedURLs []string `json:"mcp_allowed_urls"`
	// IdentityTTL is how long the tenant identity of an API key, asked of the gateway below
	// (GET /v1/strata/identity), is reused before it is asked again. It bounds how long a
	// revoked key can still read the platform's stored objects. Default 30s.
	IdentityTTL Duration `json:"identity_ttl"`
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

// MCPListToolsTimeout returns MCPListTimeout or its default, 10s.
func (p Platform) MCPListToolsTimeout() time.Duration {
	if p.MCPListTimeout > 0 {
		return p.MCPListTimeout.D()
	}
	return 10 * time.Second
}

// IdentityCacheTTL returns IdentityTTL or its default, 30s.
func (p Platform) IdentityCacheTTL() time.Duration {
	if p.IdentityTTL > 0 {
		return p.IdentityTTL.D()
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
// Negative values are rejected (zero means the default); mcp_allowed_urls must be absolute
// http(s) URLs.
func (p Platform) Validate() error {
	switch {
	case p.MaxInferIters < 0:
		return fmt.Errorf("platform.max_infer_iters: must not be negative, got %d", p.MaxInferIters)
	case p.ToolTimeout < 0:
		return fmt.Errorf("platform.tool_timeout: must not be negative, got %s", p.ToolTimeout.D())
	case p.MCPListTimeout < 0:
		return fmt.Errorf("platform.mcp_list_timeout: must not be negative, got %s", p.MCPListTimeout.D())
	case p.IdentityTTL < 0:
		return fmt.Errorf("platform.identity_ttl: must not be negative, got %s", p.IdentityTTL.D())
	case p.MaxFileBytes < 0:
		return fmt.Errorf("platform.max_file_bytes: must not be negative, got %d", p.MaxFileBytes)
	}
	for i, s := range p.MCPAllowedURLs {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("platform.mcp_allowed_urls[%d]: want an absolute http(s) URL, got %q", i, s)
		}
	}
	return nil
}
