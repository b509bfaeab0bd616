package store

// Schema of the tenant plane (internal/gateway): tenants, their API keys and the usage ledger.
//
// Times are BIGINT Unix milliseconds (UTC), NULL where a time may be absent. Token counts and
// limits are BIGINT; money is not stored here yet (rating is issue 5, and will be integer
// micro-USD). Booleans are BIGINT 0/1, the one spelling both dialects read the same way.
var _ = addSchema(
	`CREATE TABLE IF NOT EXISTS tenants (
		id          TEXT PRIMARY KEY,
		name        TEXT NOT NULL UNIQUE,
		external_id TEXT NOT NULL DEFAULT '',
		rpm         BIGINT NOT NULL DEFAULT 0,
		tpm         BIGINT NOT NULL DEFAULT 0,
		models      TEXT NOT NULL DEFAULT '[]',
		created_at  BIGINT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS api_keys (
		id           TEXT PRIMARY KEY,
		tenant_id    TEXT NOT NULL REFERENCES tenants(id),
		prefix       TEXT NOT NULL,
		hash         BLOB NOT NULL UNIQUE,
		created_at   BIGINT NOT NULL,
		revoked_at   BIGINT,
		last_used_at BIGINT
	)`,
	`CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id, created_at)`,
	// usage is the metering ledger: one immutable row per request id. No foreign keys, so a
	// ledger row outlives anything it names.
	`CREATE TABLE IF NOT EXISTS usage (
		request_id        TEXT PRIMARY KEY,
		tenant_id         TEXT NOT NULL,
		key_id            TEXT NOT NULL,
		model             TEXT NOT NULL,
		endpoint          TEXT NOT NULL,
		gpu               TEXT NOT NULL,
		prompt_tokens     BIGINT NOT NULL,
		cached_tokens     BIGINT NOT NULL,
		completion_tokens BIGINT NOT NULL,
		ttft_ms           BIGINT NOT NULL,
		duration_ms       BIGINT NOT NULL,
		status            BIGINT NOT NULL,
		stream            BIGINT NOT NULL,
		usage_source      TEXT NOT NULL,
		created_at        BIGINT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS usage_tenant_time ON usage (tenant_id, created_at)`,
	`CREATE INDEX IF NOT EXISTS usage_time ON usage (created_at)`,
)

// schema_migrations records the versioned migrations applied per component (migrate_gateway.go):
// the tables above are version 1 of component "gateway"; later versions change them in place.
var _ = addSchema(
	`CREATE TABLE IF NOT EXISTS schema_migrations (
		component  TEXT NOT NULL,
		version    BIGINT NOT NULL,
		applied_at BIGINT NOT NULL,
		PRIMARY KEY (component, version)
	)`,
)
