package vllm

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// MaxMetricsBytes bounds the metrics text ParseMetrics reads: a vLLM replica's /metrics is
// tens of kilobytes; more is refused rather than buffered.
const MaxMetricsBytes = 8 << 20

// Histogram is the count and sum of one of vLLM's latency histograms, summed over series.
type Histogram struct {
	Count uint64
	Sum   float64 // seconds
}

// Mean is Sum/Count, 0 when empty.
func (h Histogram) Mean() float64 {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / float64(h.Count)
}

// LoRAInfo is vllm:lora_requests_info: the adapters of the latest series (its value is the
// time it was set, so the largest value is the current one).
type LoRAInfo struct {
	Running, Waiting []string
	// MaxLoRA is --max-loras, the adapter slots of the replica.
	MaxLoRA int
}

// Telemetry is what the router reads of a replica's /metrics (vllm/v1/metrics/loggers.py
// names). Series of one name are summed over their labels (engines of a data-parallel
// replica, models), except KVCacheUsage, which is their maximum: the fullest engine is the one
// that preempts first. Counters are cumulative since the replica started.
type Telemetry struct {
	// Models are the model_name label values seen, sorted.
	Models []string
	// RequestsRunning and RequestsWaiting: vllm:num_requests_running, vllm:num_requests_waiting.
	RequestsRunning, RequestsWaiting float64
	// KVCacheUsage is vllm:kv_cache_usage_perc in [0, 1] (vllm:gpu_cache_usage_perc before
	// vLLM 0.10).
	KVCacheUsage float64
	// PrefixCacheQueries and PrefixCacheHits are tokens (vllm:prefix_cache_{queries,hits}_total,
	// vllm:gpu_prefix_cache_* before).
	PrefixCacheQueries, PrefixCacheHits float64
	// Preemptions is vllm:num_preemptions_total.
	Preemptions float64
	// PromptTokens and GenerationTokens are vllm:prompt_tokens_total, vllm:generation_tokens_total.
	PromptTokens, GenerationTokens float64
	// RequestsSucceeded is vllm:request_success_total over every finished_reason.
	RequestsSucceeded float64
	// TTFT, ITL, E2E and QueueTime are vllm:time_to_first_token_seconds,
	// vllm:inter_token_latency_seconds (vllm:time_per_output_token_seconds when absent),
	// vllm:e2e_request_latency_seconds and vllm:request_queue_time_seconds.
	TTFT, ITL, E2E, QueueTime Histogram
	// BlockSize and NumGPUBlocks come from vllm:cache_config_info (0 when absent).
	BlockSize, NumGPUBlocks int
	// LoRA is nil when the replica serves no adapters (no vllm:lora_requests_info).
	LoRA *LoRAInfo
}

// ParseMetrics parses a replica's metrics text (Prometheus text exposition format 0.0.4, as
// vLLM's prometheus_client serves it; read with prometheus/common/expfmt) into Telemetry.
// Errors wrap ErrMalformed: text that does not parse, more than MaxMetricsBytes, or text with
// neither vllm:num_requests_running nor vllm:num_requests_waiting (not a vLLM replica).
func ParseMetrics(r io.Reader) (*Telemetry, error) {
	lr := &io.LimitedReader{R: r, N: MaxMetricsBytes + 1}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(lr)
	if err != nil {
		return nil, fmt.Errorf("%w: metrics text: %v", ErrMalformed, err)
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("%w: metrics text longer than %d bytes", ErrMalformed, MaxMetricsBytes)
	}
	if fams["vllm:num_requests_running"] == nil && fams["vllm:num_requests_waiting"] == nil {
		return nil, fmt.Errorf("%w: no vllm:num_requests_running or vllm:num_requests_waiting series", ErrMalformed)
	}
	t := &Telemetry{}
	models := map[string]bool{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model_name" {
					models[l.GetValue()] = true
				}
			}
		}
	}
	for m := range models {
		t.Models = append(t.Models, m)
	}
	slices.Sort(t.Models)

	first := func(names ...string) *dto.MetricFamily {
		for _, n := range names {
			if f := fams[n]; f != nil {
				return f
			}
		}
		return nil
	}
	t.RequestsRunning = sum(fams["vllm:num_requests_running"])
	t.RequestsWaiting = sum(fams["vllm:num_requests_waiting"])
	if f := first("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"); f != nil {
		for _, m := range f.GetMetric() {
			t.KVCacheUsage = max(t.KVCacheUsage, value(m))
		}
	}
	t.PrefixCacheQueries = sum(first("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"))
	t.PrefixCacheHits = sum(first("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"))
	t.Preemptions = sum(fams["vllm:num_preemptions_total"])
	t.PromptTokens = sum(fams["vllm:prompt_tokens_total"])
	t.GenerationTokens = sum(fams["vllm:generation_tokens_total"])
	t.RequestsSucceeded = sum(fams["vllm:request_success_total"])
	t.TTFT = histogram(fams["vllm:time_to_first_token_seconds"])
	t.ITL = histogram(first("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"))
	t.E2E = histogram(fams["vllm:e2e_request_latency_seconds"])
	t.QueueTime = histogram(fams["vllm:request_queue_time_seconds"])
	if f := fams["vllm:cache_config_info"]; f != nil && len(f.GetMetric()) > 0 {
		for _, l := range f.GetMetric()[0].GetLabel() {
			n, err := strconv.Atoi(l.GetValue())
			if err != nil || n < 0 {
				continue // "None" and the like
			}
			switch l.GetName() {
			case "block_size":
				t.BlockSize = n
			case "num_gpu_blocks":
				t.NumGPUBlocks = n
			}
		}
	}
	if f := fams["vllm:lora_requests_info"]; f != nil {
		var latest *dto.Metric
		for _, m := range f.GetMetric() {
			if latest == nil || value(m) > value(latest) {
				latest = m
			}
		}
		if latest != nil {
			info := &LoRAInfo{}
			for _, l := range latest.GetLabel() {
				switch l.GetName() {
				case "running_lora_adapters":
					info.Running = splitAdapters(l.GetValue())
				case "waiting_lora_adapters":
					info.Waiting = splitAdapters(l.GetValue())
				case "max_lora":
					info.MaxLoRA, _ = strconv.Atoi(l.GetValue())
				}
			}
			t.LoRA = info
		}
	}
	return t, nil
}

// splitAdapters splits vLLM's comma-joined adapter list ("" = none).
func splitAdapters(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func sum(f *dto.MetricFamily) float64 {
	var s float64
	if f == nil {
		return 0
	}
	for _, m := range f.GetMetric() {
		s += value(m)
	}
	return s
}

func histogram(f *dto.MetricFamily) Histogram {
	var h Histogram
	if f == nil {
		return h
	}
	for _, m := range f.GetMetric() {
		if m.Histogram != nil {
			h.Count += m.Histogram.GetSampleCount()
			h.Sum += m.Histogram.GetSampleSum()
		}
	}
	return h
}
