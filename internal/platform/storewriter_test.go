package platform

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/store"
)

// TestResponseWriterGroupCommit: concurrent saves all land, each returns only once its row is
// readable, and a duplicate id fails its own save and no other of its group.
func TestResponseWriterGroupCommit(t *testing.T) {
	st, err := store.Open(t.Context(), config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "strata.db")})
	require.NoError(t, err)
	defer st.Close()
	w := &responseWriter{st: st}
	rec := func(id string) *store.ResponseRecord {
		return &store.ResponseRecord{ID: id, Owner: "o", SessionID: id, Model: "m", CreatedAt: testNow,
			Response: []byte(`{}`), InputItems: []byte(`[]`), Messages: []byte(`[]`)}
	}
	require.NoError(t, w.put(t.Context(), rec("resp_dup")))

	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("resp_%d", i)
			if i == n/2 {
				id = "resp_dup"
			}
			errs[i] = w.put(t.Context(), rec(id))
			if errs[i] == nil {
				_, err := st.GetResponse(t.Context(), "o", id)
				errs[i] = err // committed before put returned
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i == n/2 {
			require.ErrorIs(t, err, store.ErrExists)
			continue
		}
		require.NoError(t, err, "save %d", i)
	}
	require.False(t, w.busy)
	require.Empty(t, w.queue)
}
