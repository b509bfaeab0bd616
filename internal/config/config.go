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
	// Role is the replica's part in prefill/decode disaggregation, as llm-d labels its pods
	// (llm-d.ai/role): "prefill", "decode" or "both". Empty means both. Prefill-only replicas
	// receive only the prefill leg of disaggregated requests (see internal/router/README.md).
	Role string `json:"role"`
	// KVEvents is the ZMQ address of the engine's KV-cache event publisher, as vLLM's
	// --kv-events-config endpoint ("tcp://10.0.0.7:5557"). Empty: the router does not subscribe.
	KVEvents string `json:"kv_events"`
}

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
		Sim:          defaultSim(),
		Gateway:      defaultGateway(),
		Router:       defaultRouter(),
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
		if err := e.validate(); err != nil {
			return fmt.Errorf("engines[%d].%w", i, err)
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
	if err := c.Platform.Validate(); err != nil {
		return err
	}
	if err := c.Router.validate(); err != nil {
		return fmt.Errorf("router.%w", err)
	}
	if err := c.Gateway.validate(); err != nil {
		return fmt.Errorf("gateway.%w", err)
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
