package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// gatewayMigrations are the versioned migrations of the tenant plane's tables, after version 1
// (the CREATE TABLE statements of schema_gateway.go). Version N is gatewayMigrations[N-2]. A
// migration is applied once per database, in one transaction with its schema_migrations row;
// never edit one that has shipped, append a new version instead.
var gatewayMigrations = [][]string{
	// 2: tiers and policy overrides, billed_reason, the price book.
	{
		`ALTER TABLE tenants ADD COLUMN tier TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE tenants ADD COLUMN policy TEXT NOT NULL DEFAULT '{}'`,
		`ALTER TABLE api_keys ADD COLUMN policy TEXT NOT NULL DEFAULT '{}'`,
		`ALTER TABLE usage ADD COLUMN billed_reason TEXT NOT NULL DEFAULT ''`,
		// prices is the price book: per model, prices in integer micro-USD per million tokens,
		// each row effective from effective_at (Unix ms) until the next row of the model.
		`CREATE TABLE prices (
			model          TEXT NOT NULL,
			effective_at   BIGINT NOT NULL,
			input_micros   BIGINT NOT NULL,
			cached_micros  BIGINT NOT NULL,
			output_micros  BIGINT NOT NULL,
			created_at     BIGINT NOT NULL,
			PRIMARY KEY (model, effective_at)
		)`,
	},
	// 3: the hash-chained audit log (audit.go).
	{
		`CREATE TABLE audit_log (
			seq       BIGINT PRIMARY KEY,
			at        BIGINT NOT NULL,
			actor     TEXT NOT NULL,
			action    TEXT NOT NULL,
			target    TEXT NOT NULL,
			detail    TEXT NOT NULL,
			prev_hash BLOB NOT NULL,
			hash      BLOB NOT NULL
		)`,
	},
	// 4: admin tokens (admin_tokens.go), separate from tenant keys so a tenant key can never
	// authenticate to the admin API.
	{
		`CREATE TABLE admin_tokens (
			id          TEXT PRIMARY KEY,
			name        TEXT NOT NULL,
			prefix      TEXT NOT NULL,
			hash        BLOB NOT NULL UNIQUE,
			scopes      TEXT NOT NULL,
			created_at  BIGINT NOT NULL,
			revoked_at  BIGINT
		)`,
	},
	// 5: identity and the admin surface of the tenant plane: key expiry and rotation, unique
	// external ids, the opt-in I/O log flag, per-tier prices, the GPU cost table, stored bills
	// (re-rating keeps every version) and the I/O log itself (iolog.go).
	{
		// expires_at: NULL never expires. replaced_by: the id of the key a rotation created.
		`ALTER TABLE api_keys ADD COLUMN expires_at BIGINT`,
		`ALTER TABLE api_keys ADD COLUMN replaced_by TEXT NOT NULL DEFAULT ''`,
		// external_id is unique when set ('' = unset, any number of tenants).
		`CREATE UNIQUE INDEX tenants_external_id ON tenants (external_id) WHERE external_id <> ''`,
		`ALTER TABLE tenants ADD COLUMN iolog BIGINT NOT NULL DEFAULT 0`,
		// tier_prices overrides the price book for the tenants of one tier, same units as prices.
		`CREATE TABLE tier_prices (
			tier           TEXT NOT NULL,
			model          TEXT NOT NULL,
			effective_at   BIGINT NOT NULL,
			input_micros   BIGINT NOT NULL,
			cached_micros  BIGINT NOT NULL,
			output_micros  BIGINT NOT NULL,
			created_at     BIGINT NOT NULL,
			PRIMARY KEY (tier, model, effective_at)
		)`,
		// gpu_costs: integer micro-USD per GPU-hour of a GPU type, from effective_at on.
		`CREATE TABLE gpu_costs (
			gpu             TEXT NOT NULL,
			effective_at    BIGINT NOT NULL,
			micros_per_hour BIGINT NOT NULL,
			created_at      BIGINT NOT NULL,
			PRIMARY KEY (gpu, effective_at)
		)`,
		// bills: one row per rating of a tenant's period ("YYYY-MM"); re-rating adds a version.
		`CREATE TABLE bills (
			tenant_id       TEXT NOT NULL,
			period          TEXT NOT NULL,
			version         BIGINT NOT NULL,
			rated_at        BIGINT NOT NULL,
			actor           TEXT NOT NULL,
			cost_micros     BIGINT NOT NULL,
			gpu_cost_micros BIGINT NOT NULL,
			lines           TEXT NOT NULL,
			PRIMARY KEY (tenant_id, period, version)
		)`,
		// io_log: request and response bodies of opted-in tenants, redacted before writing,
		// purged after their retention.
		`CREATE TABLE io_log (
			id         TEXT PRIMARY KEY,
			tenant_id  TEXT NOT NULL,
			key_id     TEXT NOT NULL,
			request_id TEXT NOT NULL,
			model      TEXT NOT NULL,
			request    BLOB NOT NULL,
			response   BLOB NOT NULL,
			created_at BIGINT NOT NULL
		)`,
		`CREATE INDEX io_log_time ON io_log (created_at)`,
		`CREATE INDEX io_log_tenant_time ON io_log (tenant_id, created_at)`,
	},
	// 6: the LoRA adapter a usage record was served with ('' = the base model), from the
	// router's x-gateway-destination-endpoint-served "adapter" parameter.
	{
		`ALTER TABLE usage ADD COLUMN adapter TEXT NOT NULL DEFAULT ''`,
	},
}

// GatewaySchemaVersion is the version of the tenant plane's tables this code expects.
var GatewaySchemaVersion = 1 + len(gatewayMigrations)

var _ = addMigrator((*Store).MigrateGateway)

// MigrateGateway brings the tenant plane's tables to GatewaySchemaVersion, applying each missing
// version in its own transaction together with its schema_migrations row. Concurrent callers
// (other processes included) are serialized: SQLite by its write lock (transactions begin
// IMMEDIATE), PostgreSQL by a transaction-scoped advisory lock. A database at a newer version than
// this code knows is an error, so an old binary never writes to tables it does not understand.
// Open runs it; calling it again is cheap.
func (s *Store) MigrateGateway(ctx context.Context) error {
	for i, stmts := range gatewayMigrations {
		version := i + 2
		if err := s.applyGatewayMigration(ctx, version, stmts); err != nil {
			return fmt.Errorf("store: gateway migration %d: %w", version, err)
		}
	}
	var newest int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 1) FROM schema_migrations WHERE component = 'gateway'`).Scan(&newest); err != nil {
		return fmt.Errorf("store: gateway schema version: %w", err)
	}
	if newest > int64(len(gatewayMigrations)+1) {
		return fmt.Errorf("store: gateway schema version %d is newer than this binary's %d", newest, len(gatewayMigrations)+1)
	}
	return nil
}

func (s *Store) applyGatewayMigration(ctx context.Context, version int, stmts []string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if s.dialect == Postgres {
		// Any constant shared by every Strata process: the lock only serializes migrations.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(5357524154410001)`); err != nil {
			return err
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM schema_migrations WHERE component = 'gateway' AND version = ?`), version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	for _, stmt := range stmts {
		if s.dialect == Postgres {
			stmt = strings.ReplaceAll(stmt, " BLOB", " BYTEA")
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (component, version, applied_at) VALUES ('gateway', ?, ?)`),
		version, time.Now().UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}

// GatewayMigrations returns the gateway versions recorded in schema_migrations, ascending
// (version 1, the base tables, is not recorded).
func (s *Store) GatewayMigrations(ctx context.Context) ([]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT version FROM schema_migrations WHERE component = 'gateway' ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("store: gateway migrations: %w", err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("store: gateway migrations: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
