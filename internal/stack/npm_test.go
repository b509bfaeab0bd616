package stack

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNodeSDK runs sdk/node/scenarios.mjs, the official `openai` npm package (v6, pinned by
// sdk/node/package-lock.json), against the whole stack on a real loopback listener: responses
// (create, stream, function-call round trip), conversations, files, vector stores,
// file_search through responses, and tenant isolation through the gateway's identity (a second
// key of the tenant sees every object, another tenant's key gets 404 for each). `npm ci` installs the package when node_modules is missing.
// It skips only when node or npm is not installed.
//
//	go test -count=1 -run TestNodeSDK -v ./internal/stack/
func TestNodeSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the openai npm package scenarios (sdk/node) need Node.js 20+")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed: the openai npm package scenarios (sdk/node) need npm")
	}
	dir, err := filepath.Abs("../../sdk/node")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "npm ci in sdk/node:\n%s", out)
	}

	ts := startStack(t, nil)
	// Tenant identity: a second key of the dev tenant, and a key of another tenant.
	sameKey, _, err := ts.admin.CreateKey(ctx, *ts.cfg.Gateway.DevTenant, "")
	require.NoError(t, err)
	_, err = ts.admin.CreateTenant(ctx, "npm-other", 0, 0, nil)
	require.NoError(t, err)
	otherKey, _, err := ts.admin.CreateKey(ctx, "npm-other", "")
	require.NoError(t, err)

	cmd := exec.CommandContext(ctx, node, "scenarios.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "STRATA_BASE_URL="+ts.base+"/v1", "STRATA_API_KEY="+devKey, "STRATA_MODEL="+ts.model,
		"STRATA_API_KEY_SAME_TENANT="+sameKey, "STRATA_API_KEY_OTHER_TENANT="+otherKey)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("node sdk/node/scenarios.mjs:\n%s", out.String())
	require.NoError(t, err, "a scenario failed:\n%s", out.String())
	require.Equal(t, 8, strings.Count(out.String(), "PASS "), "every scenario ran")
	require.NotContains(t, out.String(), "FAIL ")
}
