package sim

import "time"

// Prefill/decode disaggregation, as vLLM's NixlConnector does it
// (vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py, vllm/v1/core/sched/scheduler.py)
// and llm-d's routing sidecar drives it: the sidecar sends the request first to a prefill
// engine with kv_transfer_params {"do_remote_decode": true, ...} and max_tokens 1, takes the
// kv_transfer_params of that response, and sends the original request with them to a decode
// engine.
//
// Prefill side (do_remote_decode): the request runs as any other. When it finishes by length
// (NixlConnectorScheduler.request_finished returns nothing otherwise), the response carries
// {do_remote_prefill: true, do_remote_decode: false, remote_block_ids: the request's block ids,
// remote_engine_id, remote_request_id, remote_host, remote_port (the NIXL side channel,
// VLLM_NIXL_SIDE_CHANNEL_HOST/PORT), tp_size}, and its blocks stay referenced until the decode
// side has read them. The simulator has no side channel, so it holds them for the modelled
// transfer time of the prompt from the finish (vLLM: until the decode side's notification, at
// most VLLM_NIXL_ABORT_REQUEST_TIMEOUT).
//
// Decode side (do_remote_prefill with remote_block_ids): when first scheduled, the request takes
// its hit in the local prefix cache, then counts the rest of the prompt as external tokens
// (get_num_new_matched_tokens: prompt length - locally computed), gets blocks for the whole
// prompt and waits, in the waiting queue without blocking it and without using the token budget
// or a max_num_seqs slot, while the KV moves over the link (WAITING_FOR_REMOTE_KVS). The
// transfer takes external tokens * the model's KV bytes per token / the link bandwidth
// (config.Sim.KVTransferGbps per GPU, every GPU of a TP group on its own NIC), and transfers of
// one engine run one after the other. When it is done, the blocks join the prefix cache and
// the request recomputes its last prompt token (_update_waiting_for_remote_kv: "if
// num_computed_tokens == request.num_tokens: num_computed_tokens -= 1"), then decodes.

// KVTransferParams is vLLM's kv_transfer_params of NixlConnector, on requests and responses of
// /v1/completions and /v1/chat/completions (vllm/entrypoints/openai/protocol.py
// kv_transfer_params: dict[str, Any]; the keys are those of NixlConnectorScheduler).
type KVTransferParams struct {
	DoRemoteDecode  bool   `json:"do_remote_decode"`
	DoRemotePrefill bool   `json:"do_remote_prefill"`
	RemoteBlockIDs  []int  `json:"remote_block_ids"`
	RemoteEngineID  string `json:"remote_engine_id"`
	RemoteRequestID string `json:"remote_request_id"`
	RemoteHost      string `json:"remote_host"`
	RemotePort      int    `json:"remote_port"`
	TPSize          int    `json:"tp_size"`
}

// remotePrefill reports whether p asks this engine to receive a remote prefill: vLLM only
// transfers when remote_block_ids are given (update_state_after_alloc).
func (p *KVTransferParams) remotePrefill() bool {
	return p != nil && p.DoRemotePrefill && len(p.RemoteBlockIDs) > 0
}

type xferState uint8

const (
	xferNone    xferState = iota
	xferWaiting           // blocks allocated, KV in flight until readyAt
	xferDone              // KV received
)

// heldBlocks are the blocks of a finished prefill-side request kept for the decode side's read.
type heldBlocks struct {
	blocks []*block
	until  time.Time
}

// transferTime is the modelled time to move the KV of tokens over one engine's link.
func (e *Engine) transferTime(tokens int) time.Duration {
	sec := float64(tokens) * e.model.KVBytesPerToken() / e.xferBytesPerSec
	return time.Duration(sec * e.scale * float64(time.Second))
}

// startTransfer queues the transfer of s's external tokens on the link at now.
func (e *Engine) startTransfer(s *sequence, now time.Time) {
	start := now
	if e.linkFree.After(start) {
		start = e.linkFree
	}
	s.readyAt = start.Add(e.transferTime(s.remoteTokens))
	e.linkFree = s.readyAt
	s.xfer = xferWaiting
}

// releaseHeld frees the held prefill blocks whose time has come.
func (e *Engine) releaseHeld(now time.Time) {
	if len(e.held) == 0 {
		return
	}
	kept := e.held[:0]
	for _, h := range e.held {
		if h.until.After(now) {
			kept = append(kept, h)
			continue
		}
		e.kv.free(h.blocks)
	}
	clear(e.held[len(kept):])
	e.held = kept
}

// finishPrefill builds the kv_transfer_params of a prefill-side request finishing at at, and
// holds its blocks for the decode side's read. The blocks are s's, prompt order.
func (e *Engine) finishPrefill(s *sequence, at time.Time) *KVTransferParams {
	ids := make([]int, len(s.blocks))
	for i, b := range s.blocks {
		ids[i] = b.id
	}
	p := &KVTransferParams{DoRemotePrefill: true, RemoteBlockIDs: ids, RemoteEngineID: e.id, RemoteRequestID: s.id,
		RemoteHost: e.sideHost, RemotePort: e.sidePort, TPSize: e.model.TP()}
	if len(s.blocks) > 0 {
		blocks := reversedBlocks(s.blocks) // tail first, as freeBlocks
		e.held = append(e.held, heldBlocks{blocks: blocks, until: at.Add(e.transferTime(s.promptLen))})
		s.blocks = nil
		s.numCachedBlocks = 0
	}
	return p
}

func reversedBlocks(bs []*block) []*block {
	out := make([]*block, len(bs))
	for i, b := range bs {
		out[len(bs)-1-i] = b
	}
	return out
}
