package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Each testdata/*.bad.yaml is refused with the message in the table; a new bad file without an
// entry fails the test, so every rejection stays documented.
func TestBadConfigs(t *testing.T) {
	want := map[string]string{
		"gateway_fairness":          `gateway.tiers.free.fairness: "session": want tenant or key`,
		"gateway_iolog_redact":      "gateway.iolog.redact[0]: error parsing regexp: missing closing )",
		"gateway_iolog_retention":   "gateway.iolog.retention_days: must be between 1 and 3650, got 0",
		"gateway_model_group":       "gateway.model_groups.small: must list at least one model",
		"gateway_slo_ttft":          "gateway.slo.tiers.gold.ttft: must not be negative, got -1s",
		"platform_mcp_list_timeout": "platform.mcp_list_timeout: must not be negative, got -1s",
		"platform_identity_ttl":     "platform.identity_ttl: must not be negative, got -5s",
		"platform_mcp_urls":         `platform.mcp_allowed_urls[0]: want an absolute http(s) URL, got "tools.internal/mcp"`,
		"unknown_key":               `unknown field "listen_port"`,
		"gap_in_layers":             "layers: [platform router] is not a contiguous part of platform,gateway,router,engine",
		"missing_upstream":          "upstream: required when the lowest layer run here is gateway",
		"unknown_layer":             `layers: unknown layer "gpu" (want platform, gateway, router or engine)`,
		"engine_url":                `engines[0].url: "localhost:8000" is not an http(s) URL`,
		"engine_name_twice":         `engines[1].name: "a" used twice`,
		"engine_role":               `engines[0].role: unknown role "primary" (want prefill, decode or both)`,
		"engine_kv_events":          `engines[0].kv_events: "10.0.0.7:5557" is not a tcp://, ipc:// or inproc:// address`,
		"router_flow_kv":            "router.flow_control.saturation.kv_cache_util_threshold: must be in (0, 1], got 80",
		"router_flow_capacity":      "router.flow_control.queue_capacity: must be at least 1, got 0",
		"router_flow_ttl":           "router.flow_control.ttl: must be positive, got -5s",
		"router_flow_priority":      "cannot unmarshal string into Go struct field FlowControl.router.flow_control.objectives of type int",
		"store_driver":              `store.driver: unknown driver "mysql" (want sqlite or postgres)`,
		"sim_replicas":              "sim.replicas: must be at least 1, got 0",
		"sim_replicas_type":         "cannot unmarshal string into Go struct field Sim.sim.replicas of type int",
		"sim_kv_encoding":           `sim.kv_events_encoding: "json" is neither "map" nor "array"`,
		"sim_kv_endpoint":           `sim.kv_events_endpoint: "localhost:5557" is not a tcp://, ipc:// or inproc:// address`,
		"sim_kv_replay":             "sim.kv_events_replay_endpoint: needs kv_events_endpoint",
		"sim_gpu_util":              "sim.gpu_memory_utilization: must be in (0, 1], got 1.5",
		"sim_max_loras":             "sim.max_loras: must be at least 1, got 0",
		"sim_fault_rate":            "sim.faults.error_rate: must be in [0, 1], got 1.5",
		"sim_fault_reset":           "sim.faults.reset_after: must not be negative, got -1",
		"sim_fault_cold_start":      "sim.faults.cold_start: must not be negative, got -2s",
		"sim_kv_transfer_gbps":      "sim.kv_transfer_gbps: must be a positive number, got -400",
		"sim_kv_transfer_port":      "sim.kv_transfer_port: must be in [1, 65535], got 70000",
		"router_duration":           `invalid duration "fast"`,
		"router_weight":             "router.weights.prefix: must not be negative, got -1",
		"max_body":                  "max_body_bytes: must be positive, got 0",
		"gateway_rpm":               "gateway.dev_rpm: must not be negative, got -5",
		"platform_iters":            "platform.max_infer_iters: must not be negative, got -1",
		"gateway_auth_ttl":          "gateway.auth_cache_ttl: must not be negative, got -1s",
		"gateway_tier_rpm":          "gateway.tiers.free.rpm: must be between 0 and 1125899906842624, got -1",
		"gateway_default_tier":      `gateway.default_tier: "gold" is not a configured tier`,
		"gateway_time_zone":         `gateway.billing_time_zone: "Mars/Olympus"`,
		"gateway_backend":           `gateway.admission.backend: unknown backend "etcd" (want memory or redis)`,
		"gateway_fail_open":         `gateway.admission.fail_open: unknown limit "budget"`,
		"gateway_max_tokens":        "gateway.tiers.free.max_tokens_default: 4096 is above max_tokens_cap 1024",
		"gateway_ledger_batch":      "gateway.ledger.max_batch: must be between 1 and 10000, got 0",
		"gateway_export_sink":       `gateway.export.sink: unknown sink "kafka" (want webhook or file)`,
		"gateway_export_url":        `gateway.export.url: "ftp://example.com/events" is not an http:// or https:// URL`,
	}
	files, err := filepath.Glob("testdata/*.bad.yaml")
	require.NoError(t, err)
	require.Len(t, files, len(want))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bad.yaml")
		t.Run(name, func(t *testing.T) {
			msg, ok := want[name]
			require.True(t, ok, "no expected message for %s", f)
			_, err := Load(f)
			require.Error(t, err)
			require.Contains(t, err.Error(), msg)
			require.True(t, strings.HasPrefix(err.Error(), "config testdata/") || strings.HasPrefix(err.Error(), "config: "), err.Error())
		})
	}
}

func TestGoodConfig(t *testing.T) {
	cfg, err := Load("testdata/good.yaml")
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:9000", cfg.Listen)
	require.Equal(t, []string{LayerPlatform, LayerGateway, LayerRouter}, cfg.Layers, "external engines replace the simulated engine layer")
	require.Equal(t, "10.0.0.8:8000", cfg.Engines[1].Name)
	require.Equal(t, "/var/lib/strata/strata.db", cfg.Store.DSN)
	require.Equal(t, 100*time.Millisecond, cfg.Router.ScrapeInterval.D())
	require.Equal(t, 5.0, *cfg.Router.Weights.Prefix)
	require.Equal(t, 1.0, *cfg.Router.Weights.Queue, "unset keys keep their defaults")
}

func TestDefaults(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "/tmp/xdg")
	cfg, err := Load("")
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", cfg.Listen)
	require.Equal(t, "/tmp/xdg/strata", cfg.DataDir)
	require.Equal(t, AllLayers, cfg.Layers)
	require.Equal(t, int64(10<<20), cfg.MaxBodyBytes)
	require.Equal(t, 3, cfg.Sim.Replicas)
}

func TestSplitLayers(t *testing.T) {
	cfg := Default()
	cfg.Layers = []string{LayerPlatform, LayerGateway}
	cfg.Upstream = "http://router:8080"
	require.NoError(t, cfg.Finish())
	cfg = Default()
	cfg.Layers = []string{LayerRouter}
	cfg.Engines = []Engine{{URL: "http://e:8000"}}
	require.NoError(t, cfg.Finish())
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/good.yaml", "testdata/unknown_key.bad.yaml"} {
		b, err := os.ReadFile(p)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := Default()
		if Parse(b, cfg) == nil {
			_ = cfg.Finish()
		}
	})
}
