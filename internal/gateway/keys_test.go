package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/openai"
)

func TestGenerateKey(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k := GenerateKey()
		require.Regexp(t, `^sk-strata-[0-9A-Za-z]{43}$`, k)
		require.False(t, seen[k])
		seen[k] = true
		require.Equal(t, k[:14], visiblePrefix(k))
	}
	require.Equal(t, "sk-t", visiblePrefix("sk-test-abcdefgh"))
	require.Equal(t, "sk-dev-a", visiblePrefix("sk-dev-"+strings.Repeat("a", 40)))
}

func TestKeyFromHeaders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hdr     map[string]string
		key     string
		present bool
	}{
		{"bearer", map[string]string{"Authorization": "Bearer sk-1"}, "sk-1", true},
		{"bearer any case, extra spaces", map[string]string{"Authorization": "  BEARER   sk-1  "}, "sk-1", true},
		{"x-api-key", map[string]string{HeaderAPIKey: "sk-2"}, "sk-2", true},
		{"authorization wins", map[string]string{"Authorization": "Bearer sk-1", HeaderAPIKey: "sk-2"}, "sk-1", true},
		{"none", map[string]string{}, "", false},
		{"empty bearer", map[string]string{"Authorization": "Bearer"}, "", false},
		{"blank x-api-key", map[string]string{HeaderAPIKey: "  "}, "", false},
		{"basic", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, "", true},
		{"inner space", map[string]string{"Authorization": "Bearer sk 1"}, "", true},
		{"control character", map[string]string{HeaderAPIKey: "sk-\x01"}, "", true},
		{"too long", map[string]string{HeaderAPIKey: strings.Repeat("k", 257)}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.hdr {
				h.Set(k, v)
			}
			key, present := keyFromHeaders(h)
			require.Equal(t, tc.key, key)
			require.Equal(t, tc.present, present)
		})
	}
}

func TestCheckKey(t *testing.T) {
	require.NoError(t, checkKey("sk-dev-12345"))
	require.NoError(t, checkKey(GenerateKey()))
	for _, bad := range []string{"", "short", "has space in it", strings.Repeat("k", 257), "sk-dev-\u00e9\u00e9\u00e9"} {
		require.Error(t, checkKey(bad), bad)
	}
}

// FuzzKeyFromHeaders: whatever the headers, the key found is a bounded, printable substring of
// one of them, and no credential means no key.
func FuzzKeyFromHeaders(f *testing.F) {
	f.Add("Bearer sk-strata-abc", "")
	f.Add("", "sk-1")
	f.Add("bearer\tsk", "x")
	f.Add("Bearer  ", "\x00")
	f.Fuzz(func(t *testing.T, auth, apiKey string) {
		h := http.Header{}
		if auth != "" {
			h["Authorization"] = []string{auth}
		}
		if apiKey != "" {
			h[http.CanonicalHeaderKey(HeaderAPIKey)] = []string{apiKey}
		}
		key, present := keyFromHeaders(h)
		if key == "" {
			return
		}
		require.True(t, present)
		require.LessOrEqual(t, len(key), maxKeyLen)
		require.True(t, strings.Contains(auth, key) || strings.Contains(apiKey, key))
		for i := 0; i < len(key); i++ {
			require.True(t, key[i] > ' ' && key[i] <= '~')
		}
	})
}

// FuzzRequestID: the request id kept or generated is always bounded and printable.
func FuzzRequestID(f *testing.F) {
	f.Add("req-1")
	f.Add("")
	f.Add("a b")
	f.Fuzz(func(t *testing.T, id string) {
		h := http.Header{}
		h[openai.HeaderRequestID] = []string{id}
		got := requestIDOf(h)
		require.NotEmpty(t, got)
		require.LessOrEqual(t, len(got), maxRequestIDLen)
		for i := 0; i < len(got); i++ {
			require.True(t, got[i] > ' ' && got[i] <= '~')
		}
	})
}
