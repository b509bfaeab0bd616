package vllm_test

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/engine/vllm"
)

// Issue 3's reference block hashes (sha256_cbor, PYTHONHASHSEED=0) as published: the last 8
// bytes of the digest, big-endian; the first is above 2^63.
const (
	h0 = vllm.BlockHash(12687895063098490012)
	h1 = vllm.BlockHash(1814341696565857452)
)

func seq(lo, hi int) []int {
	out := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}

// Golden payloads written by msgpack-python in vLLM's shapes (testdata/gen_kv_frames.py).
func TestDecodeGoldenPayloads(t *testing.T) {
	const ts = 1789095808.8378847
	stored := vllm.Event{Type: vllm.BlockStored, BlockHashes: []vllm.BlockHash{h0, h1}, TokenIDs: seq(0, 32), BlockSize: 16, Medium: "GPU"}
	removed := vllm.Event{Type: vllm.BlockRemoved, BlockHashes: []vllm.BlockHash{h1}, Medium: "GPU"}
	cleared := vllm.Event{Type: vllm.AllBlocksCleared}
	for _, tc := range []struct {
		file string
		want vllm.Batch
	}{
		{"kv_array.msgpack", vllm.Batch{TS: ts, DataParallelRank: 0, Events: []vllm.Event{stored, removed, cleared}}},
		{"kv_map.msgpack", vllm.Batch{TS: ts, DataParallelRank: 0, Events: []vllm.Event{stored, removed, cleared}}},
		{"kv_bytes_lora.msgpack", vllm.Batch{TS: ts, DataParallelRank: 3, Skipped: 2, Events: []vllm.Event{
			{Type: vllm.BlockStored, BlockHashes: []vllm.BlockHash{h1}, ParentBlockHash: h0, HasParent: true,
				TokenIDs: seq(16, 32), BlockSize: 16, LoRAID: 7, LoRAName: "my-lora", Medium: "GPU"},
			{Type: vllm.BlockRemoved, BlockHashes: []vllm.BlockHash{h0}, Medium: "CPU"},
		}}},
		{"kv_legacy.msgpack", vllm.Batch{TS: ts, DataParallelRank: -1, Events: []vllm.Event{
			{Type: vllm.BlockStored, BlockHashes: []vllm.BlockHash{5, 6}, ParentBlockHash: 4, HasParent: true, TokenIDs: seq(0, 8), BlockSize: 4},
		}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			payload, err := os.ReadFile("testdata/" + tc.file)
			require.NoError(t, err)
			var sq [8]byte
			binary.BigEndian.PutUint64(sq[:], 41)
			got, err := vllm.DecodeMessage([][]byte{[]byte("kv@a"), sq[:], payload})
			require.NoError(t, err)
			tc.want.Topic, tc.want.Seq = "kv@a", 41
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	good, err := os.ReadFile("testdata/kv_array.msgpack")
	require.NoError(t, err)
	sq := make([]byte, 8)
	for name, frames := range map[string][][]byte{
		"two frames":        {nil, sq},
		"short sequence":    {nil, sq[:4], good},
		"empty payload":     {nil, sq, nil},
		"truncated":         {nil, sq, good[:len(good)/2]},
		"not an array":      {nil, sq, {0xa3, 'a', 'b', 'c'}},
		"one-element batch": {nil, sq, {0x91, 0x01}},
		"ts not a number":   {nil, sq, {0x92, 0xa1, 'x', 0x90}},
		"events not array":  {nil, sq, {0x92, 0x01, 0x01}},
		"negative dp rank":  {nil, sq, {0x93, 0x01, 0x90, 0xff}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := vllm.DecodeMessage(frames)
			require.ErrorIs(t, err, vllm.ErrMalformed)
		})
	}
}

func TestBlockSetCountsDuplicatesAndIgnoresOtherMedia(t *testing.T) {
	s := vllm.NewBlockSet()
	stored := vllm.Event{Type: vllm.BlockStored, BlockHashes: []vllm.BlockHash{h0}, Medium: "GPU"}
	s.Apply(stored)
	s.Apply(stored) // the same block computed twice
	s.Apply(vllm.Event{Type: vllm.BlockStored, BlockHashes: []vllm.BlockHash{h1}, Medium: "CPU"})
	require.Equal(t, map[vllm.BlockHash]int{h0: 2}, s.Counts())
	s.Apply(vllm.Event{Type: vllm.BlockRemoved, BlockHashes: []vllm.BlockHash{h0}})
	require.True(t, s.Contains(h0))
	s.Apply(vllm.Event{Type: vllm.BlockRemoved, BlockHashes: []vllm.BlockHash{h0, h1}})
	require.False(t, s.Contains(h0))
	require.Zero(t, s.Len())
	s.Apply(stored)
	s.Apply(vllm.Event{Type: vllm.AllBlocksCleared})
	require.Zero(t, s.Len())
}

func FuzzDecodeMessage(f *testing.F) {
	for _, name := range []string{"kv_array", "kv_map", "kv_bytes_lora", "kv_legacy"} {
		b, err := os.ReadFile("testdata/" + name + ".msgpack")
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		b, err := vllm.DecodeMessage([][]byte{nil, make([]byte, 8), payload})
		if err != nil {
			require.ErrorIs(t, err, vllm.ErrMalformed)
			return
		}
		for _, e := range b.Events {
			require.NotZero(t, e.Type)
			if e.Type != vllm.AllBlocksCleared {
				require.NotEmpty(t, e.BlockHashes)
			}
		}
		vllm.NewBlockSet().Apply(vllm.Event{}) // applying anything decoded never panics
	})
}

func BenchmarkDecodeMessage(b *testing.B) {
	payload, err := os.ReadFile("testdata/kv_map.msgpack")
	require.NoError(b, err)
	frames := [][]byte{nil, make([]byte, 8), payload}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := vllm.DecodeMessage(frames); err != nil {
			b.Fatal(err)
		}
	}
}
