package sim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
)

func cosine(a, b []float32) float64 {
	var dot float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
	}
	return dot
}

func TestEmbedLexicalSignal(t *testing.T) {
	q := Embed("How do I reset my router password?", 384)
	near := Embed("Resetting the router password: hold the reset button", 384)
	far := Embed("Quarterly revenue grew in the European market", 384)
	require.InDelta(t, 1.0, cosine(q, q), 1e-6, "unit length")
	require.Equal(t, q, Embed("How do I reset my router password?", 384), "deterministic")
	require.Greater(t, cosine(q, near), cosine(q, far)+0.2)
	require.Equal(t, make([]float32, 8), Embed("  ", 8))
}

func TestEmbeddingsEndpoint(t *testing.T) {
	_, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	code, body := postJSON(t, hs, "/v1/embeddings", `{"model":"`+testModel+`","input":["red apples","green apples"],"dimensions":16}`)
	require.Equal(t, 200, code, body)
	var resp struct {
		Object string `json:"object"`
		Data   []struct {
			Index     int       `json:"index"`
			Object    string    `json:"object"`
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
		Usage map[string]any `json:"usage"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &resp))
	require.Equal(t, "list", resp.Object)
	require.Len(t, resp.Data, 2)
	require.Equal(t, 1, resp.Data[1].Index)
	require.Equal(t, "embedding", resp.Data[0].Object)
	require.Equal(t, Embed("red apples", 16), resp.Data[0].Embedding)
	require.Equal(t, 6.0, resp.Usage["prompt_tokens"], "BOS + 2 tokens each")
	require.Equal(t, 0.0, resp.Usage["completion_tokens"])

	code, body = postJSON(t, hs, "/v1/embeddings", `{"input":"red apples","dimensions":4,"encoding_format":"base64"}`)
	require.Equal(t, 200, code, body)
	var b64 struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &b64))
	raw, err := base64.StdEncoding.DecodeString(b64.Data[0].Embedding)
	require.NoError(t, err)
	require.Len(t, raw, 16)
	want := Embed("red apples", 4)
	require.Equal(t, math.Float32bits(want[0]), uint32(raw[0])|uint32(raw[1])<<8|uint32(raw[2])<<16|uint32(raw[3])<<24)

	for _, tc := range []struct{ body, want string }{
		{`{"model":"other","input":"x"}`, "does not exist"},
		{`{"input":"x","dimensions":0}`, "dimensions must be between"},
		{`{"dimensions":3}`, "Field required"},
		{`{"input":"x","encoding_format":"hex"}`, "'float' or 'base64'"},
		{`{"input":[999999999]}`, "out of vocabulary"},
		{`{"input":`, "JSON decode error"},
	} {
		code, body := postJSON(t, hs, "/v1/embeddings", tc.body)
		require.NotEqual(t, 200, code, tc.body)
		require.Contains(t, body, tc.want, tc.body)
	}
}

func TestDetokenize(t *testing.T) {
	_, hs := startServer(t, testConfig(), clock.RealClock{}, nil)
	code, body := postJSON(t, hs, "/detokenize", `{"tokens":[128000,9906,1917]}`)
	require.Equal(t, 200, code, body)
	require.JSONEq(t, `{"prompt":"<|begin_of_text|>Hello world"}`, body)
	code, body = postJSON(t, hs, "/detokenize", `{"tokens":[-1]}`)
	require.Equal(t, 400, code, body)
	code, body = postJSON(t, hs, "/detokenize", `{}`)
	require.Equal(t, 400, code, body)
	require.Contains(t, body, "Field required")
}

// TestEmbeddingsTokenCountPerModel: embeddings count prompt tokens with the served model's
// tokenizer (BOS for Llama 3 only, as add_special_tokens does).
func TestEmbeddingsTokenCountPerModel(t *testing.T) {
	for _, tc := range []struct {
		model  string
		tokens int
	}{{"meta-llama/Llama-3.1-8B-Instruct", 3}, {"Qwen/Qwen3-8B", 2}} {
		_, hs := startFamily(t, tc.model)
		code, body := postJSON(t, hs, "/v1/embeddings", `{"input":"Hello world"}`)
		require.Equal(t, http.StatusOK, code, body)
		require.Contains(t, body, fmt.Sprintf(`"prompt_tokens":%d`, tc.tokens), tc.model)
	}
}
