package sim

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/go-zeromq/zmq4"
	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
)

func mustHash(t *testing.T, s string) BlockHash {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	var h BlockHash
	copy(h[:], b)
	return h
}

// The simulator's payloads equal, byte for byte, what msgpack-python writes for the same
// batch in vLLM's shapes (testdata/*.msgpack, from ../vllm/testdata/gen_kv_frames.py).
func TestKVBatchGolden(t *testing.T) {
	h0 := mustHash(t, "d830de3d42c00f25a2949b5d12d98642664a44872c1614c5b0147556276afc9c")
	h1 := mustHash(t, "fedd9e4abebebbe6f6cf96b682f08d316063fe2f22a5c552192dd62904fcccac")
	require.Equal(t, uint64(12687895063098490012), h0.Uint64())
	toks := make([]int, 16)
	for i := range toks {
		toks[i] = 16 + i
	}
	stored := KVEvent{Kind: KVBlockStored, BlockHashes: []uint64{h1.Uint64()}, ParentHash: h0.Uint64(), HasParent: true, TokenIDs: toks}
	removed := KVEvent{Kind: KVBlockRemoved, BlockHashes: []uint64{h0.Uint64()}}
	const ts = 1789095808.8378847
	for _, tc := range []struct {
		enc, file string
		events    []KVEvent
	}{
		{config.KVEventsEncodingArray, "testdata/sim_array.msgpack", []KVEvent{stored, removed}},
		{config.KVEventsEncodingMap, "testdata/sim_map.msgpack", []KVEvent{stored, removed, {Kind: KVAllBlocksCleared}}},
	} {
		t.Run(tc.enc, func(t *testing.T) {
			want, err := os.ReadFile(tc.file)
			require.NoError(t, err)
			got, err := encodeKVBatch(ts, tc.events, 16, tc.enc)
			require.NoError(t, err)
			require.Equal(t, hex.EncodeToString(want), hex.EncodeToString(got))
		})
	}
}

// Frames on the PUB socket are [topic, 8-byte big-endian sequence from 0, payload], one per
// step that changed the prefix cache.
func TestKVEventsOnTheWire(t *testing.T) {
	cfg := testConfig()
	cfg.KVEventsEndpoint = "tcp://127.0.0.1:0"
	cfg.KVEventsTopic = "kv"
	s, hs := startServer(t, cfg, clock.RealClock{}, nil)
	require.Contains(t, s.KVEventsEndpoint(), "tcp://127.0.0.1:")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := zmq4.NewSub(ctx)
	defer sub.Close()
	require.NoError(t, sub.Dial(s.KVEventsEndpoint()))
	require.NoError(t, sub.SetOption(zmq4.OptionSubscribe, "kv"))
	got := make(chan zmq4.Msg, 1)
	go func() {
		m, err := sub.Recv()
		if err == nil {
			got <- m
		}
		close(got)
	}()
	// PUB drops messages until the subscription arrives: send requests until one is received.
	var msg zmq4.Msg
	for i := 0; msg.Frames == nil; i++ {
		require.Less(t, i, 1000)
		code, body := postJSON(t, hs, "/v1/completions", fmt.Sprintf(`{"prompt":%q,"max_tokens":1}`, strings.Repeat(fmt.Sprintf("word%d ", i), 40)))
		require.Equal(t, 200, code, body)
		select {
		case m, ok := <-got:
			require.True(t, ok)
			msg = m
		default:
		}
	}
	require.Len(t, msg.Frames, 3)
	require.Equal(t, "kv", string(msg.Frames[0]))
	require.Len(t, msg.Frames[1], 8)
	require.Less(t, binary.BigEndian.Uint64(msg.Frames[1]), s.KVEventsPublished())
	require.Equal(t, byte(0x93), msg.Frames[2][0], "payload is the 3-array [ts, events, dp_rank]")
}

func TestOffsetEndpointPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		i    int
		want string
		err  bool
	}{
		{"tcp://*:5557", 0, "tcp://*:5557", false},
		{"tcp://*:5557", 2, "tcp://*:5559", false},
		{"tcp://127.0.0.1:0", 3, "tcp://127.0.0.1:0", false},
		{"inproc://cache", 1, "inproc://cache_dp1", false},
		{"ipc:///tmp/kv", 1, "", true},
		{"tcp://host", 1, "", true},
		{"", 4, "", false},
	} {
		got, err := OffsetEndpointPort(tc.in, tc.i)
		if tc.err {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
}

// BenchmarkKVBatchEncode is the step loop's cost of publishing a typical step: one request's
// 8 new blocks stored and 8 evictions.
func BenchmarkKVBatchEncode(b *testing.B) {
	stored := KVEvent{Kind: KVBlockStored, TokenIDs: make([]int, 128), HasParent: true}
	events := []KVEvent{stored}
	for i := range 8 {
		h := uint64(i)
		events[0].BlockHashes = append(events[0].BlockHashes, h)
		events = append(events, KVEvent{Kind: KVBlockRemoved, BlockHashes: []uint64{h}})
	}
	for _, enc := range []string{config.KVEventsEncodingMap, config.KVEventsEncodingArray} {
		b.Run(enc, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := encodeKVBatch(1.5, events, 16, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
