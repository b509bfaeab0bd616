package gateway

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SecretBytes is the size of a generated server secret.
const SecretBytes = 32

// LoadOrCreateSecret returns the server secret that API keys are hashed with (HMAC-SHA-256): the
// contents of the file at path, or, when it does not exist, 32 new random bytes written there
// with mode 0600 (its directory created with mode 0700). Creation is atomic (a temporary file
// hard-linked into place), so concurrent first starts agree on one secret. A file shorter than
// 32 bytes is an error: a short HMAC key would weaken every stored key hash. Losing the file
// invalidates every API key.
func LoadOrCreateSecret(path string) ([]byte, error) {
	b, err := readSecret(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: key secret: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".key-secret-*") // CreateTemp uses mode 0600
	if err != nil {
		return nil, fmt.Errorf("gateway: key secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	secret := make([]byte, SecretBytes)
	_, _ = rand.Read(secret)
	if _, err := tmp.Write(secret); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("gateway: key secret: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("gateway: key secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("gateway: key secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("gateway: key secret: %w", err)
	}
	// Whether our link won or another process's did, the file at path is now the secret.
	return readSecret(path)
}

func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("gateway: key secret: %w", err)
	}
	if len(b) < SecretBytes {
		return nil, fmt.Errorf("gateway: key secret %s: %d bytes, want at least %d", path, len(b), SecretBytes)
	}
	return b, nil
}
