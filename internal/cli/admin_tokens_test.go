package cli

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAdminTokensCmd(t *testing.T) {
	dir := t.TempDir()
	out, err := runCmd(t, dir, adminTokensCmd, "create", "--scopes", "keys, read", "--name", "ci")
	require.NoError(t, err)
	require.Regexp(t, `token:  sk-strata-admin-[0-9A-Za-z]{43}\n`, out)
	require.Contains(t, out, "scopes: read,keys\n")
	id := regexp.MustCompile(`id:\s+(adm_\S+)`).FindStringSubmatch(out)[1]

	_, err = runCmd(t, dir, adminTokensCmd, "create", "--scopes", "read,root")
	require.ErrorContains(t, err, `unknown admin scope "root"`)
	_, err = runCmd(t, dir, adminTokensCmd, "create")
	require.ErrorContains(t, err, "scopes")

	out, err = runCmd(t, dir, adminTokensCmd, "revoke", id)
	require.NoError(t, err)
	require.Contains(t, out, "revoked "+id)
	out, err = runCmd(t, dir, adminTokensCmd, "list")
	require.NoError(t, err)
	require.Regexp(t, id+`\s+ci\s+sk-strata-admin-\S+…\s+read,keys\s+\S+\s+revoked`, out)
	_, err = runCmd(t, dir, adminTokensCmd, "revoke", "adm_ghost")
	require.ErrorContains(t, err, "not found")

	out, err = runCmd(t, dir, auditCmd, "verify")
	require.NoError(t, err, out)
}
