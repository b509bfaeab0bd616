package router

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/strata-inference/strata/internal/router/scheduling"
)

// vLLM metric names (vllm/v1/metrics/loggers.py, PrometheusStatLogger). Each carries the labels
// model_name and engine (one series per data-parallel engine core).
const (
	metricRunning     = "vllm:num_requests_running"
	metricWaiting     = "vllm:num_requests_waiting"
	metricKVUsage     = "vllm:kv_cache_usage_perc"
	metricGPUUsage    = "vllm:gpu_cache_usage_perc" // before vLLM 0.9; still exported, deprecated
	metricCacheConfig = "vllm:cache_config_info"    // info gauge; CacheConfig fields as labels
	// metricLoRAInfo is a gauge whose value is the time of the sample (seconds since the epoch)
	// and whose labels running_lora_adapters and waiting_lora_adapters list adapters
	// comma-separated, max_lora the engine's --max-loras.
	metricLoRAInfo = "vllm:lora_requests_info"
)

// errNoVLLMMetrics: the exposition parsed but has neither running nor waiting requests, so it is
// not a vLLM engine (or not yet initialised). The endpoint's metrics then count as stale.
var errNoVLLMMetrics = errors.New("no vllm:num_requests_running or vllm:num_requests_waiting metric")

// parseMetrics reads a Prometheus text exposition (format 0.0.4, as vLLM's /metrics serves it)
// and extracts what the scheduler uses. Series of several engine cores are summed (requests) or
// averaged (KV usage). It never trusts the input: counts are clamped to [0, 2^31), the KV usage
// to [0,1], and NaN or infinite values count as 0.
func parseMetrics(r io.Reader) (scheduling.Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return scheduling.Metrics{}, fmt.Errorf("parse metrics: %w", err)
	}
	running, okR := sumOf(fams[metricRunning])
	waiting, okW := sumOf(fams[metricWaiting])
	if !okR && !okW {
		return scheduling.Metrics{}, errNoVLLMMetrics
	}
	m := scheduling.Metrics{Running: count(running), Waiting: count(waiting)}
	usage, ok := sumOf(fams[metricKVUsage])
	n := len(fams[metricKVUsage].GetMetric())
	if !ok {
		usage, _ = sumOf(fams[metricGPUUsage])
		n = len(fams[metricGPUUsage].GetMetric())
	}
	if n > 0 {
		m.KVCacheUsage = min(max(usage/float64(n), 0), 1)
	}
	if mf := fams[metricCacheConfig]; len(mf.GetMetric()) > 0 {
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			switch lp.GetName() {
			case "block_size":
				m.BlockSize = labelInt(lp.GetValue())
			case "num_gpu_blocks":
				m.NumGPUBlocks = labelInt(lp.GetValue())
			}
		}
	}
	m.RunningLoRAs, m.WaitingLoRAs, m.MaxLoRA = loraInfo(fams[metricLoRAInfo])
	return m, nil
}

// loraInfo reads the newest series of vllm:lora_requests_info (the largest value: vLLM sets it
// to the time the labels were observed, keeping older label sets as stale series).
func loraInfo(mf *dto.MetricFamily) (running, waiting []string, maxLoRA int) {
	var newest *dto.Metric
	newestV := math.Inf(-1)
	for _, m := range mf.GetMetric() {
		v := m.GetGauge().GetValue()
		if m.Gauge == nil {
			v = m.GetUntyped().GetValue()
		}
		if newest == nil || v > newestV {
			newest, newestV = m, v
		}
	}
	if newest == nil {
		return nil, nil, 0
	}
	for _, lp := range newest.GetLabel() {
		switch lp.GetName() {
		case "running_lora_adapters":
			running = splitAdapters(lp.GetValue())
		case "waiting_lora_adapters":
			waiting = splitAdapters(lp.GetValue())
		case "max_lora":
			maxLoRA = labelInt(lp.GetValue())
		}
	}
	return running, waiting, maxLoRA
}

// splitAdapters splits a comma-separated adapter list; "" is none.
func splitAdapters(s string) []string {
	var out []string
	for a := range strings.SplitSeq(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// sumOf adds the values of every series of mf; ok is false when mf is absent. Non-finite values
// count as 0.
func sumOf(mf *dto.MetricFamily) (sum float64, ok bool) {
	if mf == nil || len(mf.GetMetric()) == 0 {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		var v float64
		switch {
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Untyped != nil:
			v = m.GetUntyped().GetValue()
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		}
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			sum += v
		}
	}
	return sum, true
}

func count(v float64) int {
	if !(v > 0) { // also NaN
		return 0
	}
	return int(min(math.Round(v), math.MaxInt32))
}

// labelInt parses a CacheConfig label value ("16", "27000"); "None" or garbage is 0.
func labelInt(s string) int {
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return 0
	}
	return min(v, math.MaxInt32)
}
