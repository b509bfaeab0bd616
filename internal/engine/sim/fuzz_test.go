package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
)

// FuzzRequestParsing sends arbitrary bodies to the generation, tokenize, detokenize and
// embeddings endpoints: the answer
// is always a success or vLLM's error JSON with the status as its code, never a panic or a 500.
func FuzzRequestParsing(f *testing.F) {
	for _, seed := range []string{
		`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}],"max_tokens":4}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}`,
		`{"prompt":"hello","max_tokens":3,"ignore_eos":true,"min_tokens":2,"seed":-5}`,
		`{"prompt":[[1,2],[3]],"stream":true}`,
		`{"prompt":["a","b"],"n":1}`,
		`{"prompt":[128000,5,-1]}`,
		`{"messages":[],"max_completion_tokens":1}`,
		`{"messages":[],"add_generation_prompt":false,"stream":true}`,
		`{"messages":null}`,
		`{"prompt":"<|eot_id|><|begin_of_text|>","add_special_tokens":false,"return_token_strs":true}`,
		`{"model":"other","prompt":"x"}`,
		`{"prompt":"x","max_tokens":1e3}`,
		`{"input":["a b","c"],"dimensions":8,"encoding_format":"base64"}`,
		`{"input":[[1,2],[3]]}`,
		`{"tokens":[128000,9906,1917]}`,
		`{"messages":[{"role":"user","content":"call f"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer","minimum":2}}}}}}],"tool_choice":"required","stream":true}`,
		`{"lora_name":"a","lora_path":"/x"}`,
		`{"prompt":"hello there","max_tokens":1,"stream":false,"kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}}`,
		`{"messages":[{"role":"user","content":"hi"}],"stream":true,"kv_transfer_params":{"do_remote_prefill":true,"do_remote_decode":false,"remote_block_ids":[1,2],"remote_engine_id":"p","remote_request_id":"r","remote_host":"localhost","remote_port":5600,"tp_size":1}}`,
		`{"prompt":"x","kv_transfer_params":[]}`,
		`[]`, `null`, `{`, ``,
	} {
		for path := range uint8(7) {
			f.Add(path, []byte(seed))
		}
	}
	cfg := testConfig()
	cfg.MaxModelLen = 256
	cfg.MaxOutputTokens = 16
	cfg.NumGPUBlocks = 64
	s, err := New(cfg, "fuzz", clock.RealClock{}, nil)
	require.NoError(f, err)
	f.Cleanup(s.Close)
	paths := []string{"/v1/chat/completions", "/v1/completions", "/tokenize", "/v1/embeddings", "/detokenize",
		"/v1/load_lora_adapter", "/v1/unload_lora_adapter"}

	f.Fuzz(func(t *testing.T, path uint8, body []byte) {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, paths[int(path)%len(paths)], bytes.NewReader(body)))
		switch rec.Code {
		case http.StatusOK:
			if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
				require.True(t, strings.HasSuffix(rec.Body.String(), "data: [DONE]\n\n"), rec.Body.String())
				return
			}
			if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
				require.True(t, strings.HasPrefix(rec.Body.String(), "Success: LoRA adapter"), rec.Body.String())
				return
			}
			require.True(t, json.Valid(rec.Body.Bytes()), rec.Body.String())
		case http.StatusBadRequest, http.StatusNotFound:
			var e struct {
				Error struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    int    `json:"code"`
				} `json:"error"`
			}
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), rec.Body.String())
			require.Equal(t, rec.Code, e.Error.Code)
			require.NotEmpty(t, e.Error.Message)
			require.NotEmpty(t, e.Error.Type)
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
	})
}
