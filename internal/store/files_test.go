package store_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/store"
)

func TestFiles(t *testing.T) {
	for name, st := range responsesTestStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			binary := []byte{0, 1, 2, 0xff, 0xfe, 0, 'x'} // bytes, not text: NUL and invalid UTF-8 survive
			files := []*store.File{
				{ID: "file-a", Owner: "alice", Filename: "a.txt", Purpose: "assistants", CreatedAt: base},
				{ID: "file-b", Owner: "alice", Filename: "b.bin", Purpose: "user_data", CreatedAt: base.Add(time.Second),
					ExpiresAt: base.Add(time.Hour)},
				{ID: "file-c", Owner: "alice", Filename: "c.txt", Purpose: "assistants", CreatedAt: base.Add(time.Second)},
				{ID: "file-d", Owner: "bob", Filename: "d.txt", Purpose: "assistants", CreatedAt: base},
			}
			for i, f := range files {
				content := []byte(fmt.Sprintf("content %d", i))
				if f.ID == "file-b" {
					content = binary
				}
				require.NoError(t, st.PutFile(ctx, f, content))
			}
			require.ErrorIs(t, st.PutFile(ctx, files[0], nil), store.ErrExists)
			require.NoError(t, st.PutFile(ctx, &store.File{ID: "file-empty", Owner: "carol", Filename: "e", Purpose: "user_data", CreatedAt: base}, nil))

			got, err := st.GetFile(ctx, "alice", "file-b")
			require.NoError(t, err)
			require.Equal(t, files[1], got)
			require.Equal(t, int64(len(binary)), got.Bytes)
			_, err = st.GetFile(ctx, "bob", "file-b")
			require.ErrorIs(t, err, store.ErrNotFound)

			content, err := st.FileContent(ctx, "alice", "file-b")
			require.NoError(t, err)
			require.True(t, bytes.Equal(binary, content))
			_, err = st.FileContent(ctx, "bob", "file-b")
			require.ErrorIs(t, err, store.ErrNotFound)
			content, err = st.FileContent(ctx, "carol", "file-empty")
			require.NoError(t, err)
			require.Empty(t, content)

			for _, tc := range []struct {
				name     string
				page     store.FilePage
				want     []string
				wantMore bool
			}{
				{"desc", store.FilePage{Desc: true, Limit: 10}, []string{"file-c", "file-b", "file-a"}, false},
				{"desc paged", store.FilePage{Desc: true, Limit: 1, After: "file-c"}, []string{"file-b"}, true},
				{"asc", store.FilePage{Limit: 2}, []string{"file-a", "file-b"}, true},
				{"asc after", store.FilePage{Limit: 2, After: "file-b"}, []string{"file-c"}, false},
				{"purpose", store.FilePage{Purpose: "assistants", Limit: 10}, []string{"file-a", "file-c"}, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					page, more, err := st.ListFiles(ctx, "alice", tc.page)
					require.NoError(t, err)
					var ids []string
					for _, f := range page {
						ids = append(ids, f.ID)
					}
					require.Equal(t, tc.want, ids)
					require.Equal(t, tc.wantMore, more)
				})
			}
			_, _, err = st.ListFiles(ctx, "alice", store.FilePage{After: "file-d", Limit: 1})
			require.ErrorIs(t, err, store.ErrNotFound, "another owner's file is no cursor")

			require.ErrorIs(t, st.DeleteFile(ctx, "bob", "file-a"), store.ErrNotFound)
			require.NoError(t, st.DeleteFile(ctx, "alice", "file-a"))
			require.ErrorIs(t, st.DeleteFile(ctx, "alice", "file-a"), store.ErrNotFound)
		})
	}
}
