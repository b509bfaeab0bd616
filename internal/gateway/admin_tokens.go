package gateway

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/strata-inference/strata/internal/store"
)

// AdminTokenPrefix starts every admin token. Admin tokens are a separate credential from tenant
// keys (their own table, store.AdminToken): the prefix only helps a person and a secret scanner
// tell them apart, authentication never relies on it.
const AdminTokenPrefix = "sk-strata-admin-"

// Admin token scopes. A route of the admin API needs exactly one of them (AdminHandler).
const (
	// ScopeRead lists tenants and keys.
	ScopeRead = "read"
	// ScopeKeys creates and revokes tenant API keys.
	ScopeKeys = "keys"
	// ScopePolicy creates tenants (with their limits and model allowlist).
	ScopePolicy = "policy"
	// ScopeBilling reads the usage ledger.
	ScopeBilling = "billing"
)

// AdminScopes are every scope an admin token may hold, in canonical order.
var AdminScopes = []string{ScopeRead, ScopeKeys, ScopePolicy, ScopeBilling}

// ErrAdminUnauthorized is returned by AuthenticateAdminToken for a token that is missing,
// malformed, unknown or revoked; the cases are not told apart.
var ErrAdminUnauthorized = errors.New("gateway: invalid admin token")

// ParseScopes parses a comma-separated scope list ("read,keys"): names are trimmed, duplicates
// dropped, and the result is in AdminScopes order. An empty list or an unknown name is an error
// naming it.
func ParseScopes(list string) ([]string, error) {
	var got []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(AdminScopes, s) {
			return nil, fmt.Errorf("gateway: unknown admin scope %q: want one of %s", s, strings.Join(AdminScopes, ", "))
		}
		got = append(got, s)
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("gateway: an admin token needs at least one scope of %s", strings.Join(AdminScopes, ", "))
	}
	var out []string
	for _, s := range AdminScopes {
		if slices.Contains(got, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// CreateAdminToken creates an admin token named name (0 to 64 printable characters, a label for
// people) with the given scopes (see ParseScopes) and returns the token itself: the only time it
// exists outside the caller, since only HMAC-SHA-256(secret, token) is stored. The token is
// AdminTokenPrefix followed by 43 random base62 characters (256 bits). The creation is audited
// ("admin_token.create").
func (a *Admin) CreateAdminToken(ctx context.Context, name string, scopes []string) (string, *store.AdminToken, error) {
	if len(name) > 64 || strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return "", nil, fmt.Errorf("gateway: admin token name: want at most 64 printable characters")
	}
	if len(scopes) == 0 {
		return "", nil, fmt.Errorf("gateway: an admin token needs at least one scope of %s", strings.Join(AdminScopes, ", "))
	}
	for _, s := range scopes {
		if !slices.Contains(AdminScopes, s) {
			return "", nil, fmt.Errorf("gateway: unknown admin scope %q: want one of %s", s, strings.Join(AdminScopes, ", "))
		}
	}
	token := AdminTokenPrefix + randomBase62(keyRandomChars)
	t := &store.AdminToken{ID: newID("adm"), Name: name, Prefix: token[:len(AdminTokenPrefix)+visiblePrefixChars],
		Hash: hashKey(a.secret, token), Scopes: slices.Clone(scopes), CreatedAt: a.now().UTC().Truncate(time.Millisecond)}
	if err := a.st.CreateAdminToken(ctx, t); err != nil {
		return "", nil, err
	}
	if err := a.audit(ctx, "admin_token.create", t.ID, map[string]any{"name": name, "prefix": t.Prefix, "scopes": t.Scopes}); err != nil {
		return token, t, err
	}
	return token, t, nil
}

// ListAdminTokens returns every admin token, revoked ones included, oldest first; never a token.
func (a *Admin) ListAdminTokens(ctx context.Context) ([]store.AdminToken, error) {
	return a.st.ListAdminTokens(ctx)
}

// RevokeAdminToken revokes the admin token with the given ID ("adm_..."), at once for every
// gateway (admin tokens are not cached). Revoking twice is not an error; an unknown ID wraps
// store.ErrNotFound. Audited ("admin_token.revoke").
func (a *Admin) RevokeAdminToken(ctx context.Context, id string) error {
	if err := a.st.RevokeAdminToken(ctx, id, a.now()); err != nil {
		return err
	}
	return a.audit(ctx, "admin_token.revoke", id, map[string]any{})
}

// AuthenticateAdminToken returns the stored admin token for token, looked up by its HMAC and
// compared in constant time. A token that does not start with AdminTokenPrefix (a tenant key
// included), is unknown or is revoked gives ErrAdminUnauthorized; a storage failure is returned
// wrapped as is (the caller answers 503/500, not 401).
func (a *Admin) AuthenticateAdminToken(ctx context.Context, token string) (*store.AdminToken, error) {
	if !strings.HasPrefix(token, AdminTokenPrefix) || plausibleKey(token) == "" {
		return nil, ErrAdminUnauthorized
	}
	h := hashKey(a.secret, token)
	t, err := a.st.AdminTokenByHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrAdminUnauthorized
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(t.Hash, h) != 1 || t.Revoked(a.now()) {
		return nil, ErrAdminUnauthorized
	}
	return t, nil
}
