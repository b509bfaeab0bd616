// Package sim is a simulated vLLM replica: vLLM's OpenAI-compatible HTTP server over a model of
// vLLM's V1 engine, so the router, gateway and platform can be developed, tested and benchmarked
// without GPUs, and `strata serve` runs end to end on one machine.
//
// What is modelled (see README.md for parameters and gaps):
//   - the HTTP surface and wire formats of vLLM's OpenAI server: chat completions and completions
//     (streaming with usage chunks and continuous usage stats), /v1/models, /health, /metrics,
//     /tokenize, and vLLM's error JSON (vllm/entrypoints/openai/);
//   - the model's real tokenizer (internal/tokenizer: Llama 3 or Qwen2/Qwen3 vocabulary, chat
//     template, BOS and EOS, chosen by the model profile); deterministic answers of English words
//     that re-tokenize to themselves, cut by stop, stop_token_ids, min_tokens and ignore_eos as
//     vLLM's sampling parameters do (generate.go);
//   - the engine core (sim.Engine: engine.go, core.go; P/D in kvtransfer.go): a waiting queue,
//     continuous batching under max_num_seqs and a token budget with chunked prefill, a paged KV
//     cache with ref-counted blocks, prefix caching over full blocks keyed by vLLM's sha256_cbor
//     hash chain (hash.go), LRU eviction of cached free blocks (kvcache.go) and preemption by
//     recompute (vllm/v1/core/);
//   - prefill/decode disaggregation with vLLM NixlConnector's kv_transfer_params (kvtransfer.go);
//   - a roofline latency model per GPU and model profile (profile.go), advanced on an injected
//     clock scaled by time_scale, so the same code runs in real and in virtual time;
//   - vLLM's Prometheus metrics, on a registry per replica (vllm/v1/metrics/loggers.py);
//   - vLLM's KV-cache events over ZMQ in both encodings, with the replay socket (kvevents.go,
//     vllm/distributed/kv_events.py);
//   - /v1/embeddings with lexical signal (embeddings.go), /detokenize, and tool calls by a
//     documented deterministic rule (toolcall.go);
//   - fault injection for tests of the layers above (faults.go, config.Sim.Faults): error JSON,
//     streams cut mid-way, hangs, and a slow cold start, deterministic from the seed.
//
// The core is a deterministic state machine with no goroutines; one goroutine per Server (the
// step loop) drives it, plus the KV-event replay server when configured; Close stops them.
package sim
