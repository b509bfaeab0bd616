// Package config holds Strata's YAML configuration: defaults first, then a strict decode (an
// unknown key is an error), then Validate. Every rejected config has a golden case in
// testdata/*.bad.yaml with its expected message.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Layer names, as given to --layers and Config.Layers.
const (
	LayerPlatform = "platform"
	LayerGateway  = "gateway"
	LayerRouter   = "router"
	LayerEngine   = "engine"
)

// AllLayers is the chain from the front door down, in order.
var AllLayers = []string{LayerPlatform, LayerGateway, LayerRouter, LayerEngine}

// Config is the whole configuration of one strata process.
type Config struct {
	// Listen is the front door's address (host:port).
	Listen string `json:"listen"`
	// DataDir holds the SQLite database and the key secret. Default: $XDG_DATA_HOME/strata, or
	// ~/.local/share/strata.
	DataDir string `json:"data_dir"`
	// Layers this process runs, a subset of AllLayers; default all. "engine" means the simulated
	// replicas of Sim; it is dropped when Engines lists external engines.
	Layers []string `json:"layers"`
	// Upstream is the base URL of the next layer when the lowest layer run here is not the router
	// (for example --layers platform,gateway --upstream http://router:8080).
	Upstream string `json:"upstream"`
	// MaxBodyBytes bounds request bodies at the front door; larger ones get 413. Default 10 MiB.
	MaxBodyBytes int64 `json:"max_body_bytes"`

	Store    Store    `json:"store"`
	Engines  []Engine `json:"engines"`
	Sim      Sim      `json:"sim"`
	Gateway  Gateway  `json:"gateway"`
	Router   Router   `json:"router"`
	Platform Platform `json:"platform"`
}

// Store selects the SQL database.
type Store struct {
	// Driver is "sqlite" (default) or "postgres".
	Driver string `json:"driver"`
	// DSN is the SQLite file path (default <data_dir>/strata.db) or a PostgreSQL URL
	// (postgres://user@host:5432/db).
	DSN string `json:"dsn"`
}

// Engine is one external inference server: vLLM or any OpenAI-compatible server.
type Engine struct {
	// Name identifies the replica in metrics, logs and usage records. Default: host:port of URL.
	Name string `json:"name"`
	// URL is the server's base URL, without /v1 (http://10.0.0.7:8000).
	URL string `json:"url"`
	// Models it serves; when empty they are discovered from its GET /v1/models.
	Models []string `json:"models"`
	// GPU type, recorded with usage so margin can be computed (H100-SXM, A100-80GB, ...).
	GPU string `json:"gpu"`
}

// Sim configures the simulated vLLM replicas started when no external engines are listed.
type Sim struct {
	// Replicas is the number of simulated replicas. Default 3.
	Replicas int `json:"replicas"`
	// Model is the simulated model profile (its size sets the timing). Default
	// meta-llama/Llama-3.1-8B-Instruct.
	Model string `json:"model"`
	// ServedModelName is the model name of the API, as vLLM's --served-model-name. Default Model.
	ServedModelName string `json:"served_model_name"`
	// GPU is the simulated GPU profile. Default H100-SXM.
	GPU string `json:"gpu"`
	// MaxModelLen is the context length in tokens; longer requests get vLLM's 400. Default 8192.
	MaxModelLen int `json:"max_model_len"`
	// MaxNumSeqs caps concurrently running requests; the rest wait. Default 256.
	MaxNumSeqs int `json:"max_num_seqs"`
	// BlockSize is the KV block size in tokens. Default 16.
	BlockSize int `json:"block_size"`
	// NumGPUBlocks is the KV cache size in blocks. Default 8192 (131072 tokens).
	NumGPUBlocks int `json:"num_gpu_blocks"`
	// TimeScale multiplies every simulated delay: 1 is real time, 0 answers at once. Default 1.
	TimeScale *float64 `json:"time_scale"`
	// MaxOutputTokens bounds generated answers when the request sets no limit. Default 256.
	MaxOutputTokens int `json:"max_output_tokens"`
	// Seed makes generated text deterministic per (seed, prompt). Default 0.
	Seed int64 `json:"seed"`
}

// Gateway configures the tenant plane.
type Gateway struct {
	// KeySecretFile holds the server secret that API keys are HMAC-SHA-256 hashed with. Created
	// with 32 random bytes (mode 0600) on first start. Default <data_dir>/key-secret.
	KeySecretFile string `json:"key_secret_file"`
	// DevTenant is created with a key on first start when no tenant exists. Default "dev";
	// "" disables it.
	DevTenant *string `json:"dev_tenant"`
	// DevRPM and DevTPM are the development tenant's limits (0 = unlimited). Default 600 / 1000000.
	DevRPM *int `json:"dev_rpm"`
	DevTPM *int `json:"dev_tpm"`
	// AuthCacheTTL is how long a gateway reuses an authenticated key and its tenant before reading
	// the store again: the longest a revocation or limit change made elsewhere (the CLI, another
	// gateway replica) takes to apply. 0 reads the store on every request. Default 5s.
	AuthCacheTTL Duration `json:"auth_cache_ttl"`
}

// Router configures the data plane.
type Router struct {
	// HealthInterval is the period of GET /health on each endpoint. Default 1s.
	HealthInterval Duration `json:"health_interval"`
	// ScrapeInterval is the period of GET /metrics on each endpoint. Default 50ms.
	ScrapeInterval Duration `json:"scrape_interval"`
	// ScrapeTimeout bounds one health check or scrape. Default 1s.
	ScrapeTimeout Duration `json:"scrape_timeout"`
	// StaleAfter: metrics older than this count the endpoint as saturated. Default 2s.
	StaleAfter Duration `json:"stale_after"`
	// Weights of the scorers; a weight of 0 disables a scorer.
	Weights ScorerWeights `json:"weights"`
	// PrefixBlockChars is the block size, in characters, of the approximate prefix scorer. Default 64
	// (about 16 tokens, one vLLM KV block). Blocks end at message boundaries, so a short first turn
	// still gives the second turn of a conversation a matching block.
	PrefixBlockChars int `json:"prefix_block_chars"`
	// PrefixLRUBlocks is the number of prefix blocks remembered per endpoint. Default 32768.
	PrefixLRUBlocks int `json:"prefix_lru_blocks"`
	// MaxAttempts is how many endpoints a request whose connection is refused may try. Default 3.
	MaxAttempts int `json:"max_attempts"`
}

// ScorerWeights weights the router's scorers; scores are in [0,1].
type ScorerWeights struct {
	Queue   *float64 `json:"queue"`    // default 1
	KVCache *float64 `json:"kv_cache"` // default 1
	Prefix  *float64 `json:"prefix"`   // default 3
}

// Platform configures the workflow layer.
type Platform struct{}

// Duration is a time.Duration written as a Go duration string ("50ms", "1m30s") in YAML.
type Duration time.Duration

// UnmarshalJSON parses a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"50ms\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func ptr[T any](v T) *T { return &v }

// Default returns the configuration of `strata serve` with no flags and no file.
func Default() *Config {
	return &Config{
		Listen:       "127.0.0.1:8080",
		MaxBodyBytes: 10 << 20,
		Store:        Store{Driver: "sqlite"},
		Sim: Sim{
			Replicas: 3, Model: "meta-llama/Llama-3.1-8B-Instruct", GPU: "H100-SXM",
			MaxModelLen: 8192, MaxNumSeqs: 256, BlockSize: 16, NumGPUBlocks: 8192,
			TimeScale: ptr(1.0), MaxOutputTokens: 256,
		},
		Gateway: Gateway{DevTenant: ptr("dev"), DevRPM: ptr(600), DevTPM: ptr(1_000_000), AuthCacheTTL: Duration(5 * time.Second)},
		Router: Router{
			HealthInterval: Duration(time.Second), ScrapeInterval: Duration(50 * time.Millisecond),
			ScrapeTimeout: Duration(time.Second), StaleAfter: Duration(2 * time.Second),
			Weights:          ScorerWeights{Queue: ptr(1.0), KVCache: ptr(1.0), Prefix: ptr(3.0)},
			PrefixBlockChars: 64, PrefixLRUBlocks: 32768, MaxAttempts: 3,
		},
	}
}

// Load reads the YAML file at path over the defaults (path "" gives the defaults), applies
// overrides (command-line flags) in order, then fills the derived defaults (data directory, DSN,
// key secret file) and validates. Errors name the file and the offending key.
func Load(path string, overrides ...func(*Config)) (*Config, error) {
	cfg := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := Parse(b, cfg); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	for _, o := range overrides {
		o(cfg)
	}
	if err := cfg.Finish(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// Parse strictly decodes YAML b over cfg: unknown keys and type mismatches are errors.
func Parse(b []byte, cfg *Config) error {
	if err := yaml.UnmarshalStrict(b, cfg); err != nil {
		return cleanYAMLError(err)
	}
	return nil
}

func cleanYAMLError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error unmarshaling JSON: while decoding JSON: ")
	msg = strings.ReplaceAll(msg, "json: ", "")
	return errors.New(msg)
}

// Finish fills defaults that depend on other fields (data_dir, store.dsn,
// gateway.key_secret_file, engine names, layers) and then runs Validate.
func (c *Config) Finish() error {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir()
	}
	if c.Sim.ServedModelName == "" {
		c.Sim.ServedModelName = c.Sim.Model
	}
	if c.Store.Driver == "sqlite" && c.Store.DSN == "" {
		c.Store.DSN = filepath.Join(c.DataDir, "strata.db")
	}
	if c.Gateway.KeySecretFile == "" {
		c.Gateway.KeySecretFile = filepath.Join(c.DataDir, "key-secret")
	}
	if len(c.Layers) == 0 {
		c.Layers = slices.Clone(AllLayers)
	}
	if len(c.Engines) > 0 {
		c.Layers = slices.DeleteFunc(c.Layers, func(l string) bool { return l == LayerEngine })
	}
	for i := range c.Engines {
		if c.Engines[i].Name == "" {
			if u, err := url.Parse(c.Engines[i].URL); err == nil {
				c.Engines[i].Name = u.Host
			}
		}
	}
	return c.Validate()
}

// Has reports whether this process runs layer.
func (c *Config) Has(layer string) bool { return slices.Contains(c.Layers, layer) }

// Validate checks the configuration; the error names the first offending key.
func (c *Config) Validate() error {
	if c.Listen == "" {
		return errors.New("listen: must not be empty")
	}
	if c.MaxBodyBytes <= 0 {
		return fmt.Errorf("max_body_bytes: must be positive, got %d", c.MaxBodyBytes)
	}
	seen := map[string]bool{}
	for _, l := range c.Layers {
		if !slices.Contains(AllLayers, l) {
			return fmt.Errorf("layers: unknown layer %q (want platform, gateway, router or engine)", l)
		}
		if seen[l] {
			return fmt.Errorf("layers: %q listed twice", l)
		}
		seen[l] = true
	}
	if len(c.Layers) == 0 {
		return errors.New("layers: no layer to run")
	}
	// Layers run here must be contiguous in the chain, or a request would skip one.
	first := slices.Index(AllLayers, c.Layers[0])
	for _, l := range c.Layers {
		first = min(first, slices.Index(AllLayers, l))
	}
	for i := first; i < first+len(c.Layers); i++ {
		if i >= len(AllLayers) || !seen[AllLayers[i]] {
			return fmt.Errorf("layers: %v is not a contiguous part of platform,gateway,router,engine", c.Layers)
		}
	}
	bottom := AllLayers[first+len(c.Layers)-1]
	needUpstream := bottom == LayerPlatform || bottom == LayerGateway
	if needUpstream && c.Upstream == "" {
		return fmt.Errorf("upstream: required when the lowest layer run here is %s", bottom)
	}
	if c.Upstream != "" {
		if !needUpstream {
			return fmt.Errorf("upstream: only used when the lowest layer run here is platform or gateway, not %s", bottom)
		}
		if err := checkURL(c.Upstream); err != nil {
			return fmt.Errorf("upstream: %w", err)
		}
	}
	if c.Has(LayerRouter) && !c.Has(LayerEngine) && len(c.Engines) == 0 {
		return errors.New("engines: the router needs engines, or the engine layer for simulated replicas")
	}
	names := map[string]bool{}
	for i, e := range c.Engines {
		if err := checkURL(e.URL); err != nil {
			return fmt.Errorf("engines[%d].url: %w", i, err)
		}
		if names[e.Name] {
			return fmt.Errorf("engines[%d].name: %q used twice", i, e.Name)
		}
		names[e.Name] = true
	}
	switch c.Store.Driver {
	case "sqlite", "postgres":
	default:
		return fmt.Errorf("store.driver: unknown driver %q (want sqlite or postgres)", c.Store.Driver)
	}
	if c.Store.Driver == "postgres" && c.Store.DSN == "" {
		return errors.New("store.dsn: required for postgres")
	}
	if err := c.Sim.validate(); err != nil {
		return fmt.Errorf("sim.%w", err)
	}
	if err := c.Router.validate(); err != nil {
		return fmt.Errorf("router.%w", err)
	}
	if c.Gateway.AuthCacheTTL < 0 {
		return fmt.Errorf("gateway.auth_cache_ttl: must not be negative, got %s", c.Gateway.AuthCacheTTL.D())
	}
	for name, v := range map[string]*int{"dev_rpm": c.Gateway.DevRPM, "dev_tpm": c.Gateway.DevTPM} {
		if v != nil && *v < 0 {
			return fmt.Errorf("gateway.%s: must not be negative, got %d", name, *v)
		}
	}
	return nil
}

func (s *Sim) validate() error {
	switch {
	case s.Replicas < 1:
		return fmt.Errorf("replicas: must be at least 1, got %d", s.Replicas)
	case s.Model == "":
		return errors.New("model: must not be empty")
	case s.BlockSize < 1:
		return fmt.Errorf("block_size: must be positive, got %d", s.BlockSize)
	case s.NumGPUBlocks < 1:
		return fmt.Errorf("num_gpu_blocks: must be positive, got %d", s.NumGPUBlocks)
	case s.MaxModelLen < 1:
		return fmt.Errorf("max_model_len: must be positive, got %d", s.MaxModelLen)
	case s.MaxNumSeqs < 1:
		return fmt.Errorf("max_num_seqs: must be positive, got %d", s.MaxNumSeqs)
	case s.MaxOutputTokens < 1:
		return fmt.Errorf("max_output_tokens: must be positive, got %d", s.MaxOutputTokens)
	case s.TimeScale != nil && *s.TimeScale < 0:
		return fmt.Errorf("time_scale: must not be negative, got %g", *s.TimeScale)
	}
	return nil
}

func (r *Router) validate() error {
	for name, d := range map[string]Duration{"health_interval": r.HealthInterval, "scrape_interval": r.ScrapeInterval,
		"scrape_timeout": r.ScrapeTimeout, "stale_after": r.StaleAfter} {
		if d <= 0 {
			return fmt.Errorf("%s: must be positive, got %s", name, d.D())
		}
	}
	for name, w := range map[string]*float64{"queue": r.Weights.Queue, "kv_cache": r.Weights.KVCache, "prefix": r.Weights.Prefix} {
		if w != nil && *w < 0 {
			return fmt.Errorf("weights.%s: must not be negative, got %g", name, *w)
		}
	}
	switch {
	case r.PrefixBlockChars < 1:
		return fmt.Errorf("prefix_block_chars: must be positive, got %d", r.PrefixBlockChars)
	case r.PrefixLRUBlocks < 1:
		return fmt.Errorf("prefix_lru_blocks: must be positive, got %d", r.PrefixLRUBlocks)
	case r.MaxAttempts < 1:
		return fmt.Errorf("max_attempts: must be at least 1, got %d", r.MaxAttempts)
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

// DefaultDataDir is $XDG_DATA_HOME/strata, else ~/.local/share/strata, else ./strata-data.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "strata")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "strata")
	}
	return "strata-data"
}
