package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/store"
)

func itemsOf(ids ...string) []store.ConversationItem {
	out := make([]store.ConversationItem, len(ids))
	for i, id := range ids {
		out[i] = store.ConversationItem{ID: id, CreatedAt: time.UnixMilli(1_700_000_000_000).UTC(),
			Item: json.RawMessage(fmt.Sprintf(`{"id":%q,"type":"message"}`, id))}
	}
	return out
}

func ids(items []store.ConversationItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func TestConversations(t *testing.T) {
	for name, st := range responsesTestStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			created := time.Date(2026, 3, 1, 12, 0, 0, 5_000_000, time.UTC)
			conv := &store.Conversation{ID: "conv_1", Owner: "alice", CreatedAt: created, Metadata: json.RawMessage(`{"a":"b"}`)}
			require.NoError(t, st.CreateConversation(ctx, conv, itemsOf("i1", "i2")))
			require.ErrorIs(t, st.CreateConversation(ctx, conv, nil), store.ErrExists)

			got, err := st.GetConversation(ctx, "alice", "conv_1")
			require.NoError(t, err)
			require.Equal(t, conv, got)
			_, err = st.GetConversation(ctx, "bob", "conv_1")
			require.ErrorIs(t, err, store.ErrNotFound, "another owner's conversation does not exist for them")

			got, err = st.UpdateConversationMetadata(ctx, "alice", "conv_1", json.RawMessage(`{"x":"y"}`))
			require.NoError(t, err)
			require.JSONEq(t, `{"x":"y"}`, string(got.Metadata))
			_, err = st.UpdateConversationMetadata(ctx, "bob", "conv_1", json.RawMessage(`{}`))
			require.ErrorIs(t, err, store.ErrNotFound)

			more := itemsOf("i3", "i4", "i5")
			require.NoError(t, st.AppendConversationItems(ctx, "alice", "conv_1", more))
			require.Equal(t, []int64{3, 4, 5}, []int64{more[0].Seq, more[1].Seq, more[2].Seq})
			require.ErrorIs(t, st.AppendConversationItems(ctx, "bob", "conv_1", itemsOf("x")), store.ErrNotFound)
			require.ErrorIs(t, st.AppendConversationItems(ctx, "alice", "conv_1", itemsOf("i6", "i1")), store.ErrExists)

			all, err := st.ConversationItems(ctx, "alice", "conv_1")
			require.NoError(t, err)
			require.Equal(t, []string{"i1", "i2", "i3", "i4", "i5"}, ids(all), "a failed append adds nothing")
			require.JSONEq(t, `{"id":"i1","type":"message"}`, string(all[0].Item))

			for _, tc := range []struct {
				name     string
				page     store.ItemPage
				want     []string
				wantMore bool
			}{
				{"asc", store.ItemPage{Limit: 2}, []string{"i1", "i2"}, true},
				{"asc after", store.ItemPage{After: "i2", Limit: 2}, []string{"i3", "i4"}, true},
				{"asc last page", store.ItemPage{After: "i3", Limit: 2}, []string{"i4", "i5"}, false},
				{"desc", store.ItemPage{Desc: true, Limit: 3}, []string{"i5", "i4", "i3"}, true},
				{"desc after", store.ItemPage{Desc: true, After: "i3", Limit: 3}, []string{"i2", "i1"}, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					page, hasMore, err := st.ListConversationItems(ctx, "alice", "conv_1", tc.page)
					require.NoError(t, err)
					require.Equal(t, tc.want, ids(page))
					require.Equal(t, tc.wantMore, hasMore)
				})
			}
			_, _, err = st.ListConversationItems(ctx, "alice", "conv_1", store.ItemPage{After: "nope", Limit: 1})
			require.ErrorIs(t, err, store.ErrNotFound)
			_, _, err = st.ListConversationItems(ctx, "bob", "conv_1", store.ItemPage{Limit: 1})
			require.ErrorIs(t, err, store.ErrNotFound)

			it, err := st.GetConversationItem(ctx, "alice", "conv_1", "i4")
			require.NoError(t, err)
			require.Equal(t, int64(4), it.Seq)
			_, err = st.GetConversationItem(ctx, "bob", "conv_1", "i4")
			require.ErrorIs(t, err, store.ErrNotFound)
			require.ErrorIs(t, st.DeleteConversationItem(ctx, "bob", "conv_1", "i4"), store.ErrNotFound)
			require.NoError(t, st.DeleteConversationItem(ctx, "alice", "conv_1", "i4"))
			require.ErrorIs(t, st.DeleteConversationItem(ctx, "alice", "conv_1", "i4"), store.ErrNotFound)

			require.ErrorIs(t, st.DeleteConversation(ctx, "bob", "conv_1"), store.ErrNotFound)
			require.NoError(t, st.DeleteConversation(ctx, "alice", "conv_1"))
			_, err = st.ConversationItems(ctx, "alice", "conv_1")
			require.ErrorIs(t, err, store.ErrNotFound)
			// The id is free again, with no items left behind.
			require.NoError(t, st.CreateConversation(ctx, conv, nil))
			all, err = st.ConversationItems(ctx, "alice", "conv_1")
			require.NoError(t, err)
			require.Empty(t, all)
		})
	}
}

// Concurrent appends to one conversation get distinct, gapless sequence numbers, each batch
// contiguous.
func TestConversationConcurrentAppends(t *testing.T) {
	for name, st := range responsesTestStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			require.NoError(t, st.CreateConversation(ctx, &store.Conversation{ID: "conv_c", Owner: "o",
				CreatedAt: time.Now(), Metadata: json.RawMessage(`{}`)}, nil))
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for w := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[w] = st.AppendConversationItems(ctx, "o", "conv_c", itemsOf(fmt.Sprintf("w%d-a", w), fmt.Sprintf("w%d-b", w)))
				}()
			}
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
			all, err := st.ConversationItems(ctx, "o", "conv_c")
			require.NoError(t, err)
			require.Len(t, all, 16)
			for i := 0; i < len(all); i += 2 {
				require.Equal(t, int64(i+1), all[i].Seq)
				require.Equal(t, all[i].ID[:len(all[i].ID)-1]+"b", all[i+1].ID, "a batch stays together")
			}
		})
	}
}
