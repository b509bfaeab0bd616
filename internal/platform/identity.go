package platform

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/strata-inference/strata/internal/openai"
)

// Ownership by tenant (contract C5, /tmp/strata/CONTRACTS.md). Every stored object (response,
// conversation, file, vector store) belongs to an owner token. The platform asks the layer
// below who the caller's key belongs to, GET /v1/strata/identity with the caller's
// Authorization (or x-api-key) header, answered by the gateway as
// {"object":"strata.identity","tenant_id":"ten_...","key_id":"key_..."}; the owner is the
// tenant id, so every key of a tenant sees the tenant's objects, and a revoked or unknown key
// gets the gateway's 401 on every platform route. Without a gateway below (the router, an
// engine: 404 on that path) the owner is the SHA-256 (hex) of the key, as before tenants.
//
// Answers are cached per key (by its SHA-256, never the key) for platform.identity_ttl;
// concurrent misses of one key share one request. Objects stored under a key's hash before a
// gateway was below are adopted by the key's tenant the first time this process resolves the
// key (store.AdoptOwner), so upgrading a deployment keeps them reachable.

// pathIdentity is the gateway's identity route (contract C5).
const pathIdentity = "/v1/strata/identity"

// identityCacheSize bounds the keys whose identity is held in memory (LRU beyond it).
const identityCacheSize = 8192

// errIdentityUnavailable answers a request whose owner cannot be resolved because the layer
// below failed (not because the key is bad): the client may retry.
var errIdentityUnavailable = &openai.Error{Status: http.StatusServiceUnavailable, Type: openai.TypeUnavailable,
	Message: "The service is temporarily unable to identify the caller; retry later."}

// identityResolver maps API keys to owner tokens.
type identityResolver struct {
	p       *Platform
	cache   *lru.Cache[string, identityEntry] // by key hash
	group   singleflight.Group
	adopted sync.Map // key hashes whose objects this process moved to their tenant
}

type identityEntry struct {
	owner string
	at    time.Time
}

// identity is the gateway's answer.
type identity struct {
	Object   string `json:"object"`
	TenantID string `json:"tenant_id"`
	KeyID    string `json:"key_id"`
}

func newIdentityResolver(p *Platform) *identityResolver {
	c, _ := lru.New[string, identityEntry](identityCacheSize) // errors only for a size <= 0
	return &identityResolver{p: p, cache: c}
}

// keyHash returns the SHA-256 (hex) of the caller's API key ("Authorization: Bearer <key>",
// else "x-api-key"), and false when there is none. It is the owner token without a gateway
// below, and the cache key of identities.
func keyHash(r *http.Request) (string, bool) {
	key := ""
	if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		key = strings.TrimSpace(tok)
	}
	if key == "" {
		key = strings.TrimSpace(r.Header.Get("x-api-key"))
	}
	if key == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:]), true
}

// ownerOf returns the caller's owner token: its tenant id from the gateway below, or its key
// hash without a gateway. Errors: 401 without a key or for a key the gateway refuses (its
// envelope), 503 when the layer below fails, the client's cancellation.
func (p *Platform) ownerOf(r *http.Request) (string, error) {
	hash, ok := keyHash(r)
	if !ok {
		return "", errNoKey
	}
	ids := p.ids
	now := p.clk.Now()
	if e, ok := ids.cache.Get(hash); ok && now.Sub(e.at) < p.cfg.IdentityCacheTTL() && !now.Before(e.at) {
		return e.owner, nil
	}
	v, err, _ := ids.group.Do(hash, func() (any, error) {
		owner, err := ids.ask(r, hash)
		if err != nil {
			return "", err
		}
		ids.cache.Add(hash, identityEntry{owner: owner, at: p.clk.Now()})
		return owner, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// ask sends GET /v1/strata/identity to the layer below with the caller's key.
func (ids *identityResolver) ask(r *http.Request, hash string) (string, error) {
	p := ids.p
	// The request of the first caller of a burst carries everyone's wait: it must not end
	// because that one client went away while others still wait for the answer.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://upstream"+pathIdentity, http.NoBody)
	if err != nil {
		return "", err
	}
	for _, h := range []string{"Authorization", "x-api-key", openai.HeaderRequestID} {
		if v := r.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	resp, err := p.next.RoundTrip(out)
	if err != nil {
		p.log.Warn("identity request to the layer below failed", "err", err)
		return "", errIdentityUnavailable
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", errIdentityUnavailable
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var id identity
		if json.Unmarshal(b, &id) != nil || id.Object != "strata.identity" || id.TenantID == "" {
			p.log.Warn("layer below answered an unreadable identity", "bytes", len(b))
			return "", errIdentityUnavailable
		}
		ids.adopt(ctx, hash, id.TenantID)
		return id.TenantID, nil
	case http.StatusNotFound:
		return hash, nil // no gateway below: ownership by key
	case http.StatusUnauthorized, http.StatusForbidden:
		if e := openai.ParseError(resp.StatusCode, b); e != nil {
			return "", e
		}
		return "", openai.Unauthorized("Incorrect API key provided.")
	}
	p.log.Warn("identity request to the layer below answered an error", "status", resp.StatusCode)
	return "", errIdentityUnavailable
}

// adopt moves the objects stored under the key's hash (before a gateway was below) to its
// tenant, once per key and process. A failure is logged and retried at the next resolution.
func (ids *identityResolver) adopt(ctx context.Context, hash, tenant string) {
	if _, done := ids.adopted.Load(hash); done {
		return
	}
	n, err := ids.p.st.AdoptOwner(ctx, hash, tenant)
	if err != nil {
		ids.p.log.Warn("adopting objects stored by key failed", "err", err)
		return
	}
	if n > 0 {
		ids.p.log.Info("objects stored by an API key now belong to its tenant", "objects", n)
	}
	ids.adopted.Store(hash, struct{}{})
}
