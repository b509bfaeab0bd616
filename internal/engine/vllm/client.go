package vllm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Client calls the management endpoints of one vLLM replica (vllm/entrypoints/openai/
// api_server.py): /metrics, /tokenize, /v1/load_lora_adapter, /v1/unload_lora_adapter.
type Client struct {
	base         string
	hc           *http.Client
	scrapeErrors prometheus.Counter
}

// APIError is a replica's non-2xx answer: the status and the message of vLLM's ErrorResponse
// {"error":{"message",...}} (or the body's text when it is not that JSON).
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("vllm: status %d: %s", e.Status, e.Message) }

// NewClient returns a client of the replica at baseURL ("http://10.0.0.5:8000", no /v1), using
// hc (nil: http.DefaultClient). Metrics text that cannot be parsed increments
// strata_engine_vllm_metrics_parse_errors_total{replica} on reg (may be nil). Errors: a metric
// registration conflict.
func NewClient(baseURL string, hc *http.Client, reg prometheus.Registerer, replica string) (*Client, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	c := &Client{base: strings.TrimSuffix(baseURL, "/"), hc: hc,
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_engine_vllm_metrics_parse_errors_total",
			Help: "Scrapes of a replica's /metrics whose text could not be parsed."})}
	if reg != nil {
		if err := prometheus.WrapRegistererWith(prometheus.Labels{"replica": replica}, reg).Register(c.scrapeErrors); err != nil {
			return nil, fmt.Errorf("vllm: register metrics: %w", err)
		}
	}
	return c, nil
}

func (c *Client) do(ctx context.Context, method, path string, in any) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxMetricsBytes+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		return nil, &APIError{Status: resp.StatusCode, Message: msg}
	}
	return b, nil
}

// Telemetry scrapes GET /metrics and parses it (ParseMetrics). A text that does not parse is
// counted and returned as an error wrapping ErrMalformed.
func (c *Client) Telemetry(ctx context.Context) (*Telemetry, error) {
	b, err := c.do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return nil, err
	}
	t, err := ParseMetrics(bytes.NewReader(b))
	if err != nil {
		c.scrapeErrors.Inc()
		return nil, err
	}
	return t, nil
}

// Tokenize calls POST /tokenize {"model","prompt","add_special_tokens"} and returns the token
// ids of prompt as the replica's tokenizer counts them.
func (c *Client) Tokenize(ctx context.Context, model, prompt string, addSpecialTokens bool) ([]int, error) {
	b, err := c.do(ctx, http.MethodPost, "/tokenize", map[string]any{"model": model, "prompt": prompt, "add_special_tokens": addSpecialTokens})
	if err != nil {
		return nil, err
	}
	var out struct {
		Tokens []int `json:"tokens"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Tokens == nil {
		return nil, fmt.Errorf("%w: /tokenize answer", ErrMalformed)
	}
	return out.Tokens, nil
}

// LoadLoRA calls POST /v1/load_lora_adapter {"lora_name","lora_path"}. Loading an adapter that
// is already loaded is an *APIError with status 400.
func (c *Client) LoadLoRA(ctx context.Context, name, path string) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/load_lora_adapter", map[string]string{"lora_name": name, "lora_path": path})
	return err
}

// UnloadLoRA calls POST /v1/unload_lora_adapter {"lora_name"}; an unknown adapter is an
// *APIError with status 404 (ErrAdapterNotFound matches it with errors.Is).
func (c *Client) UnloadLoRA(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/unload_lora_adapter", map[string]string{"lora_name": name})
	return err
}

// ErrAdapterNotFound matches, with errors.Is, the 404 of unloading an adapter the replica
// does not have.
var ErrAdapterNotFound = errors.New("vllm: lora adapter not found")

// Is makes errors.Is(err, ErrAdapterNotFound) true for a 404.
func (e *APIError) Is(target error) bool {
	return target == ErrAdapterNotFound && e.Status == http.StatusNotFound
}
