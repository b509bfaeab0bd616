package sim

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBlockHashVectors checks sha256_cbor block hashing against the reference vectors of issue 3,
// computed with Python's cbor2 for PYTHONHASHSEED "0".
func TestBlockHashVectors(t *testing.T) {
	seq := func(from int) []int {
		out := make([]int, 16)
		for i := range out {
			out[i] = from + i
		}
		return out
	}
	none := NoneHash("0")
	require.Equal(t, "4e1195df020de59e0d65a33a4279f1183e7ae4e5d980e309f8b55adff2e61c3e", none.String())

	first := HashBlockTokens(none, seq(0), nil)
	second := HashBlockTokens(first, seq(16), nil)
	lora := HashBlockTokens(second, []int{128000, 9906, 1917, 70000, 100000, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, []any{"my-lora"})
	for _, tc := range []struct {
		name string
		got  BlockHash
		want string
	}{
		{"tokens 0..15", first, "d830de3d42c00f25a2949b5d12d98642664a44872c1614c5b0147556276afc9c"},
		{"tokens 16..31 chained", second, "fedd9e4abebebbe6f6cf96b682f08d316063fe2f22a5c552192dd62904fcccac"},
		{"lora extra key", lora, "1dc18830bc6895ba3f5062de92a89eb3c2cf3ad1aee0b7ff4bde633a455e1b30"},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, tc.got.String()) })
	}
	require.Equal(t, uint64(12687895063098490012), first.Uint64(), "wire form: last 8 bytes big-endian")
	require.Equal(t, first, HashBlockTokens(none, seq(0), []any{}), "empty extra keys hash as None")
	require.NotEqual(t, first, HashBlockTokens(NoneHash("1"), seq(0), nil), "the seed changes every hash")
}
