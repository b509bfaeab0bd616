package gateway

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadOrCreateSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "strata")
	path := filepath.Join(dir, "key-secret")
	s1, err := LoadOrCreateSecret(path)
	require.NoError(t, err)
	require.Len(t, s1, SecretBytes)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())

	s2, err := LoadOrCreateSecret(path)
	require.NoError(t, err)
	require.Equal(t, s1, s2, "the secret survives restarts")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")

	short := filepath.Join(t.TempDir(), "short")
	require.NoError(t, os.WriteFile(short, []byte("too short"), 0o600))
	_, err = LoadOrCreateSecret(short)
	require.ErrorContains(t, err, "want at least 32")
}

func TestLoadOrCreateSecretConcurrentFirstStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key-secret")
	var wg sync.WaitGroup
	got := make([][]byte, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := LoadOrCreateSecret(path)
			if err != nil {
				t.Error(err)
			}
			got[i] = s
		}()
	}
	wg.Wait()
	for _, s := range got {
		require.Equal(t, got[0], s)
	}
}
