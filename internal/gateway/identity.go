package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/strata-inference/strata/internal/openai"
)

// PathIdentity is the route that tells the layers above who a tenant key belongs to (contract
// C5, /tmp/strata/CONTRACTS.md): GET with the key as "Authorization: Bearer <key>" or
// "x-api-key" answers
//
//	{"object":"strata.identity","tenant_id":"ten_...","key_id":"key_..."}
//
// and a missing, unknown, malformed or revoked key the same 401 as every other route. The
// platform owns its stored objects (responses, conversations, files, vector stores) by the
// tenant id it learns here, so every key of a tenant shares them.
const PathIdentity = "/v1/strata/identity"

// identity is the answer of PathIdentity.
type identity struct {
	Object   string `json:"object"` // "strata.identity"
	TenantID string `json:"tenant_id"`
	KeyID    string `json:"key_id"`
}

// serveIdentity answers GET /v1/strata/identity for the authenticated key, reusing the
// authenticator (and its cache) of inference requests. It is neither rate limited nor metered:
// the platform asks once per key and TTL.
func (g *Gateway) serveIdentity(w http.ResponseWriter, r *http.Request) {
	p, err := g.auth.authenticate(r.Context(), r.Header)
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	b, err := json.Marshal(identity{Object: "strata.identity", TenantID: p.tenant.ID, KeyID: p.key.ID})
	if err != nil {
		openai.WriteError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
