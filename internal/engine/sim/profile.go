package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// GPUProfile is the part of a GPU the roofline needs. Figures are the vendor's dense (no
// sparsity) peaks; the efficiency factors of the timing model turn them into achievable rates.
type GPUProfile struct {
	Name string
	// PeakBF16FLOPS is the dense BF16 tensor-core peak in FLOP/s.
	PeakBF16FLOPS float64
	// HBMBytesPerSec is the peak memory bandwidth in bytes/s.
	HBMBytesPerSec float64
	// MemoryBytes is the HBM capacity (used by issue 3 to derive num_gpu_blocks).
	MemoryBytes float64
}

// ModelProfile is the part of a decoder-only transformer the roofline needs.
type ModelProfile struct {
	Name string
	// Params is the parameter count; prefill costs 2*Params FLOP per token.
	Params float64
	// Layers, KVHeads and HeadDim give the KV cache size per token:
	// 2 (K and V) * Layers * KVHeads * HeadDim * DTypeBytes.
	Layers, KVHeads, HeadDim int
	// DTypeBytes is the size of one weight and one KV element (2 for BF16).
	DTypeBytes int
	// TensorParallel is the number of GPUs the model is sharded over (vLLM's
	// --tensor-parallel-size); 0 or 1 means one GPU. Weights, KV cache and FLOPs split evenly.
	TensorParallel int
	// Tokenizer names the model's tokenizer in internal/tokenizer ("llama-3", "qwen2"): its
	// vocabulary, chat template, BOS and EOS.
	Tokenizer string
}

// TP is the tensor-parallel degree, at least 1.
func (m ModelProfile) TP() int { return max(1, m.TensorParallel) }

// WeightBytes is the size of the weights read by every forward pass.
func (m ModelProfile) WeightBytes() float64 { return m.Params * float64(m.DTypeBytes) }

// KVBytesPerToken is the KV cache footprint of one token, summed over layers.
func (m ModelProfile) KVBytesPerToken() float64 {
	return float64(2 * m.Layers * m.KVHeads * m.HeadDim * m.DTypeBytes)
}

// gpuProfiles are the built-in GPUs, keyed by normalized name.
var gpuProfiles = map[string]GPUProfile{
	// NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 TFLOPS with sparsity, i.e. 989.4
	// dense; HBM3 3.35 TB/s; 80 GB.
	"h100-sxm": {Name: "H100-SXM", PeakBF16FLOPS: 989.4e12, HBMBytesPerSec: 3.35e12, MemoryBytes: 80e9},
	// NVIDIA H200 datasheet (SXM): same compute as H100 SXM (1,979 TFLOPS sparse BF16); HBM3e
	// 4.8 TB/s; 141 GB.
	"h200": {Name: "H200", PeakBF16FLOPS: 989.4e12, HBMBytesPerSec: 4.8e12, MemoryBytes: 141e9},
	// NVIDIA A100 datasheet (80GB SXM): BF16 312 TFLOPS dense; HBM2e 2,039 GB/s; 80 GB.
	"a100-80gb": {Name: "A100-80GB", PeakBF16FLOPS: 312e12, HBMBytesPerSec: 2.039e12, MemoryBytes: 80e9},
	// NVIDIA A100 datasheet (40GB SXM): BF16 312 TFLOPS dense; HBM2 1,555 GB/s; 40 GB.
	"a100-40gb": {Name: "A100-40GB", PeakBF16FLOPS: 312e12, HBMBytesPerSec: 1.555e12, MemoryBytes: 40e9},
	// NVIDIA L40S datasheet: BF16 362.05 TFLOPS dense (733 with sparsity); GDDR6 864 GB/s; 48 GB.
	"l40s": {Name: "L40S", PeakBF16FLOPS: 362.05e12, HBMBytesPerSec: 864e9, MemoryBytes: 48e9},
	// NVIDIA A10G (AWS G5 instances; Baseten, "NVIDIA A10 vs A10G for ML model inference"):
	// 24 GB GDDR6 at 600 GB/s like the A10, but 70 TFLOPS of dense FP16/BF16 tensor compute
	// (A10: 125).
	"a10g": {Name: "A10G", PeakBF16FLOPS: 70e12, HBMBytesPerSec: 600e9, MemoryBytes: 24e9},
}

var gpuAliases = map[string]string{
	"h100": "h100-sxm", "h100-sxm5": "h100-sxm", "h100sxm": "h100-sxm",
	"a100": "a100-80gb", "a100-sxm-80gb": "a100-80gb", "h200-sxm": "h200", "a10g-24gb": "a10g",
}

// modelProfiles are the built-in models, keyed by normalized name.
var modelProfiles = map[string]ModelProfile{
	// meta-llama/Llama-3.1-8B config.json: 32 layers, 32 attention heads, 8 KV heads, hidden 4096
	// (head dim 128), BF16; 8,030,261,248 parameters (model card: "8B").
	"llama-3.1-8b": {Name: "Llama-3.1-8B", Params: 8.03e9, Layers: 32, KVHeads: 8, HeadDim: 128, DTypeBytes: 2, Tokenizer: "llama-3"},
	// Qwen/Qwen3-8B model card: 8.2B parameters, 36 layers, 32 Q heads and 8 KV heads (GQA);
	// config.json head_dim 128, BF16.
	"qwen3-8b": {Name: "Qwen3-8B", Params: 8.19e9, Layers: 36, KVHeads: 8, HeadDim: 128, DTypeBytes: 2, Tokenizer: "qwen2"},
	// meta-llama/Llama-3.1-70B config.json: 80 layers, 64 attention heads, 8 KV heads, hidden
	// 8192 (head dim 128), BF16; 70.6B parameters (model card). Served with TP 4: 141 GB of
	// weights need at least two 80 GB GPUs, and 4 is the common H100 deployment.
	"llama-3.1-70b": {Name: "Llama-3.1-70B", Params: 70.6e9, Layers: 80, KVHeads: 8, HeadDim: 128, DTypeBytes: 2, TensorParallel: 4, Tokenizer: "llama-3"},
	// Qwen/Qwen3-32B model card: 32.8B parameters, 64 layers, 64 Q heads and 8 KV heads (GQA);
	// config.json head_dim 128, BF16. Served with TP 2 (66 GB of weights).
	"qwen3-32b": {Name: "Qwen3-32B", Params: 32.8e9, Layers: 64, KVHeads: 8, HeadDim: 128, DTypeBytes: 2, TensorParallel: 2, Tokenizer: "qwen2"},
}

var modelAliases = map[string]string{
	"llama-3-8b": "llama-3.1-8b", "llama3-8b": "llama-3.1-8b", "llama3.1-8b": "llama-3.1-8b",
	"llama-3.1-8b-instruct": "llama-3.1-8b", "llama-3-8b-instruct": "llama-3.1-8b",
	"qwen3-8b-instruct": "qwen3-8b",
	"llama-3-70b":       "llama-3.1-70b", "llama3-70b": "llama-3.1-70b", "llama3.1-70b": "llama-3.1-70b",
	"llama-3.3-70b": "llama-3.1-70b", "qwen3-32b-instruct": "qwen3-32b",
}

func normalizeName(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.ReplaceAll(s, " ", "-")
	s = strings.ReplaceAll(s, "_", "-")
	return s
}

// LookupGPU returns the built-in profile for a GPU name ("H100-SXM", "h100", "A100-80GB", ...).
func LookupGPU(name string) (GPUProfile, error) {
	n := strings.TrimPrefix(normalizeName(name), "nvidia-")
	if a, ok := gpuAliases[n]; ok {
		n = a
	}
	if p, ok := gpuProfiles[n]; ok {
		return p, nil
	}
	return GPUProfile{}, fmt.Errorf("sim: unknown GPU %q (known: %s)", name, knownNames(gpuProfiles))
}

// LookupModel returns the built-in profile for a served model name. The organisation prefix
// ("meta-llama/"), a "meta-" prefix and an "-instruct" suffix are ignored, so
// "meta-llama/Llama-3.1-8B-Instruct" and "llama-3.1-8b" name the same profile.
func LookupModel(name string) (ModelProfile, error) {
	n := normalizeName(name)
	if i := strings.LastIndexByte(n, '/'); i >= 0 {
		n = n[i+1:]
	}
	n = strings.TrimPrefix(n, "meta-")
	if a, ok := modelAliases[n]; ok {
		n = a
	}
	n = strings.TrimSuffix(n, "-instruct")
	if a, ok := modelAliases[n]; ok {
		n = a
	}
	if p, ok := modelProfiles[n]; ok {
		return p, nil
	}
	return ModelProfile{}, fmt.Errorf("sim: unknown model %q (known: %s)", name, knownNames(modelProfiles))
}

func knownNames[T any](m map[string]T) string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Timing is the roofline latency model of one engine step.
//
//	step = prefill + decode + overhead + decode tokens * per-token overhead + tp sync
//	prefill = prefill tokens * 2 * Params / (TP * PeakBF16FLOPS * MFU)
//	decode  = max((WeightBytes + KV bytes read by the batch) / (TP * HBMBytesPerSec * BWEfficiency),
//	              decode tokens * 2 * Params / (TP * PeakBF16FLOPS * MFU))
//	tp sync = 2 * Layers * AllReduceLatency when TP > 1
//
// Prefill is compute-bound; decode is bandwidth-bound (the weights are read once per step, and
// each scheduled request reads its whole context's KV), except for batches large enough to turn
// compute-bound, which the max covers. With tensor parallelism every GPU holds 1/TP of the
// weights and KV heads and does 1/TP of the FLOPs, and each layer adds two all-reduces
// (after attention and after the MLP, Megatron-style sharding as vLLM does it). Attention
// FLOPs, all-reduce bandwidth and chunk shapes are not modelled.
type Timing struct {
	GPU   GPUProfile
	Model ModelProfile
	// MFU is the fraction of peak FLOP/s a prefill achieves. 0.5: typical of large-batch
	// prefill GEMMs in vLLM on H100 (reported model FLOPs utilisation of 40-60% for 8B models).
	MFU float64
	// BWEfficiency is the fraction of peak HBM bandwidth a decode step achieves. 0.8: the
	// fraction of peak memory-bound GEMV kernels reach on H100 (~80-90%).
	BWEfficiency float64
	// StepOverhead is the fixed cost of a step (scheduler, kernel launches) and
	// DecodeTokenOverhead the cost each decoding request adds to it (input preparation,
	// sampling, detokenization, output processing: vLLM's per-request CPU work, plus attention
	// work the bandwidth term misses). 0.3 ms and 0.23 ms are a calibration on two published
	// points (docs/simulator.md, TestFidelity): Llama-3.1-8B on H100 at concurrency 1 (TPOT
	// 6.48 ms) and 16 (10.94 ms).
	StepOverhead        time.Duration
	DecodeTokenOverhead time.Duration
	// AllReduceLatency is the cost of one small all-reduce between the TP GPUs of a replica.
	// 10 µs: the order of NCCL's latency for decode-sized messages over NVLink (an estimate;
	// PCIe-only GPUs such as L40S and A10G are slower).
	AllReduceLatency time.Duration
}

// NewTiming returns the timing model of model on gpu with the default efficiency factors.
func NewTiming(gpu GPUProfile, model ModelProfile) Timing {
	return Timing{GPU: gpu, Model: model, MFU: 0.5, BWEfficiency: 0.8, StepOverhead: 300 * time.Microsecond,
		DecodeTokenOverhead: 230 * time.Microsecond, AllReduceLatency: 10 * time.Microsecond}
}

// StepTime returns the modelled duration of a step that computes prefillTokens prompt (or
// recomputed) tokens and decodeTokens decode tokens, whose scheduled requests together attend
// over kvTokens tokens of context.
func (t Timing) StepTime(prefillTokens, decodeTokens, kvTokens int) time.Duration {
	tp := float64(t.Model.TP())
	flops := t.GPU.PeakBF16FLOPS * t.MFU * tp
	prefill := float64(prefillTokens) * 2 * t.Model.Params / flops
	var decode float64
	if prefillTokens+decodeTokens > 0 {
		bytes := t.Model.WeightBytes() + float64(kvTokens)*t.Model.KVBytesPerToken()
		decode = max(bytes/(t.GPU.HBMBytesPerSec*t.BWEfficiency*tp), float64(decodeTokens)*2*t.Model.Params/flops)
	}
	d := time.Duration((prefill+decode)*float64(time.Second)) + t.StepOverhead + time.Duration(decodeTokens)*t.DecodeTokenOverhead
	if t.Model.TP() > 1 {
		d += time.Duration(2*t.Model.Layers) * t.AllReduceLatency
	}
	return d
}

// DefaultGPUMemoryUtilization is vLLM's --gpu-memory-utilization default.
const DefaultGPUMemoryUtilization = 0.9

// nonKVReserveBytes is the memory per GPU vLLM's profiling run finds in use besides weights:
// peak activations of a max_num_batched_tokens forward pass, CUDA graphs, the CUDA context and
// NCCL buffers. 2 GiB is a calibration for 8B-70B models at the default 8192-token budget
// (vLLM logs its measured value as "model weights take X GiB; non_torch_memory takes Y GiB;
// PyTorch activation peak memory takes Z GiB").
const nonKVReserveBytes = 2 << 30

// NumGPUBlocks derives vLLM's num_gpu_blocks (vllm/v1/worker/gpu_worker.py
// determine_available_memory, vllm/v1/core/kv_cache_utils.py get_num_blocks):
//
//	per GPU: available = memory * utilization - weights / TP - non-KV reserve
//	blocks  = available / (blockSize * KV bytes per token / TP)
//
// Memory is counted in the datasheet's decimal bytes. It returns 0 when the weights do not fit.
func NumGPUBlocks(gpu GPUProfile, model ModelProfile, blockSize int, utilization float64) int {
	tp := float64(model.TP())
	avail := gpu.MemoryBytes*utilization - model.WeightBytes()/tp - nonKVReserveBytes
	perBlock := float64(blockSize) * model.KVBytesPerToken() / tp
	if avail <= 0 || perBlock <= 0 {
		return 0
	}
	return int(avail / perBlock)
}
