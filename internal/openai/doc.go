// Package openai holds the one contract between Strata's layers: the OpenAI-compatible HTTP API.
//
// It has the wire types every layer reads (only the fields a layer needs; bodies are forwarded as
// bytes, so unknown fields pass through untouched), the error envelope and the single place that
// maps errors to HTTP status, the Server-Sent Events reader and writer, and the names of the
// headers that cross layers.
//
// Sources: the OpenAI API reference (https://platform.openai.com/docs/api-reference) for the chat
// completions, completions and models shapes and the error envelope; vLLM
// vllm/entrypoints/openai/protocol.py for the fields vLLM adds (prompt_tokens_details.cached_tokens,
// stream_options.continuous_usage_stats); the WHATWG HTML Living Standard §9.2 for SSE framing;
// ../shared/ARCHITECTURE.md for the cross-layer headers.
package openai
