package config

import (
	"fmt"
	"time"
)

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

func (g *Gateway) validate() error {
	if g.AuthCacheTTL < 0 {
		return fmt.Errorf("auth_cache_ttl: must not be negative, got %s", g.AuthCacheTTL.D())
	}
	for _, v := range []struct {
		name string
		v    *int
	}{{"dev_rpm", g.DevRPM}, {"dev_tpm", g.DevTPM}} {
		if v.v != nil && *v.v < 0 {
			return fmt.Errorf("%s: must not be negative, got %d", v.name, *v.v)
		}
	}
	return nil
}

func defaultGateway() Gateway {
	return Gateway{DevTenant: ptr("dev"), DevRPM: ptr(600), DevTPM: ptr(1_000_000), AuthCacheTTL: Duration(5 * time.Second)}
}
