package store

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/strata-inference/strata/internal/config"
)

// TestAuditTamper: every kind of tampering with a stored entry is detected, at that entry.
func TestAuditTamper(t *testing.T) {
	for _, tc := range []struct {
		name, sql, want string
	}{
		{"altered detail", `UPDATE audit_log SET detail = '{"rpm":1}' WHERE seq = 2`, "entry 2 was altered"},
		{"altered time", `UPDATE audit_log SET at = at + 1 WHERE seq = 3`, "entry 3 was altered"},
		{"removed entry", `DELETE FROM audit_log WHERE seq = 2`, "entry 2 has sequence number 3"},
		{"rehashed entry", `UPDATE audit_log SET hash = prev_hash WHERE seq = 2`, "entry 2 was altered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st, err := Open(ctx, config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "strata.db")})
			require.NoError(t, err)
			defer st.Close()
			for i, a := range []string{"tenant.create", "tenant.policy", "key.revoke", "price.set"} {
				require.NoError(t, st.AppendAudit(ctx, &AuditEntry{At: time.Unix(int64(i), 0), Actor: "cli", Action: a, Target: "acme", Detail: "{}"}))
			}
			n, err := st.VerifyAudit(ctx)
			require.NoError(t, err)
			require.Equal(t, 4, n)
			_, err = st.db.ExecContext(ctx, tc.sql)
			require.NoError(t, err)
			_, err = st.VerifyAudit(ctx)
			require.ErrorIs(t, err, ErrAuditBroken)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestGatewaySchemaNewerThanBinary: a database migrated by a newer binary is refused rather than
// written with a schema this code does not know.
func TestGatewaySchemaNewerThanBinary(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, config.Store{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "strata.db")})
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.MigrateGateway(ctx))
	_, err = st.db.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES ('gateway', 99, 0)`)
	require.NoError(t, err)
	require.ErrorContains(t, st.MigrateGateway(ctx), "gateway schema version 99 is newer than this binary's "+strconv.Itoa(GatewaySchemaVersion))
}
