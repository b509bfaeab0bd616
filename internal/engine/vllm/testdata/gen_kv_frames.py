# Generates the golden KV-event payloads of this directory with msgpack-python, independently of
# the Go code, in the shapes vLLM's msgspec structs encode (vllm/distributed/kv_events.py):
# EventBatch array_like [ts, events, data_parallel_rank]; events as tagged arrays (vLLM < 0.24)
# or tagged maps (vLLM >= 0.24, vllm-project/vllm#42892). Run: python3 gen_kv_frames.py
import hashlib
import msgpack

# Issue 3's reference digests (sha256_cbor, PYTHONHASHSEED=0): blocks of tokens 0..15, 16..31.
D0 = bytes.fromhex("d830de3d42c00f25a2949b5d12d98642664a44872c1614c5b0147556276afc9c")
D1 = bytes.fromhex("fedd9e4abebebbe6f6cf96b682f08d316063fe2f22a5c552192dd62904fcccac")
H0 = int.from_bytes(D0[-8:], "big")  # 12687895063098490012, above 2**63
H1 = int.from_bytes(D1[-8:], "big")
TS = 1789095808.8378847
toks = list(range(32))

def dump(name, obj):
    with open(name, "wb") as f:
        f.write(msgpack.packb(obj, use_bin_type=True))

# vLLM 0.11-0.23: tagged arrays with lora_name; dp rank 0.
dump("kv_array.msgpack", [TS, [
    ["BlockStored", [H0, H1], None, toks, 16, None, "GPU", None],
    ["BlockRemoved", [H1], "GPU"],
    ["AllBlocksCleared"],
], 0])

# vLLM >= 0.24: tagged maps (as captured from vLLM 0.26 in volcano-sh/kthena#1535).
dump("kv_map.msgpack", [TS, [
    {"type": "BlockStored", "block_hashes": [H0, H1], "parent_block_hash": None, "token_ids": toks,
     "block_size": 16, "lora_id": None, "medium": "GPU", "lora_name": None, "extra_keys": [None, None],
     "group_idx": 0, "kv_cache_spec_kind": "full_attention"},
    {"type": "BlockRemoved", "block_hashes": [H1], "medium": "GPU", "group_idx": 0},
    {"type": "AllBlocksCleared"},
], 0])

# VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0: 32-byte binary digests; a LoRA adapter; a child
# block with its parent; an unknown future event and a malformed one, to be skipped.
dump("kv_bytes_lora.msgpack", [TS, [
    ["BlockStored", [D1], D0, list(range(16, 32)), 16, 7, "GPU", "my-lora"],
    ["BlockOffloaded", [H0]],
    ["BlockStored", "not-a-list"],
    ["BlockRemoved", [D0], "CPU"],
], 3])

# vLLM 0.9: no medium, no lora_name, no data_parallel_rank.
dump("kv_legacy.msgpack", [TS, [["BlockStored", [5, 6], 4, list(range(8)), 4, None]]])

# What the simulator publishes for one stored run (parent set) and one eviction, in both
# encodings: its Go encoder must produce these bytes exactly.
dump("sim_array.msgpack", [TS, [
    ["BlockStored", [H1], H0, list(range(16, 32)), 16, None, "GPU", None],
    ["BlockRemoved", [H0], "GPU"],
], 0])
dump("sim_map.msgpack", [TS, [
    {"type": "BlockStored", "block_hashes": [H1], "parent_block_hash": H0, "token_ids": list(range(16, 32)),
     "block_size": 16, "lora_id": None, "medium": "GPU", "lora_name": None, "extra_keys": [None]},
    {"type": "BlockRemoved", "block_hashes": [H0], "medium": "GPU"},
    {"type": "AllBlocksCleared"},
], 0])
print(H0, H1)
