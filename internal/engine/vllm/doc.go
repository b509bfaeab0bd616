// Package vllm is Strata's adapter to vLLM replicas, real or simulated: it follows vLLM's wire
// formats exactly so the router can read any replica the same way.
//
//   - KV-cache events (events.go): vLLM's ZMQ messages [topic, sequence, msgpack KVEventBatch]
//     decoded in both event encodings (tagged arrays before vLLM 0.24, tagged maps since),
//     integer hashes (uint64, also above 2^63) and 32-byte binary hashes
//     (vllm/distributed/kv_events.py);
//   - a Subscriber (subscriber.go) that rebuilds one replica's cached block set from them,
//     replaying gaps from the replica's ROUTER replay socket;
//   - ParseMetrics (metrics.go): an engine's /metrics text (vllm/v1/metrics/loggers.py names)
//     into the Telemetry the router scores replicas with;
//   - a Client (client.go) for /metrics, /tokenize and LoRA load/unload.
//
// Malformed input never panics: decoders return errors wrapping ErrMalformed, and the
// subscriber counts and skips them. The package imports no other layer: the router defines the
// interfaces it consumes and the stack wires this package in.
package vllm
