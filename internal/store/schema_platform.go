package store

// Schema of the workflow layer (internal/platform): stored Responses API objects.
//
// One row per stored response. Besides the Response object as the client saw it, a row carries
// the whole conversation up to and including this response's output, twice over: as Responses
// API input items (for GET /v1/responses/{id}/input_items) and as chat messages (what the next
// turn sends to /v1/chat/completions). Storing the conversation with every turn makes a
// continuation with previous_response_id one read by primary key, at the cost of space that
// grows with the square of the chain length; issue 6's conversations may replace it with
// an item table. Times are BIGINT Unix milliseconds (UTC), as in schema_gateway.go.
var _ = addSchema(
	`CREATE TABLE IF NOT EXISTS responses (
		id                   TEXT PRIMARY KEY,
		owner                TEXT NOT NULL,
		previous_response_id TEXT NOT NULL DEFAULT '',
		session_id           TEXT NOT NULL,
		model                TEXT NOT NULL,
		created_at           BIGINT NOT NULL,
		response             TEXT NOT NULL,
		input_items          TEXT NOT NULL,
		messages             TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS responses_owner_time ON responses (owner, created_at)`,
)

// Conversations (OpenAI Conversations API): a conversation row, and its items in order. An
// item is stored as the JSON the API lists (opaque to the store), with its id for lookups and
// seq for order; next_seq hands out seq under the conversation row's lock, so concurrent
// appends (two responses of one conversation) neither collide nor interleave within a batch.
var _ = addSchema(
	`CREATE TABLE IF NOT EXISTS conversations (
		id         TEXT PRIMARY KEY,
		owner      TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		metadata   TEXT NOT NULL,
		next_seq   BIGINT NOT NULL DEFAULT 0
	)`,
	`CREATE INDEX IF NOT EXISTS conversations_owner ON conversations (owner, created_at)`,
	`CREATE TABLE IF NOT EXISTS conversation_items (
		conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
		seq             BIGINT NOT NULL,
		id              TEXT NOT NULL,
		created_at      BIGINT NOT NULL,
		item            TEXT NOT NULL,
		PRIMARY KEY (conversation_id, seq)
	)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS conversation_items_id ON conversation_items (conversation_id, id)`,
)

// Files (OpenAI Files API): metadata and content in one row, content as a BLOB (BYTEA on
// PostgreSQL). Listing reads metadata only; the content is read by id. expires_at is 0 when
// the file does not expire.
var _ = addSchema(
	`CREATE TABLE IF NOT EXISTS files (
		id         TEXT PRIMARY KEY,
		owner      TEXT NOT NULL,
		filename   TEXT NOT NULL,
		purpose    TEXT NOT NULL,
		bytes      BIGINT NOT NULL,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL DEFAULT 0,
		content    BLOB NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS files_owner_time ON files (owner, created_at)`,
)

// Vector stores: a store row, its files (status of ingestion, attributes), and their chunks.
// Keyword search runs on an FTS5 table in SQLite and on to_tsvector('simple', text) in
// PostgreSQL; both are created by vectorSearchSchema (vectorstores.go), since their DDL
// differs by dialect.
var _ = addSchema(
	`CREATE TABLE IF NOT EXISTS vector_stores (
		id         TEXT PRIMARY KEY,
		owner      TEXT NOT NULL,
		name       TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		metadata   TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS vector_stores_owner ON vector_stores (owner, created_at)`,
	`CREATE TABLE IF NOT EXISTS vector_store_files (
		vector_store_id TEXT NOT NULL,
		file_id         TEXT NOT NULL,
		filename        TEXT NOT NULL,
		created_at      BIGINT NOT NULL,
		status          TEXT NOT NULL,
		error_code      TEXT NOT NULL DEFAULT '',
		error_message   TEXT NOT NULL DEFAULT '',
		usage_bytes     BIGINT NOT NULL DEFAULT 0,
		attributes      TEXT NOT NULL DEFAULT '{}',
		PRIMARY KEY (vector_store_id, file_id)
	)`,
	`CREATE TABLE IF NOT EXISTS vector_store_chunks (
		vector_store_id TEXT NOT NULL,
		file_id         TEXT NOT NULL,
		seq             BIGINT NOT NULL,
		text            TEXT NOT NULL,
		PRIMARY KEY (vector_store_id, file_id, seq)
	)`,
)
