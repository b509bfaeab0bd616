package scheduling

// KVEventKind says what a KVEvent reports.
type KVEventKind int

// The kinds of engine KV-cache events, after vLLM's BlockStored, BlockRemoved and
// AllBlocksCleared (vllm/distributed/kv_events.py).
const (
	// BlockStored: the engine filled and committed full blocks to its prefix cache.
	BlockStored KVEventKind = iota + 1
	// BlockRemoved: the engine evicted blocks from its prefix cache (in the given medium).
	BlockRemoved
	// AllBlocksCleared: the engine reset its prefix cache; every block of the endpoint is gone.
	AllBlocksCleared
)

// String returns the vLLM event name ("BlockStored", ...).
func (k KVEventKind) String() string {
	switch k {
	case BlockStored:
		return "BlockStored"
	case BlockRemoved:
		return "BlockRemoved"
	case AllBlocksCleared:
		return "AllBlocksCleared"
	}
	return "KVEventKind(?)"
}

// Media of KVEvent.Medium, as vLLM names them (vllm/distributed/kv_events.py, the medium field;
// vLLM's CPU offloading connector reports "CPU").
const (
	MediumGPU = "GPU"
	MediumCPU = "CPU"
)

// KVEvent is one engine KV-cache event in vLLM's model (vllm/distributed/kv_events.py),
// independent of its wire encoding (msgpack over ZMQ in vLLM; decoded by internal/engine/vllm,
// produced directly by the simulator in replay).
type KVEvent struct {
	// Kind is BlockStored, BlockRemoved or AllBlocksCleared.
	Kind KVEventKind
	// BlockHashes are the engine's block hashes, in chain order for BlockStored. vLLM's 32-byte
	// (sha256) hashes are reduced to their last 8 bytes read big-endian; integer hashes are used
	// as they are. They depend on the engine's PYTHONHASHSEED, so consumers should treat them as
	// opaque ids and key their own index on TokenIDs.
	BlockHashes []uint64
	// ParentHash is the engine hash of the block preceding BlockHashes[0] (BlockStored only);
	// HasParent is false for a chain that starts at the beginning of a prompt.
	ParentHash uint64
	HasParent  bool
	// TokenIDs are the tokens of all stored blocks, BlockSize each, in order (BlockStored only):
	// len(TokenIDs) == len(BlockHashes) * BlockSize for a well-formed event.
	TokenIDs []int
	// BlockSize is the engine's KV block size in tokens (BlockStored only).
	BlockSize int
	// LoRAName is the LoRA adapter the blocks were computed with, "" for the base model. Blocks of
	// different adapters never share a prefix.
	LoRAName string
	// Medium is where the blocks live: MediumGPU (the default when the engine does not say),
	// MediumCPU, or another tier name.
	Medium string
}

// KVEventHandler is the optional capability of a plugin that consumes engine KV events, such as
// the precise prefix-cache scorer. HandleKVEvents may be called from any goroutine, concurrently
// with Score and with other HandleKVEvents calls (one feed per endpoint); events of one endpoint
// arrive in the engine's order. It must not keep events beyond the call.
type KVEventHandler interface {
	// HandleKVEvents applies events of the endpoint named endpoint (Endpoint.Name).
	HandleKVEvents(endpoint string, events []KVEvent)
}

// HandleKVEvents forwards events to every plugin of s implementing KVEventHandler (filters,
// scorers including those of weight 0, the picker), in profile order. It is safe for concurrent
// use with Schedule.
func (s *Scheduler) HandleKVEvents(endpoint string, events []KVEvent) {
	if len(events) == 0 {
		return
	}
	for _, h := range s.kv {
		h.HandleKVEvents(endpoint, events)
	}
}
