package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// KeyPrefix starts every generated API key.
const KeyPrefix = "sk-strata-"

// keyRandomChars is the length of a generated key's random part: 43 base62 characters carry
// 43*log2(62) = 256.03 bits, the entropy of 32 random bytes.
const keyRandomChars = 43

// visiblePrefixChars is how many random characters of a generated key are stored in clear as its
// visible prefix ("sk-strata-AbCd"): enough to tell keys apart, far too few to guess the rest.
const visiblePrefixChars = 4

// Bounds of a key supplied by an operator (CreateKey with a plaintext, STRATA_DEV_API_KEY).
const (
	minKeyLen = 8
	maxKeyLen = 256
)

// HeaderAPIKey is the Anthropic-style header that may carry the key instead of Authorization.
const HeaderAPIKey = "x-api-key"

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomBase62 returns n characters drawn uniformly from base62 with crypto/rand (rejection
// sampling, so no character is more likely than another).
func randomBase62(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/2)
	for len(out) < n {
		_, _ = rand.Read(buf) // crypto/rand.Read never fails (Go 1.24+)
		for _, b := range buf {
			if b < 248 { // 248 = 4*62: the largest multiple of 62 that fits a byte
				out = append(out, base62[b%62])
				if len(out) == n {
					break
				}
			}
		}
	}
	return string(out)
}

// GenerateKey returns a new API key: KeyPrefix followed by 43 random base62 characters (256 bits).
func GenerateKey() string { return KeyPrefix + randomBase62(keyRandomChars) }

// newID returns an identifier "<kind>_<16 base62>" (95 bits), such as "key_..." or "ten_...".
func newID(kind string) string { return kind + "_" + randomBase62(16) }

// checkKey validates a key chosen by an operator rather than generated: 8 to 256 visible ASCII
// characters, no spaces, so it can travel in a header unchanged, and not AdminTokenPrefix.
func checkKey(key string) error {
	if len(key) < minKeyLen || len(key) > maxKeyLen {
		return fmt.Errorf("gateway: an API key must be %d to %d characters long", minKeyLen, maxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return fmt.Errorf("gateway: an API key may only hold visible ASCII characters")
		}
	}
	if strings.HasPrefix(key, AdminTokenPrefix) {
		// It would still never authenticate as an admin (separate table), but it would look like one.
		return fmt.Errorf("gateway: a tenant API key must not start with %q, the admin token prefix", AdminTokenPrefix)
	}
	return nil
}

// visiblePrefix is the part of key stored in clear: KeyPrefix plus 4 characters for a generated
// key; for an operator-chosen key, at most a quarter of it (never more than 8 characters).
func visiblePrefix(key string) string {
	if strings.HasPrefix(key, KeyPrefix) && len(key) >= len(KeyPrefix)+2*visiblePrefixChars {
		return key[:len(KeyPrefix)+visiblePrefixChars]
	}
	return key[:min(len(key)/4, 8)]
}

// hashKey is HMAC-SHA-256(secret, key): the only form in which a key is stored or cached.
func hashKey(secret []byte, key string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(key))
	return m.Sum(nil)
}

// fairnessID is the opaque tenant token sent down as x-gateway-inference-fairness-id: the first
// 16 hex digits (64 bits) of HMAC-SHA-256(secret, "fairness\x00" + tenant id). The label keeps it
// apart from key hashes; without the secret it cannot be traced back to a tenant.
func fairnessID(secret []byte, tenantID string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("fairness\x00"))
	m.Write([]byte(tenantID))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// keyFromHeaders returns the API key of a request: "Authorization: Bearer <key>" (scheme case
// insensitive, RFC 9110 §11.1) or, when there is no Authorization header, "x-api-key: <key>".
// present reports whether the request carried a credential at all (an empty "Bearer " counts
// as none, as at OpenAI); key is "" when it did not, or when the credential cannot be a key (another scheme, empty, over 256 bytes, spaces or
// control characters), which callers answer as an incorrect key.
func keyFromHeaders(h http.Header) (key string, present bool) {
	if auth := h.Get("Authorization"); auth != "" {
		scheme, cred, _ := strings.Cut(strings.TrimSpace(auth), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", true
		}
		cred = strings.TrimSpace(cred)
		return plausibleKey(cred), cred != ""
	}
	if v := strings.TrimSpace(h.Get(HeaderAPIKey)); v != "" {
		return plausibleKey(v), true
	}
	return "", false
}

func plausibleKey(k string) string {
	if len(k) > maxKeyLen {
		return ""
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] > '~' {
			return ""
		}
	}
	return k
}
