package sim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"unicode"

	"github.com/cespare/xxhash/v2"

	"github.com/strata-inference/strata/internal/openai"
)

// defaultEmbeddingDim is the length of simulated embeddings when the request sets no
// "dimensions" (384, the size of common small embedding models); maxEmbeddingDim bounds it.
const (
	defaultEmbeddingDim = 384
	maxEmbeddingDim     = 8192
)

// embeddingRequest is vLLM's EmbeddingCompletionRequest (the fields the simulator reads).
type embeddingRequest struct {
	Model          *string         `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

type embeddingData struct {
	Index     int    `json:"index"`
	Object    string `json:"object"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32
}

type embeddingUsage struct {
	PromptTokens        int  `json:"prompt_tokens"`
	TotalTokens         int  `json:"total_tokens"`
	CompletionTokens    int  `json:"completion_tokens"`
	PromptTokensDetails *int `json:"prompt_tokens_details"`
}

type embeddingResponse struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Data    []embeddingData `json:"data"`
	Usage   embeddingUsage  `json:"usage"`
}

// handleEmbeddings is vLLM's POST /v1/embeddings (vllm/entrypoints/openai/ pooling serving):
// input is a string, a list of strings, a list of token ids or a list of lists; the answer is
// {"id":"embd-...","object":"list","data":[{"index","object":"embedding","embedding"}],"usage"}.
// vLLM serves it only for pooling models; the simulator serves it for any model, answering at
// once (no engine time), with embed's vectors.
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	var req embeddingRequest
	if err := json.Unmarshal(body, &req); err != nil {
		openai.WriteError(w, validationError("json_invalid", "0", "JSON decode error"))
		return
	}
	if req.Model != nil && *req.Model != "" && *req.Model != s.cfg.ServedModelName {
		openai.WriteError(w, modelNotFound(*req.Model))
		return
	}
	dim := defaultEmbeddingDim
	if req.Dimensions != nil {
		if *req.Dimensions < 1 || *req.Dimensions > maxEmbeddingDim {
			openai.WriteError(w, badRequest("dimensions", "dimensions must be between 1 and %d, got %d.", maxEmbeddingDim, *req.Dimensions))
			return
		}
		dim = *req.Dimensions
	}
	switch req.EncodingFormat {
	case "", "float", "base64":
	default:
		openai.WriteError(w, validationError("literal_error", "'encoding_format'", "Input should be 'float' or 'base64'"))
		return
	}
	if !present(req.Input) {
		openai.WriteError(w, validationError("missing", "'input'", "Field required"))
		return
	}
	inputs, err := parsePrompt(req.Input)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	resp := embeddingResponse{ID: "embd-" + requestID(r), Object: "list", Created: s.clk.Now().Unix(), Model: s.cfg.ServedModelName}
	for i, in := range inputs {
		text, tokens := in.text, in.tokens
		if in.isText {
			tokens = s.tok.encodePrompt(text, true)
		} else {
			for _, id := range tokens {
				if !s.tok.inVocab(id) {
					openai.WriteError(w, badRequest("", "Token id %d is out of vocabulary", id))
					return
				}
			}
			text = s.tok.decodeAny(tokens)
		}
		if len(tokens) >= s.cfg.MaxModelLen {
			openai.WriteError(w, badRequest("input_tokens", "This model's maximum context length is %d tokens. However, you requested %d tokens in the input for embedding generation. Please reduce the length of the input.", s.cfg.MaxModelLen, len(tokens)))
			return
		}
		vec := Embed(text, dim)
		var e any = vec
		if req.EncodingFormat == "base64" {
			b := make([]byte, 4*len(vec))
			for j, v := range vec {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(v))
			}
			e = base64.StdEncoding.EncodeToString(b)
		}
		resp.Data = append(resp.Data, embeddingData{Index: i, Object: "embedding", Embedding: e})
		resp.Usage.PromptTokens += len(tokens)
	}
	resp.Usage.TotalTokens = resp.Usage.PromptTokens
	writeJSON(w, resp)
}

// Embed is the simulator's embedding of text: a deterministic unit vector of dim floats with
// lexical signal, so texts sharing words are near in cosine similarity and RAG tests retrieve
// what a person would expect. It hashes (xxhash64) every lower-cased word with weight 1 and
// every pair of adjacent words with weight 0.5 into a signed bucket (feature hashing,
// Weinberger et al. 2009), then L2-normalises. Identical texts give identical vectors; texts
// with no word in common are near orthogonal; the empty text gives the zero vector.
func Embed(text string, dim int) []float32 {
	vec := make([]float64, dim)
	add := func(feature string, w float64) {
		h := xxhash.Sum64String(feature)
		if h>>63 == 1 {
			w = -w
		}
		vec[h%uint64(dim)] += w
	}
	words := strings.FieldsFunc(strings.ToLower(text), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	for i, wd := range words {
		add("w:"+wd, 1)
		if i > 0 {
			add("b:"+words[i-1]+" "+wd, 0.5)
		}
	}
	var norm float64
	for _, v := range vec {
		norm += v * v
	}
	out := make([]float32, dim)
	if norm == 0 {
		return out
	}
	norm = math.Sqrt(norm)
	for i, v := range vec {
		out[i] = float32(v / norm)
	}
	return out
}

// detokenizeRequest is vLLM's DetokenizeRequest.
type detokenizeRequest struct {
	Model  *string `json:"model"`
	Tokens *[]int  `json:"tokens"`
}

// handleDetokenize is vLLM's POST /detokenize: {"tokens":[ids]} in, {"prompt": text} out;
// an id outside the vocabulary is a 400.
func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	var req detokenizeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		openai.WriteError(w, validationError("json_invalid", "0", "JSON decode error"))
		return
	}
	if req.Tokens == nil {
		openai.WriteError(w, validationError("missing", "'tokens'", "Field required"))
		return
	}
	if req.Model != nil && *req.Model != "" && *req.Model != s.cfg.ServedModelName {
		openai.WriteError(w, modelNotFound(*req.Model))
		return
	}
	for _, id := range *req.Tokens {
		if !s.tok.inVocab(id) {
			openai.WriteError(w, badRequest("", "Token id %d is out of vocabulary", id))
			return
		}
	}
	writeJSON(w, struct {
		Prompt string `json:"prompt"`
	}{s.tok.decodeAny(*req.Tokens)})
}
