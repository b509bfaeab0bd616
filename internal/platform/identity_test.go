package platform

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	oai "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
)

// Keys of the identity tests: a1 and a2 belong to tenant ten_a, b to ten_b.
var testTenants = map[string]string{"sk-a1": "ten_a", "sk-a2": "ten_a", "sk-b": "ten_b"}

func newTenantEnv(t *testing.T) *testEnv {
	env := newTestEnv(t)
	env.eng.setTenants(testTenants)
	return env
}

// objects creates one object of every kind with key: a stored background-able response, a
// conversation with an item, a file and a vector store holding it. It returns their ids.
type tenantObjects struct {
	response, bgResponse, conversation, convItem, file, vectorStore string
}

func createObjects(t *testing.T, env *testEnv, key string) tenantObjects {
	t.Helper()
	var o tenantObjects
	c := env.client(key)
	ctx := t.Context()
	res, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "m", Input: stringInput("mine")})
	require.NoError(t, err)
	o.response = res.ID
	status, _, body := env.do(t, "POST", "/v1/responses", key, `{"model":"m","input":"bg","background":true}`)
	require.Equal(t, 200, status, "%s", body)
	o.bgResponse = idOf(t, body)
	status, _, body = env.do(t, "POST", "/v1/conversations", key, `{"items":[{"type":"message","role":"user","content":"hello"}]}`)
	require.Equal(t, 200, status, "%s", body)
	o.conversation = idOf(t, body)
	status, _, body = env.do(t, "GET", "/v1/conversations/"+o.conversation+"/items", key, "")
	require.Equal(t, 200, status, "%s", body)
	var items struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &items))
	require.Len(t, items.Data, 1)
	o.convItem = items.Data[0].ID
	f, err := c.Files.New(ctx, oai.FileNewParams{File: oai.File(strings.NewReader("the router picks replicas"), "notes.md", "text/markdown"),
		Purpose: oai.FilePurposeAssistants})
	require.NoError(t, err)
	o.file = f.ID
	vs, err := c.VectorStores.New(ctx, oai.VectorStoreNewParams{Name: oai.String("kb"), FileIDs: []string{f.ID}})
	require.NoError(t, err)
	o.vectorStore = vs.ID
	return o
}

func idOf(t *testing.T, body []byte) string {
	t.Helper()
	var v struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(body, &v))
	require.NotEmpty(t, v.ID, "%s", body)
	return v.ID
}

// TestTenantOwnership walks every platform route of a tenant's objects with a key of another
// tenant (404 everywhere, and empty lists) and with a second key of the same tenant (2xx).
func TestTenantOwnership(t *testing.T) {
	env := newTenantEnv(t)
	o := createObjects(t, env, "sk-a1")
	require.Eventually(t, func() bool {
		_, _, body := env.do(t, "GET", "/v1/responses/"+o.bgResponse, "sk-a1", "")
		return strings.Contains(string(body), `"status":"completed"`)
	}, 5*time.Second, 10*time.Millisecond)
	fsTool := `"tools":[{"type":"file_search","vector_store_ids":["` + o.vectorStore + `"]}]`

	// Every route, in an order where the deleting ones come last.
	routes := []struct{ method, path, body string }{
		{"GET", "/v1/responses/" + o.response, ""},
		{"GET", "/v1/responses/" + o.response + "/input_items", ""},
		{"POST", "/v1/responses/" + o.bgResponse + "/cancel", ""},
		{"POST", "/v1/responses", `{"model":"m","input":"next","store":false,"previous_response_id":"` + o.response + `"}`},
		{"POST", "/v1/responses", `{"model":"m","input":"next","conversation":"` + o.conversation + `"}`},
		{"POST", "/v1/responses", `{"model":"m","input":"search","store":false,` + fsTool + `}`},
		{"GET", "/v1/conversations/" + o.conversation, ""},
		{"POST", "/v1/conversations/" + o.conversation, `{"metadata":{"k":"v"}}`},
		{"GET", "/v1/conversations/" + o.conversation + "/items", ""},
		{"POST", "/v1/conversations/" + o.conversation + "/items", `{"items":[{"type":"message","role":"user","content":"more"}]}`},
		{"GET", "/v1/conversations/" + o.conversation + "/items/" + o.convItem, ""},
		{"GET", "/v1/files/" + o.file, ""},
		{"GET", "/v1/files/" + o.file + "/content", ""},
		{"GET", "/v1/vector_stores/" + o.vectorStore, ""},
		{"GET", "/v1/vector_stores/" + o.vectorStore + "/files", ""},
		{"GET", "/v1/vector_stores/" + o.vectorStore + "/files/" + o.file, ""},
		{"POST", "/v1/vector_stores/" + o.vectorStore + "/search", `{"query":"router"}`},
		{"POST", "/v1/vector_stores/" + o.vectorStore + "/files", `{"file_id":"` + o.file + `"}`},
		{"DELETE", "/v1/vector_stores/" + o.vectorStore + "/files/" + o.file, ""},
		{"DELETE", "/v1/vector_stores/" + o.vectorStore, ""},
		{"DELETE", "/v1/conversations/" + o.conversation + "/items/" + o.convItem, ""},
		{"DELETE", "/v1/conversations/" + o.conversation, ""},
		{"DELETE", "/v1/files/" + o.file, ""},
		{"DELETE", "/v1/responses/" + o.response, ""},
	}
	for _, rt := range routes {
		status, _, body := env.do(t, rt.method, rt.path, "sk-b", rt.body)
		require.Equal(t, http.StatusNotFound, status, "another tenant: %s %s: %s", rt.method, rt.path, body)
		envelope(t, body)
	}
	for _, list := range []string{"/v1/files", "/v1/vector_stores"} {
		status, _, body := env.do(t, "GET", list, "sk-b", "")
		require.Equal(t, 200, status)
		require.Contains(t, string(body), `"data":[]`, "another tenant lists nothing: %s", list)
		status, _, body = env.do(t, "GET", list, "sk-a2", "")
		require.Equal(t, 200, status)
		require.NotContains(t, string(body), `"data":[]`, "the tenant's other key lists the objects: %s", list)
	}
	for _, rt := range routes {
		status, _, body := env.do(t, rt.method, rt.path, "sk-a2", rt.body)
		require.Equal(t, http.StatusOK, status, "same tenant, second key: %s %s: %s", rt.method, rt.path, body)
	}

	// A key the gateway refuses gets its 401 on the platform's routes too (a revoked key can no
	// longer read what it stored).
	status, _, body := env.do(t, "GET", "/v1/files", "sk-revoked", "")
	require.Equal(t, http.StatusUnauthorized, status)
	require.Equal(t, "invalid_api_key", envelope(t, body)["code"])
}

// TestIdentityCache: one identity request per key per platform.identity_ttl.
func TestIdentityCache(t *testing.T) {
	env := newTenantEnv(t)
	calls := func() int {
		env.eng.mu.Lock()
		defer env.eng.mu.Unlock()
		return env.eng.identityCalls
	}
	for range 5 {
		status, _, _ := env.do(t, "GET", "/v1/files", "sk-a1", "")
		require.Equal(t, 200, status)
	}
	require.Equal(t, 1, calls())
	env.do(t, "GET", "/v1/files", "sk-a2", "")
	require.Equal(t, 2, calls(), "cached per key")
	env.clk.Step(config.Platform{}.IdentityCacheTTL())
	env.do(t, "GET", "/v1/files", "sk-a1", "")
	require.Equal(t, 3, calls(), "asked again after the TTL")
	// A burst of a new key's first requests shares one identity request.
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(t.Context(), "GET", env.srv.URL+"/v1/files", nil)
			req.Header.Set("Authorization", "Bearer sk-b")
			if resp, err := env.srv.Client().Do(req); err == nil {
				statuses[i] = resp.StatusCode
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	for _, s := range statuses {
		require.Equal(t, 200, s)
	}
	require.LessOrEqual(t, calls(), 3+2, "concurrent misses of one key share a request (a late one may start a second)")
	env.clk.Step(config.Platform{}.IdentityCacheTTL())
	env.do(t, "GET", "/v1/files", "sk-a1", "")
	base := calls()
	// Pass-through routes never ask.
	env.do(t, "POST", "/v1/chat/completions", "sk-a1", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, base, calls())
}

// TestIdentityAdoption: objects stored by key before a gateway was below belong to the key's
// tenant once the platform learns it.
func TestIdentityAdoption(t *testing.T) {
	env := newTestEnv(t) // no gateway below: owned by key hash
	res, err := env.client("sk-a1").Responses.New(t.Context(), responses.ResponseNewParams{Model: "m", Input: stringInput("old")})
	require.NoError(t, err)

	env.eng.setTenants(testTenants) // a gateway is now below
	env.clk.Step(config.Platform{}.IdentityCacheTTL())
	status, _, _ := env.do(t, "GET", "/v1/responses/"+res.ID, "sk-a2", "")
	require.Equal(t, 404, status, "not adopted before its key is seen")
	status, _, _ = env.do(t, "GET", "/v1/responses/"+res.ID, "sk-a1", "")
	require.Equal(t, 200, status, "its key resolves to the tenant, which adopts it")
	status, _, _ = env.do(t, "GET", "/v1/responses/"+res.ID, "sk-a2", "")
	require.Equal(t, 200, status, "the tenant's other key sees it")
	status, _, _ = env.do(t, "GET", "/v1/responses/"+res.ID, "sk-b", "")
	require.Equal(t, 404, status)
}

// TestIdentityUnavailable: a failing layer below is a 503 (not a fallback to the key, which
// would hide the tenant's objects), and it is not cached.
func TestIdentityUnavailable(t *testing.T) {
	env := newTestEnv(t)
	env.eng.setTenants(testTenants)
	env.eng.mu.Lock()
	env.eng.tenants = map[string]string{} // every key refused
	env.eng.mu.Unlock()
	status, _, _ := env.do(t, "GET", "/v1/files", "sk-a1", "")
	require.Equal(t, 401, status)

	env.eng.mu.Lock()
	env.eng.identityStatus = http.StatusInternalServerError
	env.eng.mu.Unlock()
	env.clk.Step(time.Hour)
	for range 2 {
		status, _, body := env.do(t, "GET", "/v1/files", "sk-a2", "")
		require.Equal(t, 503, status)
		require.Equal(t, "service_unavailable_error", envelope(t, body)["type"])
	}
	env.eng.mu.Lock()
	defer env.eng.mu.Unlock()
	require.Equal(t, 3, env.eng.identityCalls, "failures are not cached")
}
