package cli

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := Run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, "version")
	require.NoError(t, err)
	require.Regexp(t, `^strata \S+ \(go1\.\d+`, out)
}

func TestBadConfigFileIsAClearError(t *testing.T) {
	_, stderr, err := run(t, "serve", "--config", "../config/testdata/unknown_key.bad.yaml")
	require.Error(t, err)
	require.Contains(t, stderr, `unknown field "listen_port"`)
	_, stderr, err = run(t, "serve", "--layers", "platform,router")
	require.Error(t, err)
	require.Contains(t, stderr, "not a contiguous part")
}

// The admin commands work on the data directory: tenants, keys (shown once, listed by prefix
// only), revocation and usage.
func TestAdminCommands(t *testing.T) {
	dir := t.TempDir()
	out, _, err := run(t, "tenants", "create", "acme", "--rpm", "60", "--tpm", "1000", "--models", "a,b", "--data-dir", dir)
	require.NoError(t, err)
	require.Equal(t, "created tenant acme (rpm 60, tpm 1000, models a,b)\n", out)

	_, stderr, err := run(t, "tenants", "create", "acme", "--data-dir", dir)
	require.Error(t, err, "tenant names are unique")
	require.NotEmpty(t, stderr)

	out, _, err = run(t, "keys", "create", "--tenant", "acme", "--data-dir", dir)
	require.NoError(t, err)
	key := regexp.MustCompile(`key: (sk-strata-\S+)`).FindStringSubmatch(out)
	id := regexp.MustCompile(`id:\s+(\S+)`).FindStringSubmatch(out)
	require.Len(t, key, 2, out)
	require.Len(t, id, 2, out)

	out, _, err = run(t, "keys", "list", "--data-dir", dir)
	require.NoError(t, err)
	require.Contains(t, out, id[1])
	require.Contains(t, out, "active")
	require.NotContains(t, out, key[1], "keys are never shown again")

	_, _, err = run(t, "keys", "revoke", id[1], "--data-dir", dir)
	require.NoError(t, err)
	out, _, err = run(t, "keys", "list", "--tenant", "acme", "--data-dir", dir)
	require.NoError(t, err)
	require.Contains(t, out, "revoked")

	_, _, err = run(t, "keys", "create", "--tenant", "nobody", "--data-dir", dir)
	require.Error(t, err)

	out, _, err = run(t, "usage", "--data-dir", dir)
	require.NoError(t, err)
	require.Contains(t, out, "TOTAL")
}

// `strata serve` starts, prints the dev key once with a curl line and logs one line per
// listener; a second start on the same data directory prints no key.
func TestServePrintsDevKeyOnce(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("STRATA_DEV_API_KEY", "sk-strata-cli-test")
	serve := func() (string, string) {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb syncBuffer
		done := make(chan error, 1)
		go func() { done <- Run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir}, &out, &errb) }()
		var base string
		require.Eventually(t, func() bool {
			m := regexp.MustCompile(`serves="OpenAI API[^"]*" url=(http://\S+)`).FindStringSubmatch(errb.String())
			if m == nil {
				return false
			}
			base = m[1]
			return true
		}, 20*time.Second, 20*time.Millisecond)
		require.Eventually(t, func() bool {
			resp, err := http.Get(base + "/health")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}, 10*time.Second, 20*time.Millisecond)
		cancel()
		require.NoError(t, <-done)
		return out.String(), errb.String()
	}
	out, logs := serve()
	require.Contains(t, out, "sk-strata-cli-test")
	require.Contains(t, out, "curl -N http://127.0.0.1:")
	require.Equal(t, 4, strings.Count(logs, "msg=listening"), "one line per listener: 3 replicas and the front door")
	require.NotContains(t, logs, "sk-strata-cli-test", "keys never go to the log")

	out, _ = serve()
	require.NotContains(t, out, "sk-strata-cli-test", "the key is printed only on first start")
}
