package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/store"
)

func TestVectorStores(t *testing.T) {
	for name, st := range responsesTestStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			vs := &store.VectorStore{ID: "vs_1", Owner: "alice", Name: "docs", CreatedAt: now, Metadata: json.RawMessage(`{}`)}
			require.NoError(t, st.CreateVectorStore(ctx, vs))
			require.ErrorIs(t, st.CreateVectorStore(ctx, vs), store.ErrExists)
			require.NoError(t, st.CreateVectorStore(ctx, &store.VectorStore{ID: "vs_bob", Owner: "bob", CreatedAt: now, Metadata: json.RawMessage(`{}`)}))
			got, err := st.GetVectorStore(ctx, "alice", "vs_1")
			require.NoError(t, err)
			require.Equal(t, vs, got)
			_, err = st.GetVectorStore(ctx, "bob", "vs_1")
			require.ErrorIs(t, err, store.ErrNotFound)
			list, err := st.ListVectorStores(ctx, "alice", 10)
			require.NoError(t, err)
			require.Len(t, list, 1)

			f := &store.VectorStoreFile{VectorStoreID: "vs_1", FileID: "file-1", Filename: "kv.md", CreatedAt: now, Status: "completed",
				Attributes: json.RawMessage(`{"topic":"cache"}`)}
			require.NoError(t, st.PutVectorStoreFile(ctx, "alice", f, []string{
				"The KV cache holds attention keys and values.", "Prefix caching reuses KV blocks across requests.", "Nothing relevant here."}))
			require.Equal(t, int64(len("The KV cache holds attention keys and values.")+len("Prefix caching reuses KV blocks across requests.")+len("Nothing relevant here.")), f.UsageBytes)
			require.ErrorIs(t, st.PutVectorStoreFile(ctx, "bob", &store.VectorStoreFile{VectorStoreID: "vs_1", FileID: "x", CreatedAt: now, Status: "completed"}, nil), store.ErrNotFound)
			failed := &store.VectorStoreFile{VectorStoreID: "vs_1", FileID: "file-2", Filename: "bad.pdf", CreatedAt: now.Add(time.Second), Status: "failed",
				ErrorCode: "invalid_file", ErrorMessage: "corrupt"}
			require.NoError(t, st.PutVectorStoreFile(ctx, "alice", failed, nil))
			// Bob's store holds a matching chunk that Alice must never see.
			require.NoError(t, st.PutVectorStoreFile(ctx, "bob", &store.VectorStoreFile{VectorStoreID: "vs_bob", FileID: "file-b", Filename: "b", CreatedAt: now, Status: "completed"},
				[]string{"KV cache secrets of bob"}))

			counts, err := st.VectorStoreFileCounts(ctx, "vs_1")
			require.NoError(t, err)
			require.Equal(t, store.FileCounts{Completed: 1, Failed: 1, Total: 2, UsageBytes: f.UsageBytes}, counts)
			files, err := st.ListVectorStoreFiles(ctx, "alice", "vs_1")
			require.NoError(t, err)
			require.Len(t, files, 2)
			require.Equal(t, "invalid_file", files[1].ErrorCode)
			gotF, err := st.GetVectorStoreFile(ctx, "alice", "vs_1", "file-1")
			require.NoError(t, err)
			require.JSONEq(t, `{"topic":"cache"}`, string(gotF.Attributes))
			_, err = st.GetVectorStoreFile(ctx, "bob", "vs_1", "file-1")
			require.ErrorIs(t, err, store.ErrNotFound)

			hits, err := st.SearchChunks(ctx, "alice", []string{"vs_1", "vs_bob"}, "How does the KV cache work?", 10)
			require.NoError(t, err)
			require.Len(t, hits, 2, "chunks with any term; bob's store is ignored")
			require.Equal(t, int64(0), hits[0].Seq, "the chunk with more matching terms ranks first")
			require.Equal(t, "kv.md", hits[0].Filename)
			require.JSONEq(t, `{"topic":"cache"}`, string(hits[0].Attributes))
			require.Greater(t, hits[0].Score, hits[1].Score)
			require.Greater(t, hits[1].Score, 0.0)
			require.Less(t, hits[0].Score, 1.0)
			hits, err = st.SearchChunks(ctx, "alice", []string{"vs_1"}, `"); DROP TABLE files; --`, 10)
			require.NoError(t, err, "any query is safe")
			require.Empty(t, hits)
			hits, err = st.SearchChunks(ctx, "alice", []string{"vs_1"}, "?!", 10)
			require.NoError(t, err)
			require.Empty(t, hits)

			// Re-attaching replaces the chunks.
			require.NoError(t, st.PutVectorStoreFile(ctx, "alice", f, []string{"Only speculative decoding now."}))
			hits, err = st.SearchChunks(ctx, "alice", []string{"vs_1"}, "KV cache", 10)
			require.NoError(t, err)
			require.Empty(t, hits)
			hits, err = st.SearchChunks(ctx, "alice", []string{"vs_1"}, "speculative", 1)
			require.NoError(t, err)
			require.Len(t, hits, 1)

			require.ErrorIs(t, st.DeleteVectorStoreFile(ctx, "bob", "vs_1", "file-1"), store.ErrNotFound)
			require.NoError(t, st.DeleteVectorStoreFile(ctx, "alice", "vs_1", "file-1"))
			hits, err = st.SearchChunks(ctx, "alice", []string{"vs_1"}, "speculative", 1)
			require.NoError(t, err)
			require.Empty(t, hits)

			require.ErrorIs(t, st.DeleteVectorStore(ctx, "bob", "vs_1"), store.ErrNotFound)
			require.NoError(t, st.DeleteVectorStore(ctx, "alice", "vs_1"))
			_, err = st.ListVectorStoreFiles(ctx, "alice", "vs_1")
			require.ErrorIs(t, err, store.ErrNotFound)
			counts, err = st.VectorStoreFileCounts(ctx, "vs_1")
			require.NoError(t, err)
			require.Zero(t, counts.Total)
		})
	}
}

// BenchmarkSearchChunks measures keyword search over 10k chunks of one vector store (SQLite
// FTS5, or PostgreSQL when reachable): go test -run XXX -bench SearchChunks ./internal/store/
func BenchmarkSearchChunks(b *testing.B) {
	words := strings.Fields("kv cache prefix router replica token batch decode prefill lora adapter tenant quota gateway platform engine scheduler queue latency throughput")
	for name, st := range responsesTestStores(b) {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			id := fmt.Sprintf("vs_bench_%d", time.Now().UnixNano())
			require.NoError(b, st.CreateVectorStore(ctx, &store.VectorStore{ID: id, Owner: "o", CreatedAt: time.Now(), Metadata: json.RawMessage(`{}`)}))
			for f := range 10 {
				chunks := make([]string, 1000)
				for i := range chunks {
					var sb strings.Builder
					for j := range 60 {
						sb.WriteString(words[(i*7+j*13+f)%len(words)])
						sb.WriteByte(' ')
					}
					chunks[i] = sb.String()
				}
				require.NoError(b, st.PutVectorStoreFile(ctx, "o", &store.VectorStoreFile{VectorStoreID: id, FileID: fmt.Sprintf("f%d", f),
					CreatedAt: time.Now(), Status: "completed"}, chunks))
			}
			b.ResetTimer()
			for b.Loop() {
				hits, err := st.SearchChunks(ctx, "o", []string{id}, "prefix cache replica", 10)
				if err != nil || len(hits) != 10 {
					b.Fatal(err, len(hits))
				}
			}
		})
	}
}
