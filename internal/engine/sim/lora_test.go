package sim

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
)

// vLLM's scheduler skips waiting requests of a LoRA adapter that is not running while max_loras
// adapters are, without blocking the requests behind them.
func TestCoreMaxLorasSkipsOtherAdapters(t *testing.T) {
	h := newCoreHarness(t, 64, 16, 8, 8192)
	h.c.maxLoras = 1
	a1, b, base, a2 := seqOf("a1", tokensFrom(1, 20), 50), seqOf("b", tokensFrom(100, 20), 3), seqOf("base", tokensFrom(200, 20), 3), seqOf("a2", tokensFrom(300, 20), 3)
	a1.lora, b.lora, a2.lora = "A", "B", "A"
	h.add(a1)
	require.True(h.t, h.step())
	h.add(b)
	h.add(base)
	h.add(a2)
	require.True(h.t, h.step())
	require.Equal(t, statusWaiting, b.status, "adapter B waits while A holds the only slot")
	require.Equal(t, statusRunning, base.status, "the base model is not held up")
	require.Equal(t, statusRunning, a2.status, "A's other requests join")
	run, wait := h.c.loraInfo()
	require.Equal(t, "A", run)
	require.Equal(t, "B", wait)
	h.runIdle()
	require.Equal(t, statusFinished, b.status, "B runs once A is done")
}

func TestLoRAAdapters(t *testing.T) {
	cfg := testConfig()
	cfg.MaxLoras = 2
	s, hs := startServer(t, cfg, clock.RealClock{}, nil)
	code, body := postJSON(t, hs, "/v1/load_lora_adapter", `{"lora_name":"my-lora","lora_path":"/adapters/sql"}`)
	require.Equal(t, 200, code, body)
	require.Equal(t, "Success: LoRA adapter 'my-lora' added successfully.", body)
	code, body = postJSON(t, hs, "/v1/load_lora_adapter", `{"lora_name":"my-lora","lora_path":"/adapters/sql"}`)
	require.Equal(t, 400, code)
	require.Contains(t, body, "has already been loaded")
	code, body = postJSON(t, hs, "/v1/load_lora_adapter", `{"lora_name":"x"}`)
	require.Equal(t, 400, code, body)

	resp, err := hs.Client().Get(hs.URL + "/v1/models")
	require.NoError(t, err)
	var models struct {
		Data []struct {
			ID     string  `json:"id"`
			Root   string  `json:"root"`
			Parent *string `json:"parent"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&models))
	resp.Body.Close()
	require.Len(t, models.Data, 2)
	require.Equal(t, "my-lora", models.Data[1].ID)
	require.Equal(t, "/adapters/sql", models.Data[1].Root)
	require.Equal(t, testModel, *models.Data[1].Parent)
	require.Nil(t, models.Data[0].Parent)

	// Every block of an adapter's request carries the adapter name as extra key (vLLM
	// _gen_lora_extra_hash_keys), so the base model's blocks never serve it.
	p, err := json.Marshal(tokensFrom(0, 17))
	require.NoError(t, err)
	code, body = postJSON(t, hs, "/v1/completions", `{"model":"my-lora","prompt":`+string(p)+`,"max_tokens":1}`)
	require.Equal(t, 200, code, body)
	none := NoneHash(DefaultHashSeed)
	withLoRA := HashBlockTokens(none, tokensFrom(0, 16), []any{"my-lora"})
	require.Equal(t, map[uint64]int{withLoRA.Uint64(): 1}, s.CachedBlockHashes())
	require.NotEqual(t, HashBlockTokens(none, tokensFrom(0, 16), nil), withLoRA)

	fams := scrape(t, hs)
	info := fams["vllm:lora_requests_info"]
	require.NotNil(t, info)
	labels := map[string]string{}
	for _, l := range info.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	require.Equal(t, map[string]string{"max_lora": "2", "running_lora_adapters": "", "waiting_lora_adapters": ""}, labels)

	code, body = postJSON(t, hs, "/v1/unload_lora_adapter", `{"lora_name":"my-lora"}`)
	require.Equal(t, 200, code, body)
	require.Equal(t, "Success: LoRA adapter 'my-lora' removed successfully.", body)
	code, body = postJSON(t, hs, "/v1/unload_lora_adapter", `{"lora_name":"my-lora"}`)
	require.Equal(t, 404, code)
	require.Contains(t, body, "cannot be found")
	code, body = postJSON(t, hs, "/v1/completions", `{"model":"my-lora","prompt":"hi"}`)
	require.Equal(t, 404, code, body)
	require.Contains(t, body, "The model `my-lora` does not exist.")
}
