package router

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/openai"
)

// An invalid scheduler configuration stops New with the plugin and the field named.
func TestNewRejectsBadSchedulerConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Scheduler = &config.EndpointPickerConfig{
		Plugins:            []config.PluginSpec{{Type: "prefix-cache-scorer", Name: "prefix", Parameters: []byte(`{"blockSize":-4}`)}},
		SchedulingProfiles: []config.SchedulingProfile{{Name: "default", Plugins: []config.ProfilePlugin{{PluginRef: "prefix"}}}},
	}
	_, err := New(cfg, []config.Engine{{URL: "http://a:1"}}, nil, nil, prometheus.NewRegistry(), nil)
	require.EqualError(t, err, `router.scheduler: plugins[0] "prefix" (prefix-cache-scorer): parameters.blockSize: must be positive, got -4`)
}

// With a session-affinity profile, requests of one X-Strata-Session follow the session even when
// their prompts share nothing, while requests without a session are balanced by in-flight tokens.
func TestSessionAffinityProfile(t *testing.T) {
	engines := []*fakeEngine{newFakeEngine(t, "r0", "m"), newFakeEngine(t, "r1", "m"), newFakeEngine(t, "r2", "m")}
	ten := 10.0
	cfg := testConfig()
	cfg.Scheduler = &config.EndpointPickerConfig{
		Plugins: []config.PluginSpec{{Type: "session-affinity-scorer"}, {Type: "in-flight-tokens-scorer"}},
		SchedulingProfiles: []config.SchedulingProfile{{Name: "sessions", Plugins: []config.ProfilePlugin{
			{PluginRef: "session-affinity-scorer", Weight: &ten}, {PluginRef: "in-flight-tokens-scorer"}}}},
	}
	tr := newTestRouter(t, cfg, engineConfigs(engines...))
	for _, e := range engines {
		tr.markUp(e.name, 0)
	}
	post := func(session, prompt string) string {
		req := httptest.NewRequest(http.MethodPost, openai.PathCompletions, strings.NewReader(`{"model":"m","prompt":"`+prompt+`"}`))
		if session != "" {
			req.Header.Set(openai.HeaderSession, session)
		}
		w := httptest.NewRecorder()
		tr.ServeHTTP(w, req)
		require.Equal(t, http.StatusOK, w.Code)
		return w.Header().Get(openai.HeaderEndpointServed)
	}
	for s := range 6 {
		session := fmt.Sprintf("conv-%d", s)
		first := post(session, "hello")
		for turn := range 4 {
			require.Equal(t, first, post(session, fmt.Sprintf("unrelated prompt %d", turn)), "session %s turn %d", session, turn)
		}
	}
}

// The plugins added for KV events, LoRA, roles and saturation stop New on a bad parameter too,
// with the plugin and the field named.
func TestNewRejectsBadNewPluginParameters(t *testing.T) {
	for _, tc := range []struct{ typ, params, want string }{
		{"precise-prefix-cache-scorer", `{"mediumWeights":{"CPU":2}}`, `parameters.mediumWeights.CPU: must be in [0, 1]`},
		{"precise-prefix-cache-scorer", `{"tokenizer":"bert"}`, `parameters.tokenizer: tokenizer: unknown tokenizer "bert"`},
		{"prefix-cache-scorer", `{"tokenizer":"bert"}`, `parameters.tokenizer: tokenizer: unknown tokenizer "bert"`},
		{"lora-affinity-filter", `{"threshold":-0.1}`, `parameters.threshold: must be in [0, 1], got -0.1`},
		{"role-filter", `{"role":"encode"}`, `parameters.role: must be "prefill", "decode" or "both", got "encode"`},
		{"saturation-filter", `{"kvCacheUtilThreshold":2}`, `parameters.kvCacheUtilThreshold: must be in [0, 1], got 2`},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			cfg := testConfig()
			cfg.Scheduler = &config.EndpointPickerConfig{
				Plugins:            []config.PluginSpec{{Type: tc.typ, Name: "p", Parameters: []byte(tc.params)}},
				SchedulingProfiles: []config.SchedulingProfile{{Name: "default", Plugins: []config.ProfilePlugin{{PluginRef: "p"}}}},
			}
			_, err := New(cfg, []config.Engine{{URL: "http://a:1"}}, nil, nil, prometheus.NewRegistry(), nil)
			require.ErrorContains(t, err, `router.scheduler: plugins[0] "p" (`+tc.typ+`): `+tc.want)
		})
	}
}
