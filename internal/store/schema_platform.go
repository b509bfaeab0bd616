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
