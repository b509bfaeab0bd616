package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/strata-inference/strata/internal/openai"
)

// LoRA adapters, as vLLM serves them with --enable-lora and runtime loading
// (vllm/entrypoints/openai/ serving_models.py): POST /v1/load_lora_adapter
// {"lora_name","lora_path"} and POST /v1/unload_lora_adapter {"lora_name"} answer plain text;
// a loaded adapter is a model of its own (in /v1/models with parent = the base model), its
// requests hash their blocks with the adapter name as extra key, and at most max_loras adapters
// run at once (the scheduler skips waiting requests of other adapters). The simulator loads no
// weights: an adapter costs nothing but its name.

type loraAdapter struct {
	name, path string
	id         int
	created    int64
}

// loraRequest is vLLM's LoadLoRAAdapterRequest / UnloadLoRAAdapterRequest.
type loraRequest struct {
	LoRAName string `json:"lora_name"`
	LoRAPath string `json:"lora_path"`
}

func (s *Server) readLoRARequest(w http.ResponseWriter, r *http.Request) (*loraRequest, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		openai.WriteError(w, err)
		return nil, false
	}
	var req loraRequest
	if err := json.Unmarshal(body, &req); err != nil {
		openai.WriteError(w, validationError("json_invalid", "0", "JSON decode error"))
		return nil, false
	}
	if req.LoRAName == "" {
		openai.WriteError(w, validationError("missing", "'lora_name'", "Field required"))
		return nil, false
	}
	return &req, true
}

func writeText(w http.ResponseWriter, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, text)
}

// handleLoadLoRA is vLLM's POST /v1/load_lora_adapter.
func (s *Server) handleLoadLoRA(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readLoRARequest(w, r)
	if !ok {
		return
	}
	if req.LoRAPath == "" {
		openai.WriteError(w, badRequest("lora_path", "Both 'lora_name' and 'lora_path' must be provided."))
		return
	}
	s.mu.Lock()
	if _, dup := s.adapters[req.LoRAName]; dup || req.LoRAName == s.cfg.ServedModelName {
		s.mu.Unlock()
		openai.WriteError(w, badRequest("lora_name", "The lora adapter '%s' has already been loaded.", req.LoRAName))
		return
	}
	s.nextLoRAID++
	s.adapters[req.LoRAName] = &loraAdapter{name: req.LoRAName, path: req.LoRAPath, id: s.nextLoRAID, created: s.clk.Now().Unix()}
	s.mu.Unlock()
	writeText(w, "Success: LoRA adapter '"+req.LoRAName+"' added successfully.")
}

// handleUnloadLoRA is vLLM's POST /v1/unload_lora_adapter. Requests already queued for the
// adapter still finish with it.
func (s *Server) handleUnloadLoRA(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readLoRARequest(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	_, found := s.adapters[req.LoRAName]
	delete(s.adapters, req.LoRAName)
	s.mu.Unlock()
	if !found {
		openai.WriteError(w, vllmError(http.StatusNotFound, "NotFoundError", "lora_name", "The lora adapter '%s' cannot be found.", req.LoRAName))
		return
	}
	writeText(w, "Success: LoRA adapter '"+req.LoRAName+"' removed successfully.")
}

// adapterCards are the /v1/models entries of the loaded adapters, by name.
func (s *Server) adapterCards() []modelCard {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []modelCard
	for _, a := range s.adapters {
		parent := s.cfg.ServedModelName
		out = append(out, modelCard{ID: a.name, Object: "model", Created: a.created, OwnedBy: "vllm", Root: a.path,
			Parent: &parent, MaxModelLen: s.cfg.MaxModelLen, Permission: []modelPermission{{
				ID: "modelperm-" + randomID(), Object: "model_permission", Created: a.created,
				AllowSampling: true, AllowLogprobs: true, AllowView: true, Organization: "*",
			}}})
	}
	slices.SortFunc(out, func(a, b modelCard) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// adapterFor returns the adapter a request's model names, nil for the base model; an unknown
// model is vLLM's 404.
func (s *Server) adapterFor(req *genRequest) (*loraAdapter, error) {
	if req.Model == nil || *req.Model == "" || *req.Model == s.cfg.ServedModelName {
		return nil, nil
	}
	s.mu.Lock()
	a := s.adapters[*req.Model]
	s.mu.Unlock()
	if a == nil {
		return nil, modelNotFound(*req.Model)
	}
	return a, nil
}

// loraInfoLabels is vllm:lora_requests_info's label set for the core's state: the adapters of
// running and of waiting requests, sorted and comma-joined (vllm/v1/metrics/loggers.py).
func (c *Engine) loraInfo() (running, waiting string) {
	set := func(seqs []*sequence) string {
		var names []string
		for _, s := range seqs {
			if s.lora != "" && !slices.Contains(names, s.lora) {
				names = append(names, s.lora)
			}
		}
		slices.Sort(names)
		return strings.Join(names, ",")
	}
	return set(c.running), set(c.waiting)
}
