package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

// responsesTestPostgres is the PostgreSQL the store suite runs against when it is reachable.
const responsesTestPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// responsesTestStores opens the store on SQLite in a temp dir and, when reachable, on
// PostgreSQL in a schema of its own (via search_path), so parallel runs do not collide.
func responsesTestStores(t testing.TB) map[string]*store.Store {
	t.Helper()
	ctx := context.Background()
	out := map[string]*store.Store{}

	lite, err := store.Open(ctx, config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "strata.db")})
	require.NoError(t, err)
	t.Cleanup(func() { lite.Close() })
	out["sqlite"] = lite

	admin, err := sql.Open("pgx", responsesTestPostgres)
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close() })
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := admin.PingContext(pctx); err != nil {
		t.Logf("PostgreSQL at %s unreachable, running on SQLite only: %v", responsesTestPostgres, err)
		return out
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "strata_responses_test_" + hex.EncodeToString(b)
	_, err = admin.ExecContext(ctx, "CREATE SCHEMA "+schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	pg, err := store.Open(ctx, config.Store{Driver: "postgres", DSN: responsesTestPostgres + "&search_path=" + schema})
	require.NoError(t, err)
	t.Cleanup(func() { pg.Close() })
	out["postgres"] = pg
	return out
}

func TestResponses(t *testing.T) {
	for name, st := range responsesTestStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			created := time.Date(2026, 3, 1, 12, 0, 0, 123_000_000, time.UTC)
			first := &store.ResponseRecord{
				ID: "resp_1", Owner: "alice", SessionID: "resp_1", Model: "m", CreatedAt: created,
				Response:   json.RawMessage(`{"id":"resp_1","object":"response"}`),
				InputItems: json.RawMessage(`[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}]`),
				Messages:   json.RawMessage(`[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]`),
			}
			second := &store.ResponseRecord{
				ID: "resp_2", Owner: "alice", PreviousResponseID: "resp_1", SessionID: "resp_1", Model: "m2",
				CreatedAt: created.Add(time.Second), Response: json.RawMessage(`{}`), InputItems: json.RawMessage(`[]`),
				Messages: json.RawMessage(`[]`),
			}
			require.NoError(t, st.PutResponse(ctx, first))
			require.NoError(t, st.PutResponse(ctx, second))
			require.ErrorIs(t, st.PutResponse(ctx, first), store.ErrExists)

			for _, tc := range []struct {
				name, owner, id string
				want            *store.ResponseRecord
			}{
				{"own first", "alice", "resp_1", first},
				{"own continuation", "alice", "resp_2", second},
				{"another owner's", "bob", "resp_1", nil},
				{"absent", "alice", "resp_9", nil},
				{"empty owner", "", "resp_1", nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					got, err := st.GetResponse(ctx, tc.owner, tc.id)
					if tc.want == nil {
						require.ErrorIs(t, err, store.ErrNotFound)
						return
					}
					require.NoError(t, err)
					require.Equal(t, tc.want.ID, got.ID)
					require.Equal(t, tc.want.Owner, got.Owner)
					require.Equal(t, tc.want.PreviousResponseID, got.PreviousResponseID)
					require.Equal(t, tc.want.SessionID, got.SessionID)
					require.Equal(t, tc.want.Model, got.Model)
					require.True(t, tc.want.CreatedAt.Equal(got.CreatedAt), "%s != %s", tc.want.CreatedAt, got.CreatedAt)
					require.JSONEq(t, string(tc.want.Response), string(got.Response))
					require.JSONEq(t, string(tc.want.InputItems), string(got.InputItems))
					require.JSONEq(t, string(tc.want.Messages), string(got.Messages))
				})
			}

			upd := *second
			upd.Response, upd.InputItems, upd.Messages = json.RawMessage(`{"status":"completed"}`), json.RawMessage(`[{"id":"x"}]`), json.RawMessage(`[{"role":"user"}]`)
			require.NoError(t, st.UpdateResponse(ctx, &upd))
			got2, err := st.GetResponse(ctx, "alice", "resp_2")
			require.NoError(t, err)
			require.JSONEq(t, `{"status":"completed"}`, string(got2.Response))
			require.JSONEq(t, `[{"id":"x"}]`, string(got2.InputItems))
			require.JSONEq(t, `[{"role":"user"}]`, string(got2.Messages))
			upd.Owner = "bob"
			require.ErrorIs(t, st.UpdateResponse(ctx, &upd), store.ErrNotFound, "another owner cannot update")

			require.ErrorIs(t, st.DeleteResponse(ctx, "bob", "resp_1"), store.ErrNotFound, "another owner cannot delete")
			require.NoError(t, st.DeleteResponse(ctx, "alice", "resp_1"))
			require.ErrorIs(t, st.DeleteResponse(ctx, "alice", "resp_1"), store.ErrNotFound)
			_, err = st.GetResponse(ctx, "alice", "resp_1")
			require.ErrorIs(t, err, store.ErrNotFound)
			got, err := st.GetResponse(ctx, "alice", "resp_2")
			require.NoError(t, err, "a continuation outlives the response it continues")
			require.Equal(t, "resp_1", got.PreviousResponseID)
		})
	}
}

// TestPutResponsesAndAdoptOwner: a group of responses commits together (or not at all), and
// AdoptOwner moves every platform object of one owner to another (contract C5: objects stored
// by API key before the platform knew tenants).
func TestPutResponsesAndAdoptOwner(t *testing.T) {
	for name, st := range responsesTestStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			rec := func(id, owner string) *store.ResponseRecord {
				return &store.ResponseRecord{ID: id, Owner: owner, SessionID: id, Model: "m", CreatedAt: now,
					Response: json.RawMessage(`{}`), InputItems: json.RawMessage(`[]`), Messages: json.RawMessage(`[]`)}
			}
			require.NoError(t, st.PutResponses(ctx, []*store.ResponseRecord{rec("resp_a", "keyhash"), rec("resp_b", "keyhash")}))
			err := st.PutResponses(ctx, []*store.ResponseRecord{rec("resp_c", "keyhash"), rec("resp_a", "keyhash")})
			require.ErrorIs(t, err, store.ErrExists)
			_, err = st.GetResponse(ctx, "keyhash", "resp_c")
			require.ErrorIs(t, err, store.ErrNotFound, "a failed group inserts nothing")

			require.NoError(t, st.CreateConversation(ctx, &store.Conversation{ID: "conv_a", Owner: "keyhash", CreatedAt: now, Metadata: json.RawMessage(`{}`)}, nil))
			require.NoError(t, st.PutFile(ctx, &store.File{ID: "file-a", Owner: "keyhash", Filename: "a.md", Purpose: "assistants", Bytes: 1, CreatedAt: now}, []byte("a")))
			require.NoError(t, st.CreateVectorStore(ctx, &store.VectorStore{ID: "vs_a", Owner: "keyhash", CreatedAt: now, Metadata: json.RawMessage(`{}`)}))
			require.NoError(t, st.PutResponse(ctx, rec("resp_other", "otherhash")))

			n, err := st.AdoptOwner(ctx, "keyhash", "ten_1")
			require.NoError(t, err)
			require.Equal(t, int64(5), n, "2 responses, a conversation, a file, a vector store")
			n, err = st.AdoptOwner(ctx, "keyhash", "ten_1")
			require.NoError(t, err)
			require.Zero(t, n, "idempotent")

			for _, id := range []string{"resp_a", "resp_b"} {
				_, err := st.GetResponse(ctx, "ten_1", id)
				require.NoError(t, err)
				_, err = st.GetResponse(ctx, "keyhash", id)
				require.ErrorIs(t, err, store.ErrNotFound)
			}
			_, err = st.GetConversation(ctx, "ten_1", "conv_a")
			require.NoError(t, err)
			_, err = st.GetFile(ctx, "ten_1", "file-a")
			require.NoError(t, err)
			_, err = st.GetVectorStore(ctx, "ten_1", "vs_a")
			require.NoError(t, err)
			_, err = st.GetResponse(ctx, "otherhash", "resp_other")
			require.NoError(t, err, "other owners are untouched")
		})
	}
}
